from utils.sampler import TrainSampler


def test_train_sampler_skip_continues_the_same_permutation():
    data = list(range(23))
    sampler = TrainSampler(data, num_replicas=1, rank=0, shuffle=True, seed=5)
    sampler.set_epoch(4)
    full = list(sampler)
    assert sorted(full) == data and full != data
    sampler.set_epoch(4, skip=6)
    assert list(sampler) == full[6:] and len(sampler) == 17 and sampler.full_length() == 23
    sampler.set_epoch(5)
    assert list(sampler) != full  # a new order every epoch


def test_train_sampler_ranks_partition_the_data():
    data = list(range(20))
    shards = []
    for rank in range(2):
        sampler = TrainSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=1)
        sampler.set_epoch(3)
        shards.append(list(sampler))
    assert sorted(shards[0] + shards[1]) == data
