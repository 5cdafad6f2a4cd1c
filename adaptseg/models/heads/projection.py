"""ATP's (SePiCo's) projection head: the auxiliary head that gives prototype methods their feature space.

atp.md §4: all backbone stages are bilinearly resized to the first stage's size (1/4) and concatenated
(1024 channels for MiT-B5), then 1×1 conv → ``sum // stages`` (256) + BN + ReLU, 1×1 conv → ``channels``
(512) + BN + ReLU, and L2-normalised over channels.

Parameter names follow SePiCo's ``ProjHead`` (``convs.0.conv``, ``convs.0.bn``, ``convs.1.conv``, …) so
``auxiliary_head.*`` of ATP/SePiCo checkpoints load without renaming.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptseg.models.heads.daformer import resize_to
from adaptseg.models.layers import ConvModule, kaiming_init
from adaptseg.models.registry import register_head


class ProjectionHead(nn.Module):
    """``forward(features)`` → unit-norm ``N×channels×H/4×W/4`` embedding.

    Args:
        in_channels: channels of the backbone stages (all are used).
        channels: output width (512 in ATP's experiments; SePiCo's base config uses 256).
        mid_channels: width after the first conv; default ``sum(in_channels) // len(in_channels)``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 512, mid_channels: int | None = None):
        super().__init__()
        total = sum(in_channels)
        mid = mid_channels or total // len(in_channels)
        self.convs = nn.Sequential(ConvModule(total, mid, 1), ConvModule(mid, channels, 1))
        kaiming_init(self)
        self.channels = channels

    def forward(self, features: list[Tensor]) -> Tensor:
        size = features[0].shape[-2:]
        x = torch.cat([resize_to(f, size) for f in features], dim=1)
        return F.normalize(self.convs(x), p=2.0, dim=1)


@register_head("atp_projection")
def atp_projection(
    *,
    in_channels: Sequence[int],
    num_classes: int | None = None,
    channels: int = 512,
    mid_channels: int | None = None,
) -> ProjectionHead:
    """ATP/SePiCo projection head; ``num_classes`` is part of the common head signature and unused."""
    return ProjectionHead(in_channels, channels, mid_channels)
