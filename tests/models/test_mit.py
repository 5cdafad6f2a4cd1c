"""MiT encoders (atp.md §8): architecture facts, the official formulation, checkpoint import."""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adaptseg.errors import UserError
from adaptseg.models.backbones.mit import (
    MIT_CONFIGS,
    Block,
    EfficientSelfAttention,
    MixVisionTransformer,
    OverlapPatchEmbed,
    build_mit,
    drop_path,
)
from adaptseg.models.checkpoint import get_format, load_checkpoint
from adaptseg.models.presets import build_model
from adaptseg.models.registry import build_backbone, build_head
from adaptseg.models.segmentor import Segmentor


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@cache
def _mit(name: str) -> MixVisionTransformer:
    """Structure only: built once on the meta device (no memory, no init time); tests must not modify it."""
    with torch.device("meta"):
        return build_mit(name)


@pytest.fixture(scope="module")
def tiny() -> MixVisionTransformer:
    torch.manual_seed(0)
    return build_backbone("mit_tiny").eval()


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size", [(64, 96), (65, 99)])
def test_tiny_stage_shapes_and_strides(tiny: MixVisionTransformer, size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    feats = tiny(x)
    assert tiny.out_channels == [16, 32, 64, 128]
    assert tiny.out_strides == [4, 8, 16, 32]
    h, w = size
    for f, c in zip(feats, tiny.out_channels, strict=True):
        # each overlapping embed is a conv with padding k // 2: out = floor((in - 1) / stride) + 1
        h, w = (h - 1) // (4 if c == 16 else 2) + 1, (w - 1) // (4 if c == 16 else 2) + 1
        assert f.shape == (2, c, h, w)
    assert [f.shape[-1] for f in tiny(torch.randn(1, 3, 64, 96))] == [96 // s for s in tiny.out_strides]


def test_backward_reaches_every_parameter() -> None:
    model = build_backbone("mit_tiny", drop_path_rate=0.0)  # stochastic depth could drop a whole branch
    sum(f.square().mean() for f in model(torch.randn(2, 3, 32, 64))).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


@pytest.mark.slow
def test_mit_b5_stage_shapes_at_640() -> None:
    """atp.md §7: stages 64×160², 128×80², 320×40², 512×20² for a 640² crop."""
    model = build_backbone("mit_b5").eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 640, 640))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 160, 160),
        (128, 80, 80),
        (320, 40, 40),
        (512, 20, 20),
    ]
    assert all(torch.isfinite(f).all() for f in feats)


# -------------------------------------------------------------------------------------- architecture
def test_parameter_counts_match_segformer() -> None:
    """SegFormer (Xie et al. 2021) Table 1 encoder sizes: MiT-B5 81.4 M, MiT-B0 3.3/3.4 M (paper rounds)."""
    assert _params(_mit("mit_b5")) == 81_443_008  # 81.4 M
    assert _params(_mit("mit_b0")) == 3_319_392  # 3.3 M
    assert _params(build_mit("mit_b2")) == pytest.approx(24.2e6, rel=0.01)
    assert 0.5e6 < _params(build_mit("mit_tiny")) < 1e6


@pytest.mark.parametrize("name", ["mit_b0", "mit_b1", "mit_b5"])
def test_architecture_of_published_sizes(name: str) -> None:
    cfg = MIT_CONFIGS[name]
    model = _mit(name)
    assert model.depths == list(cfg.depths)
    assert [len(getattr(model, f"block{i}")) for i in range(1, 5)] == list(cfg.depths)
    for i, (dim, heads, sr) in enumerate(zip(cfg.embed_dims, cfg.num_heads, cfg.sr_ratios, strict=True), 1):
        embed: OverlapPatchEmbed = getattr(model, f"patch_embed{i}")
        kernel, stride = (7, 4) if i == 1 else (3, 2)
        assert embed.proj.kernel_size == (kernel, kernel) and embed.proj.stride == (stride, stride)
        assert embed.proj.padding == (kernel // 2, kernel // 2)
        block: Block = getattr(model, f"block{i}")[0]
        assert block.attn.num_heads == heads and block.attn.q.bias is not None
        assert block.mlp.fc1.out_features == 4 * dim
        assert block.mlp.dwconv.dwconv.groups == 4 * dim and block.mlp.dwconv.dwconv.kernel_size == (3, 3)
        if sr > 1:
            assert block.attn.sr.kernel_size == (sr, sr) and block.attn.sr.stride == (sr, sr)
        else:
            assert not hasattr(block.attn, "sr") and not hasattr(block.attn, "norm")
    assert MIT_CONFIGS["mit_b5"].depths == (3, 6, 40, 3)
    assert MIT_CONFIGS["mit_b5"].embed_dims == (64, 128, 320, 512)


def test_layernorm_eps() -> None:
    """1e-6 in blocks and stage-end norms; PyTorch's 1e-5 in patch-embed and spatial-reduction norms."""
    model = _mit("mit_b0")
    eps = {name: m.eps for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    embed_or_sr = {n for n in eps if n.startswith("patch_embed") or n.endswith("attn.norm")}
    assert embed_or_sr >= {
        "patch_embed1.norm",
        "patch_embed4.norm",
        "block1.0.attn.norm",
        "block3.1.attn.norm",
    }
    assert all(eps[n] == 1e-5 for n in embed_or_sr)
    rest = set(eps) - embed_or_sr
    assert rest >= {"norm1", "norm4", "block1.0.norm1", "block4.1.norm2"}
    assert all(eps[n] == 1e-6 for n in rest)


def test_drop_path_schedule_is_linear_over_all_blocks() -> None:
    model = _mit("mit_b5")
    rates = model.drop_path_rates()
    assert len(rates) == 52
    assert rates == pytest.approx([0.1 * i / 51 for i in range(52)], abs=1e-7)
    assert model.block3[0].drop_path.drop_prob == pytest.approx(0.1 * 9 / 51, abs=1e-7)
    assert build_mit("mit_tiny", drop_path_rate=0.0).drop_path_rates() == [0.0] * 8


def test_drop_path_drops_whole_samples_and_keeps_the_mean() -> None:
    x = torch.ones(4000, 3, 2)
    assert drop_path(x, 0.3, training=False) is x
    torch.manual_seed(0)
    out = drop_path(x, 0.3, training=True)
    per_sample = out.flatten(1)
    values = per_sample.unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.7)
    assert (per_sample.min(1).values == per_sample.max(1).values).all()  # a sample is dropped whole
    assert (per_sample[:, 0] == 0).float().mean() == pytest.approx(0.3, abs=0.03)
    assert out.mean() == pytest.approx(1.0, abs=0.05)


def test_stochastic_depth_only_in_training() -> None:
    model = build_mit("mit_tiny", drop_path_rate=0.5)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    a, b = model(x)[-1], model(x)[-1]
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(1)
    c = model(x)[-1]
    torch.manual_seed(2)
    assert not torch.allclose(c, model(x)[-1])


# ------------------------------------------------------------------------- official formulation
def test_attention_matches_segformer_formulation() -> None:
    """softmax(q·kᵀ·d^-½)·v with K/V from the SR conv + LN of the map, the kv Linear split as (k, v) × heads."""
    torch.manual_seed(0)
    attn = EfficientSelfAttention(dim=32, num_heads=2, sr_ratio=2).eval()
    n, h, w, c = 2, 6, 8, 32
    x = torch.randn(n, h * w, c)
    q = attn.q(x).reshape(n, h * w, 2, c // 2).permute(0, 2, 1, 3)
    reduced = attn.sr(x.permute(0, 2, 1).reshape(n, c, h, w)).reshape(n, c, -1).permute(0, 2, 1)
    kv = attn.kv(attn.norm(reduced)).reshape(n, -1, 2, 2, c // 2).permute(2, 0, 3, 1, 4)
    weights = (q @ kv[0].transpose(-2, -1) * (c // 2) ** -0.5).softmax(-1)
    expected = attn.proj((weights @ kv[1]).transpose(1, 2).reshape(n, h * w, c))
    torch.testing.assert_close(attn(x, h, w), expected, rtol=1e-5, atol=1e-6)


def test_block_is_prenorm_with_mix_ffn() -> None:
    torch.manual_seed(0)
    block = Block(dim=16, num_heads=1, sr_ratio=1, mlp_ratio=4, drop_path=0.0).eval()
    h, w = 4, 5
    x = torch.randn(1, h * w, 16)
    y = x + block.attn(block.norm1(x), h, w)
    hidden = block.mlp.fc1(block.norm2(y)).transpose(1, 2).reshape(1, 64, h, w)
    hidden = F.gelu(block.mlp.dwconv.dwconv(hidden)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(block(x, h, w), y + block.mlp.fc2(hidden))


def test_init_follows_segformer() -> None:
    model = build_mit("mit_b0")
    fc1 = model.block2[0].mlp.fc1
    assert fc1.weight.std().item() == pytest.approx(0.02, rel=0.05) and fc1.weight.abs().max() <= 2.0
    assert torch.count_nonzero(fc1.bias) == 0
    dw = model.block2[0].mlp.dwconv.dwconv  # fan_out = 3·3·C/groups = 9
    assert dw.weight.std().item() == pytest.approx(math.sqrt(2 / 9), rel=0.05)
    assert torch.equal(model.norm2.weight, torch.ones(64))


# -------------------------------------------------------------------------------- checkpoint import
def _tiny_segmentor() -> Segmentor:
    return build_model("tiny-daformer").eval()


@pytest.mark.parametrize("wrapper", [None, "state_dict"])
def test_segformer_imagenet_checkpoint_round_trip(tmp_path, wrapper: str | None) -> None:
    """A ``mit_b*.pth``-layout file (bare keys + ImageNet ``head.*``) loads strictly into the backbone."""
    torch.manual_seed(0)
    source = _tiny_segmentor()
    fmt = get_format("segformer-mit")
    external = fmt.to_external(source.state_dict())
    assert "patch_embed1.proj.weight" in external and "block1.0.attn.kv.weight" in external
    assert "block1.0.mlp.dwconv.dwconv.weight" in external and "norm4.bias" in external
    assert not any(k.startswith(("backbone.", "decode_head.")) for k in external)
    external["head.weight"], external["head.bias"] = torch.randn(1000, 128), torch.randn(1000)
    path = tmp_path / "mit_tiny.pth"
    torch.save({wrapper: external} if wrapper else external, path)

    torch.manual_seed(1)
    target = _tiny_segmentor()
    report = load_checkpoint(target, path, partial=True)
    assert report.format == "segformer-mit"
    assert sorted(report.dropped) == ["head.bias", "head.weight"]
    assert report.unexpected == [] and report.mismatched == []
    assert report.missing and all(k.startswith("decode_head.") for k in report.missing)
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(source.backbone(x), target.backbone(x), strict=True):
        assert torch.equal(a, b)

    with pytest.raises(UserError, match="missing"):  # strict without partial names the head's tensors
        load_checkpoint(_tiny_segmentor(), path)


def test_segformer_imagenet_checkpoint_into_wrong_size_names_keys(tmp_path) -> None:
    external = get_format("segformer-mit").to_external(_tiny_segmentor().state_dict())
    path = tmp_path / "mit.pth"
    torch.save(external, path)
    backbone = build_backbone("mit_b0")
    head = build_head(
        "daformer", in_channels=backbone.out_channels, num_classes=19, channels=32, embed_dims=32
    )
    with pytest.raises(UserError, match=r"differ in shape, e\.g\. backbone\.patch_embed1\.proj\.weight"):
        load_checkpoint(Segmentor(backbone, head, num_classes=19, output_stride=4), path, partial=True)
