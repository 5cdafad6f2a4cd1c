"""Source-only training: supervised cross-entropy on the labelled source stream (stage 0 of every method).

The seeds train their source models with the usual supervised recipe; what differs is only the loss
normalisation and the data/optimiser settings in the recipes (``train/source_only/*.yaml``):

* DAFormer / DDB / ATP (mmseg 0.x): CE averaged over **all** pixels, ignored ones included
  (``loss_normalize: all_pixels``, the default).
* UMMA stage 0 / DecoupleNet (plain PyTorch ``CrossEntropyLoss(ignore_index=255)``): averaged over
  **valid** pixels (``loss_normalize: valid_pixels``).

Logits are upsampled bilinearly to the label size (``align_corners`` as the seed did) before the loss.
"""

from __future__ import annotations

from torch import Tensor

from adaptseg.config import StrictModel
from adaptseg.errors import UserError
from adaptseg.methods.base import Batch, Method, register_method
from adaptseg.methods.parts.losses import CENormalize, cross_entropy


class SourceOnlyOptions(StrictModel):
    loss_normalize: CENormalize = "all_pixels"
    align_corners: bool = False


@register_method("source_only")
class SourceOnly(Method):
    """Train the student on labelled source batches with cross-entropy."""

    Options = SourceOnlyOptions
    streams = ("source",)
    options: SourceOnlyOptions

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        source = batch["source"]
        if "label" not in source:
            raise UserError(
                "source_only needs labels on the source stream", fix="set data.source.labels: true"
            )
        logits = self.models["student"](source["image"])
        loss = cross_entropy(
            logits,
            source["label"],
            normalize=self.options.loss_normalize,
            align_corners=self.options.align_corners,
        )
        return {"ce": loss}
