"""SegFormer's all-MLP decode head.

Each stage is embedded by a Linear to ``embed_dim`` channels, resized to the first stage's size (1/4),
concatenated deepest first (c4, c3, c2, c1 — the order the release's ``linear_fuse`` weights expect),
fused by a 1×1 conv + BN + ReLU, then Dropout2d and a 1×1 classifier.  ``embed_dim`` is 256 for B0 and
768 for B1–B5.

Parameter names follow NVlabs/SegFormer (``linear_c1.proj``…``linear_c4.proj``, ``linear_fuse.conv``,
``linear_fuse.bn``, ``linear_pred``) so ``decode_head.*`` of SegFormer's released segmentors loads
without renaming (their unused ``decode_head.conv_seg`` is dropped by the checkpoint map).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adaptseg.models.heads.daformer import LinearEmbed, resize_to
from adaptseg.models.layers import ConvModule, kaiming_init
from adaptseg.models.registry import register_head


class SegFormerHead(nn.Module):
    """``forward(features)`` → ``(logits at 1/4, fused embedding before dropout)``.

    Args:
        in_channels: channels of the four backbone stages.
        num_classes: classifier outputs.
        embed_dim: width of the stage embeddings and of the fused feature.
        dropout_ratio: Dropout2d before the classifier.
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, embed_dim: int = 256, dropout_ratio: float = 0.1
    ):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"the SegFormer head takes four stages, got {len(in_channels)}")
        for i, c in enumerate(in_channels, start=1):
            self.add_module(f"linear_c{i}", LinearEmbed(c, embed_dim))
        self.linear_fuse = ConvModule(4 * embed_dim, embed_dim, 1)
        kaiming_init(self.linear_fuse)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        self.feature_channels = embed_dim
        self.output_index = 0  # logits at the first (stride-4) stage's resolution
        nn.init.normal_(self.linear_pred.weight, 0.0, 0.01)
        nn.init.zeros_(self.linear_pred.bias)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        size = features[0].shape[-2:]
        c4 = resize_to(self.linear_c4(features[3]), size)
        c3 = resize_to(self.linear_c3(features[2]), size)
        c2 = resize_to(self.linear_c2(features[1]), size)
        c1 = self.linear_c1(features[0])
        fused = self.linear_fuse(torch.cat([c4, c3, c2, c1], dim=1))
        return self.linear_pred(self.dropout(fused)), fused


@register_head("segformer")
def segformer(
    *, in_channels: Sequence[int], num_classes: int, embed_dim: int = 256, dropout_ratio: float = 0.1
) -> SegFormerHead:
    """SegFormer all-MLP head; options as :class:`SegFormerHead`."""
    return SegFormerHead(in_channels, num_classes, embed_dim, dropout_ratio)
