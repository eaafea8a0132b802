"""PIDNet: real-time semantic segmentation with P (detail), I (context) and D (boundary) branches.

One class, three variants (Xu et al., CVPR 2023):

============  ===  ===  ======  ==========  ===========
variant        m    n   planes  ppm_planes  head_planes
============  ===  ===  ======  ==========  ===========
``pidnet_s``   2    3     32        96          128
``pidnet_m``   2    3     64        96          128
``pidnet_l``   3    4     64       112          256
============  ===  ===  ======  ==========  ===========

``m == 2`` selects PAPPM + LightBag (S, M), otherwise DAPPM + Bag (L), exactly as the
official code. State-dict keys and shapes equal the official ones.

In training mode (``augment=True``) the forward returns ``[p_logits, main_logits,
boundary_logits]`` at 1/8 resolution; otherwise the main logits. The forward is split
into :meth:`PIDNet.forward_body` and :meth:`PIDNet.forward_aux_heads` so that the
NetsPresso model/head export reuses the same weights and code.
"""
import logging

import torch.nn as nn

from models.model_utils import (BN_MOMENTUM, DAPPM, PAPPM, Bag, BasicBlock, Bottleneck, LightBag,
                                PagFM, SegmentHead, resize_to)
from utils.errors import ModelError

logger = logging.getLogger(__name__)

VARIANTS = {
    "pidnet_s": dict(m=2, n=3, planes=32, ppm_planes=96, head_planes=128),
    "pidnet_m": dict(m=2, n=3, planes=64, ppm_planes=96, head_planes=128),
    "pidnet_l": dict(m=3, n=4, planes=64, ppm_planes=112, head_planes=256),
}
# Spellings used by the official configs and scripts ('pidnet_small', 'pidnet-s', ...).
_ALIASES = {}
for _short, _long in (("s", "small"), ("m", "medium"), ("l", "large")):
    for _sep in ("_", "-"):
        _ALIASES[f"pidnet{_sep}{_short}"] = f"pidnet_{_short}"
        _ALIASES[f"pidnet{_sep}{_long}"] = f"pidnet_{_short}"


def canonical_name(name):
    """Map any accepted spelling to ``pidnet_s|pidnet_m|pidnet_l`` (exact match, no guessing).

    Raises:
        ModelError: the name is not one of the accepted spellings.
    """
    key = str(name).strip().lower()
    if key not in _ALIASES:
        valid = ", ".join(sorted(_ALIASES))
        raise ModelError(f"unknown model name '{name}': use one of {valid}")
    return _ALIASES[key]


class PIDNet(nn.Module):
    """PIDNet with the official module names.

    Args:
        m: basic blocks per stage in the early stages and the P/D branches (2 for S/M, 3 for L).
        n: basic blocks in stages 3 and 4 of the I branch.
        num_classes: output classes.
        planes: base width.
        ppm_planes: branch width of the PAPPM/DAPPM context module.
        head_planes: hidden width of the segmentation heads.
        augment: build the auxiliary P and D heads and return all three outputs.
        norm_layer: normalisation layer (``nn.BatchNorm2d``; ``nn.SyncBatchNorm`` for DDP).
        align_corners: for the internal bilinear upsampling (the official code uses False).
    """

    def __init__(self, m=2, n=3, num_classes=19, planes=64, ppm_planes=96, head_planes=128,
                 augment=True, norm_layer=nn.BatchNorm2d, align_corners=False):
        super().__init__()
        if m < 2 or n < 2:
            raise ModelError(f"PIDNet needs m >= 2 and n >= 2 (got m={m}, n={n})")
        self.augment = augment
        self.align_corners = align_corners
        self._norm_layer = norm_layer
        bn = lambda c: norm_layer(c, momentum=BN_MOMENTUM)  # noqa: E731

        # I branch
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, planes, kernel_size=3, stride=2, padding=1), bn(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, kernel_size=3, stride=2, padding=1), bn(planes), nn.ReLU(inplace=True))
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(BasicBlock, planes, planes, m)
        self.layer2 = self._make_layer(BasicBlock, planes, planes * 2, m, stride=2)
        self.layer3 = self._make_layer(BasicBlock, planes * 2, planes * 4, n, stride=2)
        self.layer4 = self._make_layer(BasicBlock, planes * 4, planes * 8, n, stride=2)
        self.layer5 = self._make_layer(Bottleneck, planes * 8, planes * 8, 2, stride=2)

        # P branch
        self.compression3 = nn.Sequential(nn.Conv2d(planes * 4, planes * 2, kernel_size=1, bias=False),
                                          bn(planes * 2))
        self.compression4 = nn.Sequential(nn.Conv2d(planes * 8, planes * 2, kernel_size=1, bias=False),
                                          bn(planes * 2))
        self.pag3 = PagFM(planes * 2, planes, norm_layer=norm_layer)
        self.pag4 = PagFM(planes * 2, planes, norm_layer=norm_layer)
        self.layer3_ = self._make_layer(BasicBlock, planes * 2, planes * 2, m)
        self.layer4_ = self._make_layer(BasicBlock, planes * 2, planes * 2, m)
        self.layer5_ = self._make_layer(Bottleneck, planes * 2, planes * 2, 1)

        # D branch
        if m == 2:
            self.layer3_d = self._make_single_layer(BasicBlock, planes * 2, planes)
            self.layer4_d = self._make_layer(Bottleneck, planes, planes, 1)
            self.diff3 = nn.Sequential(nn.Conv2d(planes * 4, planes, kernel_size=3, padding=1, bias=False),
                                       bn(planes))
            self.diff4 = nn.Sequential(nn.Conv2d(planes * 8, planes * 2, kernel_size=3, padding=1, bias=False),
                                       bn(planes * 2))
            self.spp = PAPPM(planes * 16, ppm_planes, planes * 4, norm_layer=norm_layer, align_corners=align_corners)
            self.dfm = LightBag(planes * 4, planes * 4, norm_layer=norm_layer)
        else:
            self.layer3_d = self._make_single_layer(BasicBlock, planes * 2, planes * 2)
            self.layer4_d = self._make_single_layer(BasicBlock, planes * 2, planes * 2)
            self.diff3 = nn.Sequential(nn.Conv2d(planes * 4, planes * 2, kernel_size=3, padding=1, bias=False),
                                       bn(planes * 2))
            self.diff4 = nn.Sequential(nn.Conv2d(planes * 8, planes * 2, kernel_size=3, padding=1, bias=False),
                                       bn(planes * 2))
            self.spp = DAPPM(planes * 16, ppm_planes, planes * 4, norm_layer=norm_layer, align_corners=align_corners)
            self.dfm = Bag(planes * 4, planes * 4, norm_layer=norm_layer)
        self.layer5_d = self._make_layer(Bottleneck, planes * 2, planes * 2, 1)

        # Heads
        if augment:
            self.seghead_p = SegmentHead(planes * 2, head_planes, num_classes, norm_layer=norm_layer)
            self.seghead_d = SegmentHead(planes * 2, planes, 1, norm_layer=norm_layer)
        self.final_layer = SegmentHead(planes * 4, head_planes, num_classes, norm_layer=norm_layer)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def _downsample(self, block, inplanes, planes, stride):
        if stride == 1 and inplanes == planes * block.expansion:
            return None
        return nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
            self._norm_layer(planes * block.expansion, momentum=BN_MOMENTUM))

    def _make_layer(self, block, inplanes, planes, blocks, stride=1):
        downsample = self._downsample(block, inplanes, planes, stride)
        layers = [block(inplanes, planes, stride, downsample, norm_layer=self._norm_layer)]
        inplanes = planes * block.expansion
        for i in range(1, blocks):
            # The last block of a stage leaves its ReLU to the caller (official behaviour).
            layers.append(block(inplanes, planes, stride=1, no_relu=(i == blocks - 1),
                                norm_layer=self._norm_layer))
        return nn.Sequential(*layers)

    def _make_single_layer(self, block, inplanes, planes, stride=1):
        downsample = self._downsample(block, inplanes, planes, stride)
        return block(inplanes, planes, stride, downsample, no_relu=True, norm_layer=self._norm_layer)

    def forward_body(self, x):
        """Everything but the auxiliary heads: ``[p_features, main_logits, d_features]``.

        ``p_features``/``d_features`` are the inputs of ``seghead_p``/``seghead_d``. They are
        taken after the ReLU that the official code applies in place to the same tensors
        before the next stage, which is what the official auxiliary heads really see.
        """
        x = self.conv1(x)
        x = self.layer1(x)
        x = self.relu(self.layer2(self.relu(x)))

        x_ = self.layer3_(x)
        x_d = self.layer3_d(x)
        height, width = x_d.shape[-2], x_d.shape[-1]
        x = self.relu(self.layer3(x))
        x_ = self.pag3(x_, self.compression3(x))
        x_d = x_d + resize_to(self.diff3(x), height, width, self.align_corners)

        x = self.relu(self.layer4(x))
        p_features = self.relu(x_)
        x_ = self.layer4_(p_features)
        x_d = self.layer4_d(self.relu(x_d))
        x_ = self.pag4(x_, self.compression4(x))
        x_d = x_d + resize_to(self.diff4(x), height, width, self.align_corners)

        x_ = self.layer5_(self.relu(x_))
        d_features = self.relu(x_d)
        x_d = self.layer5_d(d_features)
        x = resize_to(self.spp(self.layer5(x)), height, width, self.align_corners)
        main = self.final_layer(self.dfm(x_, x, x_d))
        return [p_features, main, d_features]

    def forward_aux_heads(self, outputs):
        """Map ``[p_features, main_logits, d_features]`` to ``[p_logits, main_logits, boundary_logits]``."""
        p_features, main, d_features = outputs
        return [self.seghead_p(p_features), main, self.seghead_d(d_features)]

    def forward(self, x):
        outputs = self.forward_body(x)
        if self.augment:
            return self.forward_aux_heads(outputs)
        return outputs[1]


def build_pidnet(name, num_classes=19, augment=True, **kwargs):
    """Build a variant by name (any accepted spelling, e.g. ``pidnet_small``, ``pidnet-s``)."""
    return PIDNet(num_classes=num_classes, augment=augment, **VARIANTS[canonical_name(name)], **kwargs)


def pidnet_s(num_classes=19, augment=True, **kwargs):
    return build_pidnet("pidnet_s", num_classes, augment, **kwargs)


def pidnet_m(num_classes=19, augment=True, **kwargs):
    return build_pidnet("pidnet_m", num_classes, augment, **kwargs)


def pidnet_l(num_classes=19, augment=True, **kwargs):
    return build_pidnet("pidnet_l", num_classes, augment, **kwargs)


def get_pred_model(name, num_classes):
    """Inference model (``augment=False``), as the official ``get_pred_model``."""
    return build_pidnet(name, num_classes, augment=False)
