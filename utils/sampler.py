"""The training sampler: ``DistributedSampler`` order for any world size, resumable mid-epoch."""
from torch.utils.data import DistributedSampler


class TrainSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled with ``seed + epoch``, rank-sharded) for any world size,
    which can start part-way through an epoch: :meth:`set_epoch` with ``skip`` drops the first
    ``skip`` indices of this rank's share (the batches already trained on before an interruption)."""

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch, skip=0):
        super().set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self):
        return max(0, super().__len__() - self.skip)

    def full_length(self):
        """Indices per rank and epoch, ignoring ``skip``."""
        return super().__len__()
