"""The segmentor: backbone + decode head (+ optional auxiliary heads).

Attribute names follow mmseg's ``EncoderDecoder`` (``backbone``, ``decode_head``, ``auxiliary_head``)
so that full mmseg-style checkpoints (DDB, DAFormer, ATP releases) map onto it with few renames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Segmentor(nn.Module):
    """``forward(x)`` → logits at the output stride; ``forward_features(x)`` → everything methods need.

    Args:
        backbone: returns a list of stage features.
        decode_head: ``forward(features) -> (logits, feature)``.
        auxiliary_head: optional, e.g. ATP's projection head; ``forward(features) -> Tensor``
            or ``(out, feature)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: nn.Module,
        auxiliary_head: nn.Module | None = None,
        *,
        num_classes: int,
        output_stride: int,
    ):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.num_classes = num_classes
        self.output_stride = output_stride

    def forward(self, x: Tensor) -> Tensor:
        logits, _ = self.decode_head(self.backbone(x))
        return logits

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Logits, the head's feature (prototype space) and, if present, the auxiliary output."""
        feats = self.backbone(x)
        logits, feature = self.decode_head(feats)
        out = {"logits": logits, "feature": feature}
        if self.auxiliary_head is not None:
            aux = self.auxiliary_head(feats)
            out["aux"] = aux[0] if isinstance(aux, tuple) else aux
        return out

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Class map at input resolution (bilinear upsampling of the logits, align_corners=False)."""
        logits = self(x)
        logits = nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(1)
