"""DeepLabV3+ head as EnD uses it (end.md §5; jfzhang95 ``pytorch-deeplab-xception`` layout).

``aspp``: a 1×1 branch and three dilated 3×3 branches (1/12/24/36 at output stride 8) plus image pooling,
each 256-d conv-BN-ReLU; concatenated (1280) → 1×1 to 256 + BN + ReLU + Dropout(0.5).
``decoder``: low-level feature 1×1 → 48 + BN + ReLU; the ASPP output bilinearly upsampled to it and
concatenated (304); two 3×3 conv-BN-ReLU (256) each followed by dropout (0.5, 0.1); a 1×1 classifier.
Logits come out at the low-level feature's stride (4). Parameter names are jfzhang95's (``aspp.aspp1.
atrous_conv``, ``decoder.last_conv.{0,1,4,5,8}``) so EnD's checkpoints map with a prefix rename.

The returned feature is the 256-d output of the second 3×3 decoder stage (before its dropout).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptseg.models.registry import register_head


def _init_jfzhang95(module: nn.Module) -> None:
    """He-normal (fan_in) convs, BN γ=1 β=0, as jfzhang95's ``_init_weight``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ASPPBranch(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int):
        super().__init__()
        k, pad = (1, 0) if dilation == 1 else (3, dilation)
        self.atrous_conv = nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """Four parallel branches + image pooling, fused by a 1×1 conv."""

    def __init__(self, cin: int, channels: int, dilations: Sequence[int], dropout: float):
        super().__init__()
        if len(dilations) != 4:
            raise ValueError(f"DeepLabV3+ ASPP takes 4 dilations, got {list(dilations)}")
        self.aspp1 = ASPPBranch(cin, channels, dilations[0])
        self.aspp2 = ASPPBranch(cin, channels, dilations[1])
        self.aspp3 = ASPPBranch(cin, channels, dilations[2])
        self.aspp4 = ASPPBranch(cin, channels, dilations[3])
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(cin, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.conv1 = nn.Conv2d(5 * channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x4 = self.aspp4(x)
        # bilinear upsampling of a 1×1 map is a broadcast (jfzhang95 interpolates; same values)
        pooled = self.global_avg_pool(x).expand(-1, -1, x4.shape[2], x4.shape[3])
        x = torch.cat((self.aspp1(x), self.aspp2(x), self.aspp3(x), x4, pooled), dim=1)
        return self.dropout(self.relu(self.bn1(self.conv1(x))))


class Decoder(nn.Module):
    def __init__(
        self,
        low_level_in: int,
        aspp_channels: int,
        low_level_channels: int,
        channels: int,
        num_classes: int,
        dropouts: Sequence[float],
        align_corners: bool,
    ):
        super().__init__()
        self.align_corners = align_corners
        self.conv1 = nn.Conv2d(low_level_in, low_level_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(low_level_channels)
        self.relu = nn.ReLU(inplace=True)
        self.last_conv = nn.Sequential(
            nn.Conv2d(aspp_channels + low_level_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropouts[0]),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropouts[1]),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, x: Tensor, low_level: Tensor) -> tuple[Tensor, Tensor]:
        low_level = self.relu(self.bn1(self.conv1(low_level)))
        x = F.interpolate(
            x,
            size=(low_level.shape[2], low_level.shape[3]),
            mode="bilinear",
            align_corners=self.align_corners,
        )
        x = torch.cat((x, low_level), dim=1)
        feature = x
        for i, layer in enumerate(self.last_conv):
            x = layer(x)
            if i == 6:
                feature = x
        return x, feature


@register_head("deeplabv3plus")
class DeepLabV3PlusHead(nn.Module):
    """ASPP on ``features[in_index]`` + decoder with the skip from ``features[low_level_index]``.

    Defaults are EnD's (OS 8 rates, 256/48 channels, dropouts 0.5/0.5/0.1, align_corners=True).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        dilations: Sequence[int] = (1, 12, 24, 36),
        channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        aspp_dropout: float = 0.5,
        decoder_dropouts: Sequence[float] = (0.5, 0.1),
        in_index: int = -1,
        low_level_index: int = 0,
        align_corners: bool = True,
    ):
        super().__init__()
        if len(decoder_dropouts) != 2:
            raise ValueError(f"decoder_dropouts takes 2 values, got {list(decoder_dropouts)}")
        self.in_index = in_index
        self.low_level_index = low_level_index
        self.output_index = low_level_index
        self.aspp = ASPP(in_channels[in_index], channels, dilations, aspp_dropout)
        self.decoder = Decoder(
            in_channels[low_level_index],
            channels,
            low_level_channels,
            decoder_channels,
            num_classes,
            decoder_dropouts,
            align_corners,
        )
        _init_jfzhang95(self)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        return self.decoder(self.aspp(features[self.in_index]), features[self.low_level_index])
