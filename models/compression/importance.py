"""Channel importance: filter L2 norm, geometric median (FPGM) and the LAMP score.

All functions work on a torch-pruning group holding every channel of a
:class:`models.compression.graph.ChannelGroup`; a channel's filter is the concatenation of
its filters in every output-pruned convolution of the group.
"""
import torch

from models.compression.graph import _CONV


def _group_filters(graph, tp_group, channels):
    """``[channels, K]`` matrix: each row one channel's filters across the coupled convs."""
    parts = []
    for item in tp_group:
        dep, idxs = item.dep, item.idxs
        module = dep.target.module
        if not isinstance(module, _CONV) or not graph.is_out_channel_pruning_fn(dep.handler):
            continue
        weight = module.weight.detach().float().flatten(1)[idxs]
        rows = torch.zeros(channels, weight.shape[1])
        rows[torch.as_tensor(item.root_idxs)] = weight.cpu()
        parts.append(rows)
    return torch.cat(parts, dim=1)


def squared_norms(graph, tp_group, channels):
    """Sum of squared filter weights per channel (the ``PR_L2`` criterion, squared)."""
    return _group_filters(graph, tp_group, channels).pow(2).sum(dim=1)


def geometric_median_distances(graph, tp_group, channels):
    """FPGM: summed L2 distance of each filter to all others; the smallest are most replaceable."""
    filters = _group_filters(graph, tp_group, channels)
    return torch.cdist(filters, filters).sum(dim=1)


def lamp_scores(squared):
    """Structured LAMP score of every channel of one layer/group.

    With channels sorted by squared norm ascending, ``score(u) = w_u^2 / sum_{v >= u} w_v^2``:
    the channel's share of the weight that is left once every weaker one is gone. The
    strongest channel always scores 1, so a layer is never emptied by a global threshold.
    Ties keep a stable order.
    """
    squared = torch.as_tensor(squared, dtype=torch.float64)
    order = torch.argsort(squared, stable=True)
    ordered = squared[order]
    tail = torch.flip(torch.cumsum(torch.flip(ordered, [0]), 0), [0])
    ratio = torch.where(tail > 0, ordered / tail.clamp_min(1e-300), torch.ones_like(ordered))
    scores = torch.empty_like(squared)
    scores[order] = ratio
    return scores
