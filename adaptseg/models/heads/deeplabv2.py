"""DeepLab-v2 heads: the ASPP-sum classifier and DDB's reduced ASPP + adapter head.

Parameter names follow the mmseg heads DAFormer and DDB release (``aspp_modules.{i}.conv``,
``bottleneck``, ``conv_seg``), so their full checkpoints load without renames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adaptseg.models.layers import ConvModule, kaiming_init
from adaptseg.models.registry import register_head


def _aspp_branch(cin: int, cout: int, dilation: int, *, norm: bool) -> ConvModule:
    """A 3×3 conv with dilation = padding (a 1×1 conv at dilation 1, as mmseg's ASPPModule)."""
    if dilation == 1:
        return ConvModule(cin, cout, 1, norm=norm, act=norm)
    return ConvModule(cin, cout, 3, padding=dilation, dilation=dilation, norm=norm, act=norm)


@register_head("deeplabv2")
class DeepLabV2Head(nn.Module):
    """DeepLab-v2 ASPP classifier: parallel dilated 3×3 convs whose outputs are **summed**.

    * ``channels=None`` (AdaptSegNet, UMMA §4, DAFormer's ``DLV2Head``): each branch maps C5 straight to
      ``num_classes`` logits, with bias, no BN or ReLU.
    * ``channels=128`` (DecoupleNet's "generalised DeepLabv2", §4): each branch maps C5 to ``channels``;
      their sum is the head feature and a 1×1 ``conv_seg`` gives the logits.

    Branch weights are N(0, ``init_std``) (0.01 in every source); biases start at zero.

    The returned feature (what prototype/feature methods use) is the summed ``channels``-d map when
    ``channels`` is set, and otherwise the backbone feature the head reads (C5, 2048-d for ResNet-101):
    the logits-sum of the classic head has no separate feature space.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        dilations: Sequence[int] = (6, 12, 18, 24),
        channels: int | None = None,
        in_index: int = -1,
        init_std: float = 0.01,
    ):
        super().__init__()
        self.in_index = in_index
        self.output_index = in_index
        cin = in_channels[in_index]
        cout = channels if channels is not None else num_classes
        self.aspp_modules = nn.ModuleList(_aspp_branch(cin, cout, d, norm=False) for d in dilations)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1) if channels is not None else None
        for branch in self.aspp_modules:
            nn.init.normal_(branch.conv.weight, 0.0, init_std)
            nn.init.zeros_(branch.conv.bias)
        if self.conv_seg is not None:
            nn.init.normal_(self.conv_seg.weight, 0.0, init_std)
            nn.init.zeros_(self.conv_seg.bias)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        x = features[self.in_index]
        outs: list[Tensor] = []
        for branch in self.aspp_modules:
            outs.append(branch(x))
        out = outs[0]
        for other in outs[1:]:
            out = out + other
        if self.conv_seg is None:
            return out, x
        return self.conv_seg(out), out


@register_head("dlv2red_adapter")
class DLV2AdapterHead(nn.Module):
    """DDB's "dlv2red-adapter" head (ddb.md §4).

    Two dilated 3×3 ConvModules (rates 6, 12; each ``in → channels/2`` + BN + ReLU) are concatenated,
    a 3×3 ConvModule ``channels → channels`` (the "adapter", or ``bottleneck``) gives the prototype
    feature, then Dropout2d(0.1) and a 1×1 ``conv_seg`` give the logits.

    Init as mmcv 1.4.7 does it for DDB: every ASPP conv weight **and ASPP BN γ** ~ N(0, 0.01), β = 0
    (``aspp_init_std``; ``None`` uses He-normal and γ = 1 instead); the bottleneck He-normal (fan_out), BN
    γ = 1, β = 0; ``conv_seg`` keeps PyTorch's default init.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        dilations: Sequence[int] = (6, 12),
        channels: int = 256,
        dropout: float = 0.1,
        in_index: int = -1,
        aspp_init_std: float | None = 0.01,
    ):
        super().__init__()
        if channels % len(dilations):
            raise ValueError(
                f"channels ({channels}) must divide by the number of dilations ({len(dilations)})"
            )
        self.in_index = in_index
        self.output_index = in_index
        cin = in_channels[in_index]
        branch = channels // len(dilations)
        self.aspp_modules = nn.ModuleList(_aspp_branch(cin, branch, d, norm=True) for d in dilations)
        self.bottleneck = ConvModule(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

        kaiming_init(self.aspp_modules)
        kaiming_init(self.bottleneck)
        if aspp_init_std is not None:
            for m in self.aspp_modules.modules():
                if isinstance(m, nn.Conv2d | nn.BatchNorm2d):
                    nn.init.normal_(m.weight, 0.0, aspp_init_std)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        x = features[self.in_index]
        outs: list[Tensor] = []
        for branch in self.aspp_modules:
            outs.append(branch(x))
        feature = self.bottleneck(torch.cat(outs, dim=1))
        return self.conv_seg(self.dropout(feature)), feature
