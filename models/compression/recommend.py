"""How many channels each group loses: SLAMP recommendation, manual ratios, explicit indices.

The overall ratio counts filters: every output channel of every prunable convolution is one
unit, so a group of three coupled convolutions weighs three per channel. The achieved ratio
in the report is computed the same way, from the per-layer channel counts.
"""
import json
import logging
import math
import os

import torch

from models.compression.importance import lamp_scores
from utils.errors import CompressionError

logger = logging.getLogger(__name__)


def check_ratio(ratio, what="--ratio"):
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise CompressionError(f"{what} must be a number in (0, 1), got {ratio!r}") from None
    if not 0.0 < value < 1.0 or math.isnan(value):
        raise CompressionError(f"{what} must be in (0, 1) (the fraction of channels to remove), got {ratio}")
    return value


def rounded_keep(channels, keep, round_to):
    """Channels kept after snapping to a multiple of ``round_to`` (at least one step, at most all)."""
    if round_to <= 1:
        return max(1, min(channels, int(keep)))
    if channels <= round_to:
        return channels
    snapped = int(round(keep / round_to)) * round_to
    return max(round_to, min(channels, snapped))


def slamp_counts(groups, squared_norms, ratio, round_to=1):
    """Per-group number of channels to remove so that ``ratio`` of all prunable filters goes.

    Channels of every group are scored with :func:`lamp_scores` (within their group) and
    ranked globally; the lowest are removed first until the target is met, never the last
    channel of a group. Rounding to ``round_to`` happens afterwards, per group.
    """
    ratio = check_ratio(ratio)
    total = sum(g.filters for g in groups)
    if total == 0:
        raise CompressionError("the model has no prunable channels (all feed its outputs)")
    ranked = []
    for gi, group in enumerate(groups):
        for score in lamp_scores(squared_norms[gi]).tolist():
            ranked.append((score, gi))
    ranked.sort(key=lambda item: item[0])
    removed = [0] * len(groups)
    target, done = ratio * total, 0
    for _, gi in ranked:
        if done >= target:
            break
        if removed[gi] + 1 >= groups[gi].channels:
            continue
        removed[gi] += 1
        done += len(groups[gi].layers)
    return [g.channels - rounded_keep(g.channels, g.channels - r, round_to) for g, r in zip(groups, removed)]


def _read_json(path, what):
    if not path or not os.path.isfile(path):
        raise CompressionError(f"{what} file not found: {path}. Pass an existing JSON file")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompressionError(f"{what} file {path} is not valid JSON ({exc}): fix its syntax") from None
    if not isinstance(data, dict) or not data:
        raise CompressionError(f"{what} file {path} must hold a non-empty object {{\"layer name\": value}}")
    return data


def load_layer_ratios(path):
    """``{"layer.name": ratio}`` for manual compression (as NetsPresso's manual mode)."""
    data = _read_json(path, "layer ratio")
    return {str(k): check_ratio(v, f"ratio of layer '{k}' in {path}") for k, v in data.items()}


def load_layer_indices(path):
    """``{"layer.name": [channel indices to remove]}`` for ``PR_ID``."""
    data = _read_json(path, "channel index")
    out = {}
    for key, value in data.items():
        if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            raise CompressionError(f"channel indices of layer '{key}' in {path} must be a list of integers")
        out[str(key)] = value
    return out


def load_layer_ranks(path):
    """``{"layer.name": [r_in, r_out] | r}`` for manual decomposition (checked against the model later)."""
    return {str(k): v for k, v in _read_json(path, "layer rank").items()}


def _resolve(groups, all_groups, name, what):
    """The prunable group that removes output channels of layer ``name``."""
    for index, group in enumerate(groups):
        if name in group.layers:
            return index
    for group in all_groups:
        if name in group.layers:
            raise CompressionError(f"{what}: layer '{name}' cannot be pruned ({group.reason}); "
                                   "choose another layer (see the report's prunable groups)")
    valid = ", ".join(g.name for g in groups[:8])
    raise CompressionError(f"{what}: no convolution named '{name}' in the model; prunable layers include "
                           f"{valid}{' ...' if len(groups) > 8 else ''}")


def manual_counts(groups, all_groups, layer_ratios, round_to=1):
    """Per-group removal counts from per-layer ratios; coupled layers must agree."""
    chosen = {}
    for name, ratio in layer_ratios.items():
        ratio = check_ratio(ratio, f"ratio of layer '{name}'")
        gi = _resolve(groups, all_groups, name, "layer ratios")
        if gi in chosen and not math.isclose(chosen[gi][1], ratio):
            raise CompressionError(f"layer ratios: '{name}' ({ratio}) and '{chosen[gi][0]}' ({chosen[gi][1]}) "
                                   f"share channels (group {groups[gi].name}); give them the same ratio")
        chosen[gi] = (name, ratio)
    counts = [0] * len(groups)
    for gi, (_, ratio) in chosen.items():
        channels = groups[gi].channels
        counts[gi] = channels - rounded_keep(channels, round(channels * (1.0 - ratio)), round_to)
    return counts


def indices_per_group(groups, all_groups, layer_indices):
    """Per-group channel indices from ``{"layer": [indices]}`` (``PR_ID``), validated."""
    chosen = {}
    for name, idxs in layer_indices.items():
        gi = _resolve(groups, all_groups, name, "channel indices")
        channels = groups[gi].channels
        bad = [i for i in idxs if not 0 <= i < channels]
        if bad:
            raise CompressionError(f"channel indices of layer '{name}' out of range [0, {channels}): {bad[:5]}")
        if len(set(idxs)) != len(idxs):
            raise CompressionError(f"channel indices of layer '{name}' contain duplicates")
        if gi in chosen and sorted(chosen[gi][1]) != sorted(idxs):
            raise CompressionError(f"channel indices: '{name}' and '{chosen[gi][0]}' share channels "
                                   f"(group {groups[gi].name}); give them the same indices")
        if len(idxs) >= channels:
            raise CompressionError(f"channel indices of layer '{name}' would remove all {channels} channels; "
                                   "keep at least one")
        chosen[gi] = (name, list(idxs))
    return {gi: sorted(idxs) for gi, (_, idxs) in chosen.items()}


def lowest(values, count):
    """Indices of the ``count`` smallest values (stable for ties)."""
    if count <= 0:
        return []
    order = torch.argsort(torch.as_tensor(values), stable=True)
    return sorted(order[:count].tolist())
