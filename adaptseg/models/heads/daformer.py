"""DAFormer's decode head with context-aware feature fusion (``daformer_sepaspp``, atp.md §8).

Every stage is embedded by a Linear to ``embed_dims`` channels (no norm, no activation), resized to
the first stage's size (1/4), concatenated, and fused by an ASPP without image pooling: a 1×1 branch
and depthwise-separable 3×3 branches at dilations 6/12/18 (each conv + BN + ReLU), concatenated and
reduced by a 3×3 bottleneck.  Dropout2d and a 1×1 classifier (init N(0, 0.01)) give the logits.

Module names follow DAFormer's release (``embed_layers.0.proj``, ``fuse_layer.aspp_modules.1
.depthwise_conv.conv``, ``fuse_layer.bottleneck.bn``, ``conv_seg``) so ``decode_head.*`` of DAFormer
and ATP checkpoints load without renaming.  The conv blocks use mmcv ``ConvModule``'s layout
(``conv``, ``bn``); :class:`ConvModule` and :class:`LinearEmbed` here are shared by the other MiT heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptseg.models.registry import register_head


class ConvModule(nn.Sequential):
    """Conv (no bias) → BatchNorm → ReLU, with mmcv ``ConvModule``'s parameter names (``conv``, ``bn``).

    The conv gets mmcv's init: He-normal in fan-out mode; BN starts at weight 1, bias 0.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ):
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True) if act else nn.Identity()
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")


class DepthwiseSeparableConvModule(nn.Sequential):
    """Depthwise 3×3 (dilated) ConvModule on the input channels, then a pointwise ConvModule to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, dilation: int = 1):
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)


class LinearEmbed(nn.Module):
    """Per-pixel Linear on a feature map (SegFormer's ``MLP``: parameters ``proj.weight``/``proj.bias``).

    Applied over the channel axis of an ``N×C×H×W`` map; the result is an ``N×E×H×W`` map.
    """

    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (align_corners=False), skipped when ``x`` already has spatial ``size``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SeparableASPP(nn.Module):
    """ASPP without image pooling: 1×1 branch at dilation 1, depthwise-separable 3×3 at the others, then
    a 3×3 bottleneck over the concatenation (DAFormer's ``ASPPWrapper`` with ``sep=True, pool=False``)."""

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int] = (1, 6, 12, 18)):
        super().__init__()
        self.aspp_modules = nn.ModuleList(
            ConvModule(in_channels, channels, 1)
            if d == 1
            else DepthwiseSeparableConvModule(in_channels, channels, 3, dilation=d)
            for d in dilations
        )
        self.bottleneck = ConvModule(len(dilations) * channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.aspp_modules], dim=1))


class DAFormerHead(nn.Module):
    """``forward(features)`` → ``(logits at 1/4, fused 'channels'-wide feature before dropout)``.

    Args:
        in_channels: channels of the backbone stages (all are used, shallow to deep).
        num_classes: classifier outputs.
        channels: width of the fused feature (256 in DAFormer).
        embed_dims: width of every stage embedding (256 in DAFormer).
        dilations: ASPP dilations; 1 is the 1×1 branch.
        dropout_ratio: Dropout2d before the classifier.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        embed_dims: int = 256,
        dilations: Sequence[int] = (1, 6, 12, 18),
        dropout_ratio: float = 0.1,
    ):
        super().__init__()
        self.embed_layers = nn.ModuleDict(
            {str(i): LinearEmbed(c, embed_dims) for i, c in enumerate(in_channels)}
        )
        self.fuse_layer = SeparableASPP(embed_dims * len(in_channels), channels, dilations)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.feature_channels = channels
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        size = features[0].shape[-2:]
        embedded = [resize_to(embed(x), size) for embed, x in zip(self.embed_layers.values(), features, strict=True)]
        fused = self.fuse_layer(torch.cat(embedded, dim=1))
        return self.conv_seg(self.dropout(fused)), fused


@register_head("daformer")
def daformer(*, in_channels: Sequence[int], num_classes: int, **options) -> DAFormerHead:
    """DAFormer head (``daformer_sepaspp``); ``options`` as :class:`DAFormerHead`."""
    return DAFormerHead(in_channels, num_classes, **options)
