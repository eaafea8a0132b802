import random

import numpy as np
import torch

from utils.seeding import capture_rng_state, epoch_seed, reseed_data, restore_rng_state


class FakeAugmentingDataset:
    """Quacks like BaseDataset for the RNG helpers: ``reseed`` + ``rng``."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)


class Wrapper:  # e.g. a ConcatDataset / Subset around the augmenting dataset
    def __init__(self, *datasets):
        self.datasets = list(datasets)


def test_epoch_seed_depends_on_seed_rank_and_epoch():
    seeds = {epoch_seed(s, r, e) for s in (0, 304) for r in (0, 1) for e in (0, 1, 2)}
    assert len(seeds) == 12
    assert epoch_seed(304, 0, 1) == epoch_seed(304, 0, 1)
    assert all(0 <= s < 2 ** 63 for s in seeds)


def test_restore_rng_state_replays_every_stream_including_wrapped_datasets():
    data = Wrapper(FakeAugmentingDataset(1), FakeAugmentingDataset(2))
    state = capture_rng_state(data)
    assert len(state["data"]) == 2
    first = (random.random(), np.random.rand(), torch.rand(2), [d.rng.random() for d in data.datasets])
    other = Wrapper(FakeAugmentingDataset(8), FakeAugmentingDataset(9))
    restore_rng_state(state, other)
    again = (random.random(), np.random.rand(), torch.rand(2), [d.rng.random() for d in other.datasets])
    assert first[:2] == again[:2] and torch.equal(first[2], again[2]) and first[3] == again[3]


def test_reseed_data_resets_the_loader_generator():
    generator = torch.Generator()
    reseed_data([], generator, 7)
    drawn = torch.randint(0, 2 ** 30, (4,), generator=generator)
    reseed_data([], generator, 7)
    assert torch.equal(torch.randint(0, 2 ** 30, (4,), generator=generator), drawn)
    reseed_data([], None, 7)  # no generator (the default DataLoader): nothing to reset
