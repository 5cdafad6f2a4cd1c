"""DAFormer's decode head with context-aware feature fusion (``daformer_sepaspp``, atp.md §8).

Every stage is embedded by a Linear to ``embed_dims`` channels (no norm, no activation), resized to
the first stage's size (1/4), concatenated, and fused by an ASPP without image pooling: a 1×1 branch
and depthwise-separable 3×3 branches at dilations 6/12/18 (each conv + BN + ReLU), concatenated and
reduced by a 3×3 bottleneck.  Dropout2d and a 1×1 classifier (init N(0, 0.01)) give the logits.

Module names follow DAFormer's release (``embed_layers.0.proj``, ``fuse_layer.aspp_modules.1
.depthwise_conv.conv``, ``fuse_layer.bottleneck.bn``, ``conv_seg``) so ``decode_head.*`` of DAFormer
and ATP checkpoints load without renaming.  The conv blocks use mmcv ``ConvModule``'s layout
(``conv``, ``bn``); :class:`LinearEmbed` and :func:`resize_to` here are shared by the other MiT heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptseg.models.layers import ConvModule, kaiming_init
from adaptseg.models.registry import register_head


class DepthwiseSeparableConvModule(nn.Module):
    """Depthwise k×k (dilated) ConvModule on the input channels, then a pointwise ConvModule to ``out_channels``.

    mmcv ``DepthwiseSeparableConvModule``'s names (``depthwise_conv``, ``pointwise_conv``); both get BN + ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, dilation: int = 1):
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels,
            in_channels,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            groups=in_channels,
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class LinearEmbed(nn.Module):
    """Per-pixel Linear on a feature map (SegFormer's ``MLP``: parameters ``proj.weight``/``proj.bias``).

    Applied over the channel axis of an ``N×C×H×W`` map; the result is an ``N×E×H×W`` map.
    """

    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def resize_to(x: Tensor, size: list[int]) -> Tensor:
    """Bilinear resize (align_corners=False) to spatial ``size``, skipped when ``x`` already has it."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


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
        self.bottleneck = ConvModule(len(dilations) * channels, channels, 3, padding=1)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        branches: list[Tensor] = []
        for branch in self.aspp_modules:
            branches.append(branch(x))
        return self.bottleneck(torch.cat(branches, dim=1))


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
        self.embed_layers = nn.ModuleList(LinearEmbed(c, embed_dims) for c in in_channels)
        self.fuse_layer = SeparableASPP(embed_dims * len(in_channels), channels, dilations)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.feature_channels = channels
        self.output_index = 0  # logits at the first (stride-4) stage's resolution
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        size = features[0].shape[-2:]
        embedded: list[Tensor] = []
        for i, embed in enumerate(self.embed_layers):
            embedded.append(resize_to(embed(features[i]), size))
        fused = self.fuse_layer(torch.cat(embedded, dim=1))
        return self.conv_seg(self.dropout(fused)), fused


@register_head("daformer")
def daformer(
    *,
    in_channels: Sequence[int],
    num_classes: int,
    channels: int = 256,
    embed_dims: int = 256,
    dilations: Sequence[int] = (1, 6, 12, 18),
    dropout_ratio: float = 0.1,
) -> DAFormerHead:
    """DAFormer head (``daformer_sepaspp``); options as :class:`DAFormerHead`."""
    return DAFormerHead(in_channels, num_classes, channels, embed_dims, dilations, dropout_ratio)
