"""DAFormer, SegFormer and ATP projection heads (atp.md §4, §7, §8): shapes, structure, release names,
initialisation, and strict round trips of DAFormer/ATP/SegFormer segmentor checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptseg.errors import UserError
from adaptseg.models.checkpoint import get_format, load_checkpoint
from adaptseg.models.heads.daformer import DAFormerHead
from adaptseg.models.heads.projection import ProjectionHead
from adaptseg.models.heads.segformer import SegFormerHead
from adaptseg.models.presets import build_model, load_preset
from adaptseg.models.registry import build_head

B5_CHANNELS = [64, 128, 320, 512]
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _features(channels: list[int], size: int = 16, n: int = 2) -> list[Tensor]:
    """Random stage features at strides 4/8/16/32 of a ``4·size`` input."""
    return [torch.randn(n, c, size >> i, size >> i) for i, c in enumerate(channels)]


def _conv_bn(prefix: str) -> set[str]:
    return {f"{prefix}.conv.weight"} | {f"{prefix}.bn.{k}" for k in BN_KEYS}


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _randomise_bn_stats(model: nn.Module) -> None:
    """Non-trivial running statistics, so that a round trip that lost them would show in the outputs."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


# -------------------------------------------------------------------------------------------- DAFormer
def test_daformer_head_shapes_and_feature() -> None:
    head = build_head("daformer", in_channels=B5_CHANNELS, num_classes=19).eval()
    logits, feature = head(_features(B5_CHANNELS))
    assert logits.shape == (2, 19, 16, 16)
    assert feature.shape == (2, 256, 16, 16)
    assert head.output_index == 0
    # eval: logits are the classifier applied to the fused bottleneck output (dropout off)
    torch.testing.assert_close(logits, head.conv_seg(feature))
    assert (feature >= 0).all()  # bottleneck ends in ReLU


def test_daformer_head_structure_matches_spec() -> None:
    """Linear → 256 per stage; ASPP without pooling: 1×1, depthwise-separable 3×3 at 6/12/18; 3×3 bottleneck."""
    head: DAFormerHead = build_head("daformer", in_channels=B5_CHANNELS, num_classes=19)
    assert [(e.proj.in_features, e.proj.out_features) for e in head.embed_layers] == [
        (c, 256) for c in B5_CHANNELS
    ]
    branches = head.fuse_layer.aspp_modules
    assert len(branches) == 4 and not hasattr(head.fuse_layer, "image_pool")
    assert branches[0].conv.kernel_size == (1, 1) and branches[0].conv.in_channels == 1024
    for branch, d in zip(branches[1:], (6, 12, 18), strict=True):
        dw, pw = branch.depthwise_conv.conv, branch.pointwise_conv.conv
        assert dw.groups == dw.in_channels == dw.out_channels == 1024
        assert dw.kernel_size == (3, 3) and dw.dilation == (d, d) and dw.padding == (d, d)
        assert (pw.in_channels, pw.out_channels, pw.kernel_size) == (1024, 256, (1, 1))
        assert isinstance(branch.depthwise_conv.activate, nn.ReLU) and isinstance(
            branch.depthwise_conv.bn, nn.BatchNorm2d
        )
    bottleneck = head.fuse_layer.bottleneck.conv
    assert (bottleneck.in_channels, bottleneck.out_channels, bottleneck.kernel_size) == (1024, 256, (3, 3))
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1
    # the count follows from the spec: embeds + 1×1 + 3 × (dw + pw) + bottleneck (each with BN) + classifier
    bn = 2 * 256
    expected = (
        sum(c * 256 + 256 for c in B5_CHANNELS)
        + (1024 * 256 + bn)
        + 3 * (1024 * 9 + 2 * 1024 + 1024 * 256 + bn)
        + (1024 * 9 * 256 + bn)
        + (256 * 19 + 19)
    )
    assert _params(head) == expected == 3_712_275


def test_daformer_head_uses_release_names() -> None:
    """lhoyer/DAFormer's ``decode_head`` keys, so released segmentors load without renaming."""
    head = build_head("daformer", in_channels=B5_CHANNELS, num_classes=19)
    expected = {f"embed_layers.{i}.proj.{k}" for i in range(4) for k in ("weight", "bias")}
    expected |= _conv_bn("fuse_layer.aspp_modules.0") | _conv_bn("fuse_layer.bottleneck")
    for j in (1, 2, 3):
        for part in ("depthwise_conv", "pointwise_conv"):
            expected |= _conv_bn(f"fuse_layer.aspp_modules.{j}.{part}")
    expected |= {"conv_seg.weight", "conv_seg.bias"}
    assert set(head.state_dict()) == expected


def test_conv_seg_init() -> None:
    torch.manual_seed(0)
    head = build_head("daformer", in_channels=B5_CHANNELS, num_classes=19)
    assert head.conv_seg.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert head.conv_seg.weight.mean().abs().item() < 1e-3
    assert torch.count_nonzero(head.conv_seg.bias) == 0


def test_daformer_fusion_input_is_stage_embeddings_in_order() -> None:
    """The ASPP sees [embed(stage0), up(embed(stage1)), …] (bilinear, align_corners=False) at 1/4."""
    head = build_head(
        "daformer", in_channels=[8, 16, 24, 32], num_classes=5, channels=16, embed_dims=12
    ).eval()
    feats = _features([8, 16, 24, 32], size=8)
    seen: list[Tensor] = []
    head.fuse_layer.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    head(feats)
    expected = []
    for embed, x in zip(head.embed_layers, feats, strict=True):
        e = F.linear(x.permute(0, 2, 3, 1), embed.proj.weight, embed.proj.bias).permute(0, 3, 1, 2)
        expected.append(F.interpolate(e, size=(8, 8), mode="bilinear", align_corners=False))
    torch.testing.assert_close(seen[0], torch.cat(expected, dim=1))


# ------------------------------------------------------------------------------------------- SegFormer
def test_segformer_head_shapes_names_and_sizes() -> None:
    head: SegFormerHead = build_head(
        "segformer", in_channels=B5_CHANNELS, num_classes=19, embed_dim=768
    ).eval()
    logits, feature = head(_features(B5_CHANNELS))
    assert logits.shape == (2, 19, 16, 16) and feature.shape == (2, 768, 16, 16)
    expected = {f"linear_c{i}.proj.{k}" for i in range(1, 5) for k in ("weight", "bias")}
    expected |= _conv_bn("linear_fuse") | {"linear_pred.weight", "linear_pred.bias"}
    assert set(head.state_dict()) == expected
    # SegFormer Table 1 decoder sizes, to the paper's 0.1 M (150 ADE20K classes): B5 3.3 M, B0 0.4 M
    assert round((_params(head) + 131 * 769) / 1e6, 1) == 3.3
    b0 = build_head("segformer", in_channels=[32, 64, 160, 256], num_classes=150, embed_dim=256)
    assert round(_params(b0) / 1e6, 1) == 0.4


def test_segformer_fuses_deepest_stage_first() -> None:
    """NVlabs' ``linear_fuse`` weights expect the concatenation order c4, c3, c2, c1."""
    head = build_head("segformer", in_channels=[8, 16, 24, 32], num_classes=5, embed_dim=4).eval()
    feats = _features([8, 16, 24, 32], size=8)
    seen: list[Tensor] = []
    head.linear_fuse.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    head(feats)
    c4 = F.interpolate(head.linear_c4(feats[3]), size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seen[0][:, :4], c4)
    torch.testing.assert_close(seen[0][:, 12:], head.linear_c1(feats[0]))


# ------------------------------------------------------------------------------------------ projection
def test_projection_head_is_unit_norm_512() -> None:
    """atp.md §7: projection 512×H/4×W/4 with unit norm; 1024 → 256 → 512 with BN + ReLU."""
    head: ProjectionHead = build_head("atp_projection", in_channels=B5_CHANNELS, num_classes=19).eval()
    out = head(_features(B5_CHANNELS))
    assert out.shape == (2, 512, 16, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 16, 16))
    assert (out >= 0).all()  # ReLU before the normalisation
    assert set(head.state_dict()) == _conv_bn("convs.0") | _conv_bn("convs.1")
    assert head.convs[0].conv.weight.shape == (256, 1024, 1, 1)
    assert head.convs[1].conv.weight.shape == (512, 256, 1, 1)


def test_projection_input_is_all_stages_resized_and_concatenated() -> None:
    head = build_head("atp_projection", in_channels=[4, 8], channels=6).eval()
    feats = [torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)]
    seen: list[Tensor] = []
    head.convs.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    head(feats)
    up = F.interpolate(feats[1], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seen[0], torch.cat([feats[0], up], dim=1))


# --------------------------------------------------------------------------------------------- presets
def test_tiny_atp_preset_outputs() -> None:
    model = build_model("tiny-atp-daformer").eval()
    assert model.output_stride == 4
    out = model.forward_features(torch.randn(2, 3, 64, 128))
    assert out["logits"].shape == (2, 19, 16, 32)
    assert out["feature"].shape == (2, 64, 16, 32)
    assert out["aux"].shape == (2, 64, 16, 32)
    torch.testing.assert_close(out["aux"].norm(dim=1), torch.ones(2, 16, 32))


def test_full_presets_describe_the_published_models() -> None:
    with torch.device("meta"):
        atp = build_model("atp-daformer-mitb5")
        segformer = build_model("segformer-b5")
    assert load_preset("atp-daformer-mitb5").crop == (640, 640)
    assert atp.auxiliary_head.channels == 512 and atp.decode_head.feature_channels == 256
    assert _params(atp.backbone) == 81_443_008
    assert segformer.decode_head.feature_channels == 768
    assert _params(segformer) == pytest.approx(84.7e6, rel=0.002)  # SegFormer-B5, Cityscapes: 84.7 M


@pytest.mark.slow
def test_atp_daformer_mitb5_shapes_at_640() -> None:
    """atp.md §7: stages 64×160² … 512×20²; logits 19×160²; projection 512×160², unit norm."""
    model = build_model("atp-daformer-mitb5").eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 640, 640))
        logits, feature = model.decode_head(feats)
        proj = model.auxiliary_head(feats)
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 160, 160),
        (128, 80, 80),
        (320, 40, 40),
        (512, 20, 20),
    ]
    assert logits.shape == (1, 19, 160, 160) and feature.shape == (1, 256, 160, 160)
    assert proj.shape == (1, 512, 160, 160)
    torch.testing.assert_close(proj.norm(dim=1), torch.ones(1, 160, 160))


# ------------------------------------------------------------------------------------------ checkpoints
def test_atp_segmentor_checkpoint_round_trip(tmp_path) -> None:
    """An ATP/DAFormer-style release (mmseg keys under ``model.``/``ema_model.``) loads strictly, same outputs."""
    torch.manual_seed(0)
    source = build_model("tiny-atp-daformer")
    _randomise_bn_stats(source)
    source.eval()
    fmt = get_format("mmseg-segmentor")
    student = fmt.to_external(source.state_dict())
    assert {
        "decode_head.embed_layers.0.proj.weight",
        "decode_head.fuse_layer.bottleneck.conv.weight",
        "decode_head.conv_seg.weight",
        "auxiliary_head.convs.1.bn.running_var",
        "backbone.block1.0.attn.kv.weight",
    } <= set(student)
    teacher = {k: v + 1 if v.is_floating_point() else v for k, v in student.items()}
    state = {f"model.{k}": v for k, v in student.items()} | {f"ema_model.{k}": v for k, v in teacher.items()}
    path = tmp_path / "atp_propagating.pth"
    torch.save({"state_dict": state, "meta": {"iter": 40000}}, path)

    with pytest.raises(UserError, match="several models"):
        load_checkpoint(build_model("tiny-atp-daformer"), path)
    torch.manual_seed(1)
    target = build_model("tiny-atp-daformer")
    report = load_checkpoint(target, path, prefix="model.")
    assert report.ok and report.dropped == []
    target.eval()
    x = torch.randn(1, 3, 64, 64)
    a, b = source.forward_features(x), target.forward_features(x)
    for key in ("logits", "feature", "aux"):
        assert torch.equal(a[key], b[key]), key


def test_segformer_segmentor_checkpoint_drops_unused_conv_seg(tmp_path) -> None:
    torch.manual_seed(0)
    source = build_model("tiny-segformer")
    _randomise_bn_stats(source)
    source.eval()
    external = get_format("segformer-segmentor").to_external(source.state_dict())
    external["decode_head.conv_seg.weight"] = torch.randn(19, 64, 1, 1)  # mmseg leftover in the release
    external["decode_head.conv_seg.bias"] = torch.randn(19)
    path = tmp_path / "segformer.b0.city.pth"
    torch.save({"state_dict": external}, path)

    target = build_model("tiny-segformer")
    report = load_checkpoint(target, path)  # auto-detected: the specific layout wins over generic mmseg
    assert report.format == "segformer-segmentor"
    assert report.ok and sorted(report.dropped) == [
        "decode_head.conv_seg.bias",
        "decode_head.conv_seg.weight",
    ]
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(source(x), target.eval()(x))

    # read as a plain mmseg segmentor, the leftover is unexpected
    with pytest.raises(UserError, match="conv_seg"):
        load_checkpoint(build_model("tiny-segformer"), path, format="mmseg-segmentor")
