"""ResNet v1b/v1c and DRN-D: published parameter counts, key layouts, strides and dilations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptseg.errors import UserError
from adaptseg.models.backbones.resnet import Bottleneck
from adaptseg.models.registry import build_backbone


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return build_backbone(name, **kw)


# torchvision's documented totals minus the ImageNet classifier (2048·1000+1000 or 512·1000+1000)
@pytest.mark.parametrize(
    ("depth", "published_total", "fc"),
    [
        (18, 11_689_512, 513_000),
        (34, 21_797_672, 513_000),
        (50, 25_557_032, 2_049_000),
        (101, 44_549_160, 2_049_000),
    ],
)
def test_resnet_v1b_parameter_counts_match_torchvision(depth: int, published_total: int, fc: int) -> None:
    assert _params(_meta(f"resnet{depth}_v1b")) == published_total - fc


def test_resnet101_backbone_is_42_5m_and_v1c_adds_the_deep_stem() -> None:
    v1b, v1c = _params(_meta("resnet101_v1b")), _params(_meta("resnet101_v1c"))
    assert round(v1b / 1e6, 2) == 42.50
    # deep stem: 3→32, 32→32, 32→64 3×3 convs + 3 BNs, instead of a 7×7 3→64 conv + BN
    stem_v1c = 3 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 2 * (32 + 32 + 64)
    stem_v1b = 3 * 64 * 49 + 2 * 64
    assert v1c - v1b == stem_v1c - stem_v1b


def test_drn_parameter_counts_match_fyu_readme() -> None:
    """fyu/drn README: DRN-D-54 35.8 M, DRN-D-105 54.8 M, counted with the 1×1 ImageNet classifier 512→1000."""
    fc = 512 * 1000 + 1000
    assert round((_params(_meta("drn_d_54")) + fc) / 1e6, 1) == 35.8
    assert round((_params(_meta("drn_d_105")) + fc) / 1e6, 1) == 54.8


def test_layouts_use_the_public_key_names() -> None:
    v1b = set(_meta("resnet50_v1b").state_dict())
    v1c = set(_meta("resnet50_v1c").state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer4.2.bn3.bias"} <= v1b
    assert not any(k.startswith("stem.") for k in v1b)
    stem = {f"stem.{i}.weight" for i in (0, 3, 6)} | {f"stem.{i}.running_mean" for i in (1, 4, 7)}
    assert stem <= v1c and "conv1.weight" not in v1c and "layer3.5.conv2.weight" in v1c
    drn = _meta("drn_d_54").state_dict()
    assert drn["layer0.0.weight"].shape == (16, 3, 7, 7)
    assert drn["layer3.0.downsample.0.weight"].shape == (256, 32, 1, 1)
    assert drn["layer7.0.weight"].shape == (512, 2048, 3, 3)
    assert drn["layer8.1.running_var"].shape == (512,)
    assert not any(k.startswith("fc.") for k in drn)


def _dilations(stage: nn.Sequential) -> list[int]:
    return [block.conv2.dilation[0] for block in stage]


def test_output_stride_8_dilates_as_mmseg_with_contract_dilation() -> None:
    net = _meta("resnet101_v1c", output_stride=8)
    assert net.out_strides == [4, 8, 8, 8]
    assert net.out_channels == [256, 512, 1024, 2048]
    assert _dilations(net.layer3) == [1] + [2] * 22
    assert _dilations(net.layer4) == [2, 4, 4]
    assert net.layer3[0].conv2.stride == (1, 1) and net.layer3[0].downsample[0].stride == (1, 1)
    assert all(block.conv2.padding == block.conv2.dilation for block in net.layer4)


def test_output_stride_16_and_32() -> None:
    os16 = _meta("resnet50_v1b", output_stride=16)
    assert os16.out_strides == [4, 8, 16, 16]
    assert _dilations(os16.layer3) == [1] * 6 and _dilations(os16.layer4) == [1, 2, 2]
    os32 = _meta("resnet50_v1b", output_stride=32)
    assert os32.out_strides == [4, 8, 16, 32] and _dilations(os32.layer4) == [1, 1, 1]


def test_caffe_style_strides_in_the_first_conv_and_can_dilate_every_block() -> None:
    net = _meta("resnet101_v1b", style="caffe", contract_dilation=False, ceil_mode=True)
    first: Bottleneck = net.layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
    assert _dilations(net.layer3) == [2] * 23 and _dilations(net.layer4) == [4] * 3
    assert net.maxpool.ceil_mode


@pytest.mark.parametrize("name", ["resnet18_v1c", "resnet50_v1b"])
def test_resnet_features_have_the_declared_strides(name: str) -> None:
    net = build_backbone(name, output_stride=8, base_channels=8, stem_channels=8).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == net.out_channels
    assert [(64 // s, 96 // s) for s in net.out_strides] == [tuple(f.shape[-2:]) for f in feats]


def test_drn_features_have_the_declared_strides() -> None:
    net = build_backbone("drn_d_54", channels=(4, 4, 4, 8, 8, 8, 8, 8)).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 32, 64))
    assert [f.shape[1] for f in feats] == net.out_channels == [16, 32, 32, 8]
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 16), (4, 8), (4, 8), (4, 8)]
    assert _dilations(net.layer5) == [2] * 6 and _dilations(net.layer6) == [4] * 3
    assert net.layer7[0].dilation == (2, 2) and net.layer8[0].dilation == (1, 1)


def test_tiny_widths_and_blocks_options() -> None:
    net = _meta("resnet18_v1c", base_channels=16, stem_channels=16, blocks=(1, 1, 1, 1))
    assert net.out_channels == [16, 32, 64, 128]
    assert [len(s) for s in (net.layer1, net.layer2, net.layer3, net.layer4)] == [1, 1, 1, 1]
    assert net.stem[0].out_channels == 8


def test_bad_output_stride_is_a_user_error() -> None:
    with pytest.raises(UserError, match="output_stride must be 8, 16 or 32"):
        build_backbone("resnet50_v1c", output_stride=4)
