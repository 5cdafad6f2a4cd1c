"""ResNet backbones in two public layouts, dilated for semantic segmentation.

* **v1b** — torchvision's layout (``conv1``/``bn1`` 7×7 stem, stride in the 3×3 conv): the ImageNet weights
  UMMA/DecoupleNet start from load as they are.
* **v1c** — mmseg's ``ResNetV1c`` (deep stem of three 3×3 convs, ``stem.0..7``): DDB's and DAFormer's
  ``open-mmlab://resnet101_v1c`` weights load as they are.

Both replace strides with dilation as mmseg does (``contract_dilation``: the first block of a dilated stage
uses half the dilation): output stride 8 uses strides (1, 2, 1, 1) and dilations (1, 1, 2, 4); output
stride 16 uses (1, 2, 2, 1) and (1, 1, 1, 2); 32 is the classification network. ``style="caffe"`` puts the
stride in the first 1×1 conv of a bottleneck and, with ``ceil_mode`` and ``contract_dilation=False``, gives
the Caffe DeepLab ResNet of AdaptSegNet/UMMA (umma.md §4).
``forward`` returns the four stage outputs (C2..C5).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from adaptseg.errors import UserError
from adaptseg.models.layers import kaiming_init
from adaptseg.models.registry import register_backbone

#: output stride → (stage strides, stage dilations)
STRIDES_DILATIONS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    32: ((1, 2, 2, 2), (1, 1, 1, 1)),
    16: ((1, 2, 2, 1), (1, 1, 1, 2)),
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
}


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convs; as in mmseg only the first is dilated."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
    ):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (dilated) → 1×1 with 4× expansion; the stride sits in the 3×3 ("pytorch") or first 1×1 ("caffe")."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
    ):
        super().__init__()
        s1, s2 = (stride, 1) if style == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, s2, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A dilated ResNet returning ``[C2, C3, C4, C5]``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        blocks: blocks per stage, e.g. (3, 4, 23, 3) for ResNet-101.
        deep_stem: v1c's three 3×3 convs (``stem.*``) instead of v1b's 7×7 ``conv1``/``bn1``.
        stem_channels: stem output width (v1c's inner convs use half of it).
        base_channels: planes of the first stage; stage ``i`` has ``base_channels·2^i`` planes.
        output_stride: 8, 16 or 32.
        contract_dilation: the first block of a dilated stage uses half the dilation (mmseg, torchvision).
        style: ``"pytorch"`` or ``"caffe"`` (where a bottleneck strides).
        ceil_mode: the stem max-pool rounds up, as Caffe's DeepLab does (a 512 input then gives 65, not 64).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: Sequence[int],
        *,
        deep_stem: bool,
        stem_channels: int = 64,
        base_channels: int = 64,
        output_stride: int = 8,
        contract_dilation: bool = True,
        style: str = "pytorch",
        ceil_mode: bool = False,
        in_channels: int = 3,
    ):
        super().__init__()
        if output_stride not in STRIDES_DILATIONS:
            raise UserError(f"ResNet output_stride must be 8, 16 or 32, not {output_stride}")
        if style not in ("pytorch", "caffe"):
            raise UserError(f"ResNet style must be 'pytorch' or 'caffe', not {style!r}")
        if len(blocks) != 4:
            raise UserError(f"ResNet needs 4 stage depths, got {list(blocks)}")
        strides, dilations = STRIDES_DILATIONS[output_stride]

        # Unused stem parts are Identity (no parameters) so one forward serves both layouts.
        if deep_stem:
            half = stem_channels // 2
            self.stem = nn.Sequential(
                _conv3x3(in_channels, half, stride=2),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
                _conv3x3(half, half),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
                _conv3x3(half, stem_channels),
                nn.BatchNorm2d(stem_channels),
                nn.ReLU(inplace=True),
            )
            self.conv1: nn.Module = nn.Identity()
            self.bn1: nn.Module = nn.Identity()
            self.relu: nn.Module = nn.Identity()
        else:
            self.stem = nn.Sequential()
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem_channels)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=ceil_mode)

        inplanes = stem_channels
        stride_so_far = 4
        self.out_channels: list[int] = []
        self.out_strides: list[int] = []
        stages = []
        for i, (n, stride, dilation) in enumerate(zip(blocks, strides, dilations, strict=True)):
            planes = base_channels * 2**i
            stages.append(
                self._make_stage(block, inplanes, planes, n, stride, dilation, contract_dilation, style)
            )
            inplanes = planes * block.expansion
            stride_so_far *= stride
            self.out_channels.append(inplanes)
            self.out_strides.append(stride_so_far)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        kaiming_init(self)

    @staticmethod
    def _make_stage(
        block: type[BasicBlock] | type[Bottleneck],
        inplanes: int,
        planes: int,
        n: int,
        stride: int,
        dilation: int,
        contract_dilation: bool,
        style: str,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        first_dilation = dilation // 2 if contract_dilation and dilation > 1 else dilation
        layers = [block(inplanes, planes, stride, first_dilation, downsample, style)]
        layers += [block(planes * block.expansion, planes, 1, dilation, None, style) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.stem(x)))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def _builder(depth: int, deep_stem: bool):
    block, default_blocks = DEPTHS[depth]
    variant = "v1c" if deep_stem else "v1b"

    def build(
        output_stride: int = 8,
        base_channels: int = 64,
        stem_channels: int | None = None,
        blocks: Sequence[int] | None = None,
        contract_dilation: bool = True,
        style: str = "pytorch",
        ceil_mode: bool = False,
    ) -> ResNet:
        return ResNet(
            block,
            tuple(blocks) if blocks is not None else default_blocks,
            deep_stem=deep_stem,
            stem_channels=stem_channels if stem_channels is not None else base_channels,
            base_channels=base_channels,
            output_stride=output_stride,
            contract_dilation=contract_dilation,
            style=style,
            ceil_mode=ceil_mode,
        )

    build.__name__ = f"resnet{depth}_{variant}"
    build.__doc__ = (
        f"ResNet-{depth} in the {'mmseg ResNetV1c' if deep_stem else 'torchvision'} layout. "
        "``base_channels``/``stem_channels``/``blocks`` shrink it for tiny presets."
    )
    return build


for _depth in DEPTHS:
    for _deep in (False, True):
        _b = _builder(_depth, _deep)
        register_backbone(_b.__name__)(_b)
