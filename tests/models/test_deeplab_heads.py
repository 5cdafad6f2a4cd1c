"""DeepLab-v2 ASPP-sum, DDB's dlv2red-adapter (ddb.md §4) and DeepLabV3+ (end.md §5) heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptseg.models.heads.deeplabv2 import DeepLabV2Head, DLV2AdapterHead
from adaptseg.models.heads.deeplabv3plus import DeepLabV3PlusHead
from adaptseg.models.presets import build_model
from adaptseg.models.registry import build_head


def _feats(channels: list[int], sizes: list[int], n: int = 2) -> list[torch.Tensor]:
    return [torch.randn(n, c, s, s) for c, s in zip(channels, sizes, strict=True)]


R101 = [256, 512, 1024, 2048]


# -------------------------------------------------------------------------------------------- DeepLab-v2
def test_deeplabv2_sums_four_dilated_branches_straight_to_logits() -> None:
    head: DeepLabV2Head = build_head("deeplabv2", in_channels=R101, num_classes=19).eval()
    convs = [b.conv for b in head.aspp_modules]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.dilation, c.padding) for c in convs] == [
        (2048, 19, (3, 3), (d, d), (d, d)) for d in (6, 12, 18, 24)
    ]
    assert all(c.bias is not None for c in convs) and head.conv_seg is None
    feats = _feats([8, 8, 8, 2048], [8, 8, 8, 8])
    logits, feature = head(feats)
    with torch.no_grad():
        torch.testing.assert_close(logits, sum(c(feats[-1]) for c in convs))
    assert feature is feats[-1]  # the classic head's feature is the backbone C5
    assert set(head.state_dict()) == {
        f"aspp_modules.{i}.conv.{p}" for i in range(4) for p in ("weight", "bias")
    }


def test_deeplabv2_init_is_normal_0_01() -> None:
    torch.manual_seed(0)
    head = build_head("deeplabv2", in_channels=R101, num_classes=19)
    w = torch.cat([b.conv.weight.flatten() for b in head.aspp_modules])
    assert abs(w.std().item() - 0.01) < 5e-4 and abs(w.mean().item()) < 5e-4
    assert all(not b.conv.bias.any() for b in head.aspp_modules)


def test_deeplabv2_with_channels_is_decouplenets_head() -> None:
    """decouplenet.md §4: four 3×3 convs 2048→128 summed (the 128-d feature), then a 1×1 classifier."""
    head: DeepLabV2Head = build_head("deeplabv2", in_channels=R101, num_classes=19, channels=128).eval()
    feats = _feats([8, 8, 8, 2048], [8, 8, 8, 8])
    logits, feature = head(feats)
    assert feature.shape == (2, 128, 8, 8) and logits.shape == (2, 19, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(logits, head.conv_seg(feature))
        torch.testing.assert_close(feature, sum(b(feats[-1]) for b in head.aspp_modules))


# ---------------------------------------------------------------------------------------- dlv2red-adapter
def test_adapter_head_structure_matches_ddb() -> None:
    head: DLV2AdapterHead = build_head("dlv2red_adapter", in_channels=R101, num_classes=19)
    convs = [b.conv for b in head.aspp_modules]
    assert [(c.in_channels, c.out_channels, c.dilation, c.padding, c.bias) for c in convs] == [
        (2048, 128, (6, 6), (6, 6), None),
        (2048, 128, (12, 12), (12, 12), None),
    ]
    assert all(
        isinstance(b.bn, nn.BatchNorm2d) and isinstance(b.activate, nn.ReLU) for b in head.aspp_modules
    )
    bottleneck = head.bottleneck.conv
    assert (bottleneck.in_channels, bottleneck.out_channels, bottleneck.kernel_size) == (256, 256, (3, 3))
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1
    assert (head.conv_seg.in_channels, head.conv_seg.out_channels, head.conv_seg.kernel_size) == (
        256,
        19,
        (1, 1),
    )
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    expected = {f"aspp_modules.{i}.conv.weight" for i in range(2)}
    expected |= {f"aspp_modules.{i}.bn.{k}" for i in range(2) for k in bn}
    expected |= {"bottleneck.conv.weight", "conv_seg.weight", "conv_seg.bias"} | {
        f"bottleneck.bn.{k}" for k in bn
    }
    assert set(head.state_dict()) == expected  # mmseg's DLV2AdapterHead names


def test_adapter_head_init_follows_mmcv_1_4_7() -> None:
    torch.manual_seed(0)
    head: DLV2AdapterHead = build_head("dlv2red_adapter", in_channels=R101, num_classes=19)
    aspp_w = torch.cat([b.conv.weight.flatten() for b in head.aspp_modules])
    gamma = torch.cat([b.bn.weight for b in head.aspp_modules])
    assert abs(aspp_w.std().item() - 0.01) < 5e-4
    assert abs(gamma.std().item() - 0.01) < 3e-3 and abs(gamma.mean().item()) < 3e-3  # BN γ ~ N(0, 0.01)
    assert not torch.cat([b.bn.bias for b in head.aspp_modules]).any()
    # bottleneck: He-normal fan_out (std = sqrt(2 / (256·9))), BN γ = 1, β = 0
    assert abs(head.bottleneck.conv.weight.std().item() - (2 / (256 * 9)) ** 0.5) < 1e-3
    assert torch.all(head.bottleneck.bn.weight == 1) and not head.bottleneck.bn.bias.any()
    # conv_seg keeps PyTorch's default: U(±1/sqrt(fan_in)) = U(±1/16)
    w = head.conv_seg.weight
    assert w.abs().max() <= 1 / 16 and w.std() > 0.8 * (1 / 16) / 3**0.5


def test_adapter_head_returns_the_256d_adapter_feature_in_eval() -> None:
    head = build_head("dlv2red_adapter", in_channels=R101, num_classes=19).eval()
    logits, feature = head(_feats([8, 8, 8, 2048], [8, 8, 8, 8]))
    assert feature.shape == (2, 256, 8, 8) and logits.shape == (2, 19, 8, 8)
    assert (feature >= 0).all()
    with torch.no_grad():
        torch.testing.assert_close(logits, head.conv_seg(feature))


@pytest.mark.slow
def test_ddb_preset_on_512_gives_64_logits_and_feature() -> None:
    """ddb.md §7 test 11: 512² input → 19×64² logits and a 256×64² feature."""
    model = build_model("ddb-dlv2red-adapter-r101").eval()
    with torch.no_grad():
        out = model.forward_features(torch.randn(1, 3, 512, 512))
    assert out["logits"].shape == (1, 19, 64, 64) and out["feature"].shape == (1, 256, 64, 64)


# --------------------------------------------------------------------------------------------- DeepLabV3+
def test_deeplabv3plus_structure_matches_end() -> None:
    head: DeepLabV3PlusHead = build_head("deeplabv3plus", in_channels=[256, 512, 2048, 512], num_classes=19)
    aspp = head.aspp
    assert aspp.aspp1.atrous_conv.kernel_size == (1, 1)
    assert [getattr(aspp, f"aspp{i}").atrous_conv.dilation[0] for i in (2, 3, 4)] == [12, 24, 36]
    assert aspp.aspp2.atrous_conv.in_channels == 512  # ASPP reads DRN's layer8
    assert (aspp.conv1.in_channels, aspp.conv1.out_channels) == (1280, 256) and aspp.dropout.p == 0.5
    dec = head.decoder
    assert (dec.conv1.in_channels, dec.conv1.out_channels) == (256, 48)
    assert dec.last_conv[0].in_channels == 304
    assert [dec.last_conv[i].p for i in (3, 7)] == [0.5, 0.1]
    assert dec.last_conv[8].out_channels == 19 and dec.last_conv[8].bias is not None
    keys = set(head.state_dict())
    assert {
        "aspp.aspp1.atrous_conv.weight",
        "aspp.global_avg_pool.1.weight",
        "aspp.global_avg_pool.2.running_mean",
        "aspp.bn1.bias",
        "decoder.bn1.weight",
        "decoder.last_conv.5.running_var",
        "decoder.last_conv.8.bias",
    } <= keys


def test_deeplabv3plus_logits_at_the_low_level_stride() -> None:
    head = build_head(
        "deeplabv3plus", in_channels=[16, 32, 64, 32], num_classes=5, channels=16, decoder_channels=8
    ).eval()
    assert head.output_index == 0
    logits, feature = head(_feats([16, 32, 64, 32], [16, 8, 8, 8]))
    assert logits.shape == (2, 5, 16, 16) and feature.shape == (2, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(logits, head.decoder.last_conv[8](feature))


def test_deeplabv3plus_image_pool_branch_is_a_broadcast() -> None:
    head = build_head("deeplabv3plus", in_channels=[4, 4, 4, 8], num_classes=3, channels=4).eval()
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        pooled = head.aspp.global_avg_pool(x)
        up = nn.functional.interpolate(pooled, size=(5, 7), mode="bilinear", align_corners=True)
        manual = torch.cat(
            [head.aspp.aspp1(x), head.aspp.aspp2(x), head.aspp.aspp3(x), head.aspp.aspp4(x), up], 1
        )
        manual = head.aspp.relu(head.aspp.bn1(head.aspp.conv1(manual)))
        torch.testing.assert_close(head.aspp(x), manual)
