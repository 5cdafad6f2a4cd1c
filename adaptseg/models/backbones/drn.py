"""Dilated Residual Networks, type D (Yu et al., CVPR 2017), in fyu/drn's layout (``layer0`` … ``layer8``).

EnD's DeepLabV3+ uses DRN-D-54 (end.md §5): a 7×7 stride-1 stem (``layer0``), conv-BN-ReLU ``layer1``
and ``layer2`` (stride 2), bottleneck ``layer3``/``layer4`` (stride 2 each), dilated bottleneck
``layer5`` (2) and ``layer6`` (4), and conv-BN-ReLU ``layer7`` (dilation 2) and ``layer8``: output
stride 8 by construction. fyu/drn's ImageNet weights (``drn_d_54-0e0534ff.pth``) load as they are
(their ``fc`` is dropped).

``forward`` returns ``[layer3, layer4, layer6, layer8]`` (strides 4, 8, 8, 8); ``layer3`` is the
DeepLabV3+ low-level feature and ``layer8`` its ASPP input.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from adaptseg.models.backbones.resnet import Bottleneck
from adaptseg.models.layers import kaiming_init
from adaptseg.models.registry import register_backbone

DRN_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)


def _conv_layers(cin: int, cout: int, n: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """``n`` × (3×3 conv, BN, ReLU); the first conv strides."""
    mods: list[nn.Module] = []
    for i in range(n):
        mods += [
            nn.Conv2d(
                cin if i == 0 else cout,
                cout,
                3,
                stride=stride if i == 0 else 1,
                padding=dilation,
                dilation=dilation,
                bias=False,
            ),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*mods)


def _bottleneck_layer(cin: int, planes: int, n: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """DRN's ``_make_layer`` for bottlenecks: every block's 3×3 conv uses ``dilation`` (DRN's
    ``new_level`` only changes the unused first dilation of a bottleneck)."""
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or cin != out:
        downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    blocks = [Bottleneck(cin, planes, stride, dilation, downsample)]
    blocks += [Bottleneck(out, planes, 1, dilation) for _ in range(1, n)]
    return nn.Sequential(*blocks)


class DRND(nn.Module):
    """DRN-D with bottlenecks (DRN-D-54: ``layers=(1, 1, 3, 4, 6, 3, 1, 1)``; DRN-D-105: 23 in layer5)."""

    def __init__(self, layers: Sequence[int], channels: Sequence[int] = DRN_CHANNELS, in_channels: int = 3):
        super().__init__()
        if len(layers) != 8 or len(channels) != 8 or min(layers) < 1:
            raise ValueError(
                f"DRN-D needs 8 positive layer counts and 8 widths, got {list(layers)}, {list(channels)}"
            )
        c = channels
        self.layer0 = nn.Sequential(
            nn.Conv2d(in_channels, c[0], 7, padding=3, bias=False),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(inplace=True),
        )
        self.layer1 = _conv_layers(c[0], c[0], layers[0])
        self.layer2 = _conv_layers(c[0], c[1], layers[1], stride=2)
        self.layer3 = _bottleneck_layer(c[1], c[2], layers[2], stride=2)
        self.layer4 = _bottleneck_layer(c[2] * 4, c[3], layers[3], stride=2)
        self.layer5 = _bottleneck_layer(c[3] * 4, c[4], layers[4], dilation=2)
        self.layer6 = _bottleneck_layer(c[4] * 4, c[5], layers[5], dilation=4)
        self.layer7 = _conv_layers(c[5] * 4, c[6], layers[6], dilation=2)
        self.layer8 = _conv_layers(c[6], c[7], layers[7])
        self.out_channels = [c[2] * 4, c[3] * 4, c[5] * 4, c[7]]
        self.out_strides = [4, 8, 8, 8]
        kaiming_init(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.layer2(self.layer1(self.layer0(x)))
        c3 = self.layer3(x)
        c4 = self.layer4(c3)
        c6 = self.layer6(self.layer5(c4))
        c8 = self.layer8(self.layer7(c6))
        return [c3, c4, c6, c8]


@register_backbone("drn_d_54")
def drn_d_54(channels: Sequence[int] = DRN_CHANNELS) -> DRND:
    """DRN-D-54 (35.8 M parameters with its ImageNet classifier, fyu/drn README)."""
    return DRND((1, 1, 3, 4, 6, 3, 1, 1), channels)


@register_backbone("drn_d_105")
def drn_d_105(channels: Sequence[int] = DRN_CHANNELS) -> DRND:
    """DRN-D-105 (54.8 M parameters with its ImageNet classifier, fyu/drn README)."""
    return DRND((1, 1, 3, 4, 23, 3, 1, 1), channels)
