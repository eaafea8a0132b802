"""Channel importance: filter L2 norm, geometric median (FPGM), feature-map nuclear norm, LAMP.

All functions work on a torch-pruning group holding every channel of a
:class:`models.compression.graph.ChannelGroup`; a channel's filter is the concatenation of
its filters in every output-pruned convolution of the group.
"""
import logging

import torch

from models.compression.graph import _CONV

logger = logging.getLogger(__name__)


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


def _out_pruned_convs(graph, tp_group):
    """``(conv, conv channel indices, root channel indices)`` for each output-pruned conv."""
    for item in tp_group:
        module = item.dep.target.module
        if isinstance(module, _CONV) and graph.is_out_channel_pruning_fn(item.dep.handler):
            yield module, list(item.idxs), list(item.root_idxs)


def feature_nuclear_norms(model, convs, images):
    """``{conv: [out_channels]}``: nuclear norm of each output feature map, averaged over ``images``.

    This is NetsPresso's ``PR_NN`` criterion (Yeom et al., "Toward Compact Deep Neural Networks
    via Energy-Aware Pruning"): the nuclear norm (sum of singular values, the "energy") of a
    filter's ``H x W`` output map measures how much information the filter carries; a filter
    whose map is constant zero carries none. Images run one at a time, so they may differ in size.

    Args:
        model: the network; ``convs`` are modules of it.
        convs: the convolutions to measure.
        images: iterable of ``3 x H x W`` (or ``1 x 3 x H x W``) preprocessed tensors.
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    totals = {conv: torch.zeros(conv.out_channels, dtype=torch.float64) for conv in convs}

    def hook(module, _inputs, output):
        maps = output.detach().float()[0]
        # svdvals rather than sqrt(eig(A A^T)): the Gram route loses small singular values,
        # and a rank-one (constant) map would pick up sqrt(eps)-sized noise from each of the rest.
        totals[module] += torch.linalg.svdvals(maps).sum(dim=-1).double().cpu()

    handles = [conv.register_forward_hook(hook) for conv in convs]
    was_training = model.training
    model.eval()
    count = 0
    try:
        with torch.inference_mode():
            for image in images:
                batch = image if image.dim() == 4 else image.unsqueeze(0)
                model(batch[:1].to(device))
                count += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if count == 0:
        raise ValueError("feature_nuclear_norms needs at least one image")
    return {conv: total / count for conv, total in totals.items()}


def group_nuclear_norms(graph, tp_group, channels, conv_norms):
    """Per channel of a group: the nuclear norms of its maps summed over the coupled convs.

    Summing is NetsPresso's default "Sum" policy for connected filters.
    """
    scores = torch.zeros(channels, dtype=torch.float64)
    for module, idxs, root_idxs in _out_pruned_convs(graph, tp_group):
        scores[torch.as_tensor(root_idxs)] += conv_norms[module][torch.as_tensor(idxs)]
    return scores


def nuclear_norms_per_group(model, graph, tp_groups, groups, images):
    """``PR_NN``'s importance of every prunable group: :func:`group_nuclear_norms` of the feature
    maps of ``model`` on ``images`` (the convolutions whose outputs the groups prune)."""
    convs = {item.dep.target.module for tg in tp_groups for item in tg
             if isinstance(item.dep.target.module, _CONV) and graph.is_out_channel_pruning_fn(item.dep.handler)}
    conv_norms = feature_nuclear_norms(model, sorted(convs, key=id), images)
    logger.info("PR_NN: nuclear norms of %d convolutions' feature maps over %d images", len(convs), len(images))
    return [group_nuclear_norms(graph, tg, g.channels, conv_norms) for tg, g in zip(tp_groups, groups)]


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
