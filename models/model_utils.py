"""PIDNet building blocks.

Attribute names (``conv1``, ``bn1``, ``f_x``, ``scale_process``, ``conv_p``...) are the
official ones: they define the state-dict keys that official checkpoints use.
Layer choices are constructor arguments (``norm_layer``, ``align_corners``) rather than
module-level globals, so the same blocks serve training, BN-folded deployment and pruning.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

BN_MOMENTUM = 0.1


def _norm(norm_layer, channels, momentum=BN_MOMENTUM):
    return norm_layer(channels, momentum=momentum)


def resize_to(x, height, width, align_corners=False):
    """Bilinear resize to ``(height, width)`` (fx-traceable: sizes may be proxies)."""
    return F.interpolate(x, size=[height, width], mode="bilinear", align_corners=align_corners)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, no_relu=False,
                 norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm_layer, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = _norm(norm_layer, planes)
        self.downsample = downsample
        self.stride = stride
        self.no_relu = no_relu

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + residual
        return out if self.no_relu else self.relu(out)


class Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, inplanes, planes, stride=1, downsample=None, no_relu=True,
                 norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = _norm(norm_layer, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = _norm(norm_layer, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = _norm(norm_layer, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.no_relu = no_relu

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + residual
        return out if self.no_relu else self.relu(out)


class SegmentHead(nn.Module):
    """BN-ReLU-Conv3x3-BN-ReLU-Conv1x1 classifier (the official ``segmenthead``)."""

    def __init__(self, inplanes, interplanes, outplanes, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.bn1 = _norm(norm_layer, inplanes)
        self.conv1 = nn.Conv2d(inplanes, interplanes, kernel_size=3, padding=1, bias=False)
        self.bn2 = _norm(norm_layer, interplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(interplanes, outplanes, kernel_size=1, padding=0, bias=True)

    def forward(self, x):
        x = self.conv1(self.relu(self.bn1(x)))
        return self.conv2(self.relu(self.bn2(x)))


def _bn_relu_conv(norm_layer, inplanes, outplanes, kernel_size=1, groups=1, pool=None):
    layers = [] if pool is None else [pool]
    layers += [_norm(norm_layer, inplanes), nn.ReLU(inplace=True),
               nn.Conv2d(inplanes, outplanes, kernel_size=kernel_size, padding=kernel_size // 2,
                         groups=groups, bias=False)]
    return nn.Sequential(*layers)


def _pyramid_scales(norm_layer, inplanes, branch_planes):
    """scale1..scale4: average pools of growing size (the last one global), then BN-ReLU-1x1."""
    pools = [nn.AvgPool2d(kernel_size=5, stride=2, padding=2),
             nn.AvgPool2d(kernel_size=9, stride=4, padding=4),
             nn.AvgPool2d(kernel_size=17, stride=8, padding=8),
             nn.AdaptiveAvgPool2d((1, 1))]
    return [_bn_relu_conv(norm_layer, inplanes, branch_planes, pool=pool) for pool in pools]


class DAPPM(nn.Module):
    """Deep Aggregation PPM (PIDNet-L): hierarchical residual fusion of pooled scales."""

    def __init__(self, inplanes, branch_planes, outplanes, norm_layer=nn.BatchNorm2d,
                 align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.scale1, self.scale2, self.scale3, self.scale4 = _pyramid_scales(norm_layer, inplanes, branch_planes)
        self.scale0 = _bn_relu_conv(norm_layer, inplanes, branch_planes)
        self.process1 = _bn_relu_conv(norm_layer, branch_planes, branch_planes, kernel_size=3)
        self.process2 = _bn_relu_conv(norm_layer, branch_planes, branch_planes, kernel_size=3)
        self.process3 = _bn_relu_conv(norm_layer, branch_planes, branch_planes, kernel_size=3)
        self.process4 = _bn_relu_conv(norm_layer, branch_planes, branch_planes, kernel_size=3)
        self.compression = _bn_relu_conv(norm_layer, branch_planes * 5, outplanes)
        self.shortcut = _bn_relu_conv(norm_layer, inplanes, outplanes)

    def forward(self, x):
        height, width = x.shape[-2], x.shape[-1]
        scales = [self.scale1, self.scale2, self.scale3, self.scale4]
        processes = [self.process1, self.process2, self.process3, self.process4]
        outs = [self.scale0(x)]
        for scale, process in zip(scales, processes):
            up = resize_to(scale(x), height, width, self.align_corners)
            outs.append(process(up + outs[-1]))
        return self.compression(torch.cat(outs, 1)) + self.shortcut(x)


class PAPPM(nn.Module):
    """Parallel Aggregation PPM (PIDNet-S/M): pooled scales processed by one grouped conv."""

    def __init__(self, inplanes, branch_planes, outplanes, norm_layer=nn.BatchNorm2d,
                 align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.scale1, self.scale2, self.scale3, self.scale4 = _pyramid_scales(norm_layer, inplanes, branch_planes)
        self.scale0 = _bn_relu_conv(norm_layer, inplanes, branch_planes)
        self.scale_process = _bn_relu_conv(norm_layer, branch_planes * 4, branch_planes * 4,
                                           kernel_size=3, groups=4)
        self.compression = _bn_relu_conv(norm_layer, branch_planes * 5, outplanes)
        self.shortcut = _bn_relu_conv(norm_layer, inplanes, outplanes)

    def forward(self, x):
        height, width = x.shape[-2], x.shape[-1]
        x_ = self.scale0(x)
        scaled = [resize_to(scale(x), height, width, self.align_corners) + x_
                  for scale in (self.scale1, self.scale2, self.scale3, self.scale4)]
        scale_out = self.scale_process(torch.cat(scaled, 1))
        return self.compression(torch.cat([x_, scale_out], 1)) + self.shortcut(x)


class PagFM(nn.Module):
    """Pixel-attention-guided fusion: P features (x) take I features (y) where they agree.

    The gate is sigmoid(sum over channels of f_x(x) * f_y(y)): one value per pixel, so
    pruning must keep ``f_x`` and ``f_y`` output channels coupled.
    """

    def __init__(self, in_channels, mid_channels, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.f_x = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
                                 norm_layer(mid_channels))
        self.f_y = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
                                 norm_layer(mid_channels))

    def forward(self, x, y):
        height, width = x.shape[-2], x.shape[-1]
        y_q = resize_to(self.f_y(y), height, width)
        x_k = self.f_x(x)
        sim_map = torch.sigmoid(torch.sum(x_k * y_q, dim=1, keepdim=True))
        y = resize_to(y, height, width)
        return (1 - sim_map) * x + sim_map * y


class LightBag(nn.Module):
    """Light boundary-attention-guided fusion (PIDNet-S/M, official ``Light_Bag``)."""

    def __init__(self, in_channels, out_channels, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv_p = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                                    norm_layer(out_channels))
        self.conv_i = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                                    norm_layer(out_channels))

    def forward(self, p, i, d):
        edge_att = torch.sigmoid(d)
        p_add = self.conv_p((1 - edge_att) * i + p)
        i_add = self.conv_i(i + edge_att * p)
        return p_add + i_add


class Bag(nn.Module):
    """Boundary-attention-guided fusion (PIDNet-L): BN-ReLU-Conv3x3 on the blended features."""

    def __init__(self, in_channels, out_channels, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv = nn.Sequential(norm_layer(in_channels), nn.ReLU(inplace=True),
                                  nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False))

    def forward(self, p, i, d):
        edge_att = torch.sigmoid(d)
        return self.conv(edge_att * p + (1 - edge_att) * i)
