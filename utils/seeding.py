"""Seeds and RNG state: what makes a run, and a resumed run, draw the same random numbers.

Randomness of the data pipeline is a function of ``(seed, rank, epoch)`` (:func:`epoch_seed`):
the shuffling order comes from :class:`utils.sampler.TrainSampler` (``DistributedSampler``
semantics for any world size, including 1) and the augmentation / worker seeds are reset at every
epoch start (:func:`reseed_data`). Resuming at an epoch boundary is therefore exact with any
``WORKERS``; a mid-epoch resume (after SIGINT/SIGTERM) skips the batches already trained on and is
exact with ``WORKERS 0`` (the dataset's augmentation RNG state is saved too, see
:func:`capture_rng_state`), otherwise the remaining batches get different random augmentations.

RNG states are stored as tensors, lists and ints, so the checkpoint holding them stays loadable
with ``torch.load(weights_only=True)``.
"""
import random

import numpy as np
import torch


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and torch (all devices); optionally ask torch for deterministic kernels.

    ``deterministic`` (``CUDNN.DETERMINISTIC``) also calls ``torch.use_deterministic_algorithms``
    (warn-only: ops without a deterministic kernel warn instead of failing).
    """
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def epoch_seed(seed, rank, epoch):
    """A well-mixed 63-bit seed for the data pipeline of ``rank`` in ``epoch``."""
    return int(np.random.SeedSequence([int(seed) % 2 ** 63, int(rank), int(epoch)]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def data_rng_states(dataset):
    """The augmentation RNG states of ``dataset`` (a :class:`datasets.base_dataset.BaseDataset` or
    wrapper) in this process: what the next sample drawn with ``WORKERS 0`` will use."""
    return [dict(rng.bit_generator.state) for rng in _dataset_rngs(dataset)]


def capture_rng_state(dataset=None):
    """Python, NumPy, torch (CPU and CUDA) RNG states, plus the augmentation RNG of ``dataset``
    (see :func:`data_rng_states`), as weights-only-loadable values."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    data = data_rng_states(dataset)
    if data:
        state["data"] = list(data)
    return state


def restore_rng_state(state, dataset=None):
    """Inverse of :func:`capture_rng_state` (CUDA states only when the device count matches)."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    rngs = _dataset_rngs(dataset)
    saved = state.get("data") or []
    if rngs and len(saved) == len(rngs):
        for rng, rng_state in zip(rngs, saved):
            rng.bit_generator.state = rng_state


def _dataset_rngs(dataset, found=None):
    """The ``numpy.random.Generator`` of every augmenting dataset inside ``dataset``."""
    found = [] if found is None else found
    if dataset is None:
        return found
    if hasattr(dataset, "reseed") and hasattr(dataset, "rng"):
        found.append(dataset.rng)
    for child in getattr(dataset, "datasets", ()):
        _dataset_rngs(child, found)
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        _dataset_rngs(inner, found)
    return found


def reseed_data(dataset, generator, seed):
    """Reset the data randomness of one epoch: the augmentation RNG used with ``WORKERS 0`` and the
    loader ``generator`` that draws the worker seeds (``seed_worker`` derives worker RNGs from it)."""
    from datasets.base_dataset import reseed_dataset

    reseed_dataset(dataset, seed)
    if generator is not None:
        generator.manual_seed(seed)
