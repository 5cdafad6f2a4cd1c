"""Mix Transformer (MiT) encoders of SegFormer, B0–B5, plus a tiny variant for CPU tests.

Implements ``shared/methods/atp.md`` §8 (the encoder DAFormer and ATP use as ``mit_b5``):
overlapping patch embeds (7×7/4 then 3×3/2, conv + LayerNorm), pre-norm blocks with efficient
self-attention (keys/values spatially reduced by a stride-R conv + LayerNorm), Mix-FFN
(Linear → 3×3 depthwise conv → GELU → Linear), stochastic depth rising linearly over all blocks,
and a LayerNorm at the end of every stage.  LayerNorm eps is 1e-6 in the blocks and stage-end norms
and PyTorch's default 1e-5 in the patch-embed and spatial-reduction norms, as in the release.

Parameter names equal SegFormer's (``patch_embed1.proj.weight``, ``block1.0.attn.kv.weight``,
``block1.0.mlp.dwconv.dwconv.weight``, ``norm1.weight``, …), so ``mit_b*.pth`` and the ``backbone.*``
part of DAFormer/ATP checkpoints load with no renaming.

Stage outputs are ``N×C×H×W`` views of the token tensors (channels-last memory layout, no copy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptseg.models.registry import register_backbone

BLOCK_NORM_EPS = 1e-6  # blocks and stage-end norms (SegFormer's partial(nn.LayerNorm, eps=1e-6))
EMBED_NORM_EPS = 1e-5  # patch-embed and spatial-reduction norms (nn.LayerNorm default)


def drop_path(x: Tensor, prob: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``prob``, rescale the rest."""
    if prob == 0.0 or not training:
        return x
    keep = 1.0 - prob
    mask = x.new_empty([x.shape[0]] + [1] * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (the probability is stored as ``drop_prob``, as in timm)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4f}"


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows (padding = kernel // 2), then LayerNorm over channels."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=EMBED_NORM_EPS)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        """``N×C×H×W`` image or feature map → ``(tokens N×(h·w)×D, h, w)``."""
        x = self.proj(x)
        h, w = x.shape[2], x.shape[3]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


def tokens_to_map(x: Tensor, h: int, w: int) -> Tensor:
    """``N×(h·w)×C`` tokens → ``N×C×h×w`` view (channels-last memory layout, no copy)."""
    return x.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a map downsampled ``sr_ratio`` times.

    ``sr`` is a conv with kernel = stride = ``sr_ratio`` followed by ``norm`` (LayerNorm, eps 1e-5);
    both are absent at ratio 1.  Scale is head_dim^-½.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=EMBED_NORM_EPS)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        n, length, dim = x.shape
        q = self.q(x).reshape(n, length, self.num_heads, -1).transpose(1, 2)
        if hasattr(self, "sr"):  # a compile-time check under TorchScript
            reduced = self.sr(tokens_to_map(x, h, w))
            x = self.norm(reduced.flatten(2).transpose(1, 2))
        kv = self.kv(x).reshape(n, x.shape[1], 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class DWConv(nn.Module):
    """3×3 depthwise conv applied to a token sequence laid out as an ``h×w`` map."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.dwconv(tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Mix-FFN: Linear → 3×3 depthwise conv → GELU → Linear (the conv supplies positional information)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``, each with drop-path."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


@dataclass(frozen=True)
class MiTConfig:
    """Architecture of one MiT size (per-stage lists, shallow to deep)."""

    embed_dims: tuple[int, ...]
    num_heads: tuple[int, ...]
    depths: tuple[int, ...]
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratio: float = 4.0


# SegFormer's released sizes (NVlabs/SegFormer mix_transformer.py); B1–B5 differ only in depth.
MIT_CONFIGS: dict[str, MiTConfig] = {
    "mit_b0": MiTConfig((32, 64, 160, 256), (1, 2, 5, 8), (2, 2, 2, 2)),
    "mit_b1": MiTConfig((64, 128, 320, 512), (1, 2, 5, 8), (2, 2, 2, 2)),
    "mit_b2": MiTConfig((64, 128, 320, 512), (1, 2, 5, 8), (3, 4, 6, 3)),
    "mit_b3": MiTConfig((64, 128, 320, 512), (1, 2, 5, 8), (3, 4, 18, 3)),
    "mit_b4": MiTConfig((64, 128, 320, 512), (1, 2, 5, 8), (3, 8, 27, 3)),
    "mit_b5": MiTConfig((64, 128, 320, 512), (1, 2, 5, 8), (3, 6, 40, 3)),
    # not a published size: B0's layout (depth 2 per stage) at half width, for CPU tests and MiniCity
    "mit_tiny": MiTConfig((16, 32, 64, 128), (1, 2, 4, 8), (2, 2, 2, 2)),
}


class MixVisionTransformer(nn.Module):
    """The MiT encoder: four stages at strides 4/8/16/32, ``forward(x)`` → one feature map per stage.

    Args:
        embed_dims, num_heads, depths, sr_ratios: per-stage architecture (see :data:`MIT_CONFIGS`).
        mlp_ratio: Mix-FFN hidden width as a multiple of the stage width.
        drop_path_rate: stochastic-depth probability of the last block; it rises linearly from 0 over
            all blocks (0.1 in SegFormer/DAFormer/ATP).
        in_channels: input image channels.
    """

    def __init__(
        self,
        embed_dims: Sequence[int],
        num_heads: Sequence[int],
        depths: Sequence[int],
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        in_channels: int = 3,
    ):
        super().__init__()
        if not len(embed_dims) == len(num_heads) == len(depths) == len(sr_ratios) == 4:
            raise ValueError(
                "MiT has four stages: embed_dims, num_heads, depths, sr_ratios need 4 entries each"
            )
        self.depths = list(depths)
        self.out_channels = list(embed_dims)
        self.out_strides = [4, 8, 16, 32]
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        prev, first = in_channels, 0
        for i, (dim, heads, depth, sr) in enumerate(
            zip(embed_dims, num_heads, depths, sr_ratios, strict=True)
        ):
            patch, stride = (7, 4) if i == 0 else (3, 2)
            self.add_module(f"patch_embed{i + 1}", OverlapPatchEmbed(prev, dim, patch, stride))
            blocks = [Block(dim, heads, sr, mlp_ratio, rates[first + j]) for j in range(depth)]
            self.add_module(f"block{i + 1}", nn.ModuleList(blocks))
            self.add_module(f"norm{i + 1}", nn.LayerNorm(dim, eps=BLOCK_NORM_EPS))
            prev, first = dim, first + depth
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        # Unrolled over the four stages (rather than a loop over getattr names) so that TorchScript can
        # compile it while the attribute names stay those of the released checkpoints.
        x, h, w = self.patch_embed1(x)
        for block in self.block1:
            x = block(x, h, w)
        c1 = tokens_to_map(self.norm1(x), h, w)
        x, h, w = self.patch_embed2(c1)
        for block in self.block2:
            x = block(x, h, w)
        c2 = tokens_to_map(self.norm2(x), h, w)
        x, h, w = self.patch_embed3(c2)
        for block in self.block3:
            x = block(x, h, w)
        c3 = tokens_to_map(self.norm3(x), h, w)
        x, h, w = self.patch_embed4(c3)
        for block in self.block4:
            x = block(x, h, w)
        return [c1, c2, c3, tokens_to_map(self.norm4(x), h, w)]

    def drop_path_rates(self) -> list[float]:
        """The stochastic-depth probability of every block, in order (for inspection and tests)."""
        return [block.drop_path.drop_prob for i in range(1, 5) for block in getattr(self, f"block{i}")]


def _init_weights(m: nn.Module) -> None:
    """SegFormer's from-scratch init: trunc-normal(0.02) linears, unit LayerNorms, He-normal (fan-out) convs."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_mit(name: str, *, drop_path_rate: float = 0.1, in_channels: int = 3) -> MixVisionTransformer:
    """Build the MiT size ``name`` (a key of :data:`MIT_CONFIGS`)."""
    cfg = MIT_CONFIGS[name]
    return MixVisionTransformer(
        cfg.embed_dims, cfg.num_heads, cfg.depths, cfg.sr_ratios, cfg.mlp_ratio, drop_path_rate, in_channels
    )


def _register(name: str) -> None:
    def builder(*, drop_path_rate: float = 0.1, in_channels: int = 3) -> MixVisionTransformer:
        return build_mit(name, drop_path_rate=drop_path_rate, in_channels=in_channels)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"MiT encoder '{name}': {MIT_CONFIGS[name]}."
    register_backbone(name)(builder)


for _name in MIT_CONFIGS:
    _register(_name)
