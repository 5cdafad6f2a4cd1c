"""EnD's student loss: class-balance weights, the hard-pixel filter and the class-weighted CE (end.md §4).

* **Rare-class weight** (``--class-balance``, :func:`rare_class_weights`): per iteration, on the cropped
  batch labels, ``w_c = max_value`` (7) if class c has fewer than ``pixels_per_image·B`` pixels
  (64·64 per image), else 1.
* **Often balance** (``--often-balance``, :class:`AbsentClassWeights`): ``o_c = max_value`` if class c is
  absent from the batch, else 1, folded into a persistent EMA ``ō ← 0.9·ō + 0.1·o`` (ō starts at 1). A
  class absent k iterations in a row has ``ō = 7 − 6·0.9^k``. The weight is ``W_c = w_c·ō_c`` (up to 49).
* **Hard-pixel filter** (``--only-hard-label 80``, on by default in the release, :func:`hard_pixel_labels`):
  ``ℓ_i = W_{y_i}·(−log p_{y_i})`` (0 on ignored pixels); ``τ_h`` = the 80th percentile (linear
  interpolation) of ℓ over **all** B·H·W pixels, ignored ones included; labels with ``ℓ_i < τ_h`` become
  255 (``ℓ_i = τ_h`` is kept).
* **Loss** (:func:`class_weighted_cross_entropy`): ``Σ W_{y_i}·ℓ_i / Σ W_{y_i}`` over the labelled pixels
  that remain (``torch.nn.CrossEntropyLoss(weight=W, ignore_index=255)``).

The pixel counts ``n_c`` are taken before the filter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptseg.data.labels import IGNORE_INDEX

RARE_CLASS_WEIGHT = 7.0
#: a class is rare below this many pixels per image of the batch (64·64)
RARE_PIXELS_PER_IMAGE = 64 * 64
OFTEN_MOMENTUM = 0.9
HARD_PIXEL_PERCENTILE = 80.0


def class_pixel_counts(labels: Tensor, num_classes: int) -> Tensor:
    """Pixels per class in N×H×W labels (ignored pixels not counted), as a float C-vector."""
    valid = labels[labels != IGNORE_INDEX].long()
    return torch.bincount(valid, minlength=num_classes)[:num_classes].float()


def rare_class_weights(
    counts: Tensor,
    batch_size: int,
    *,
    max_value: float = RARE_CLASS_WEIGHT,
    pixels_per_image: int = RARE_PIXELS_PER_IMAGE,
) -> Tensor:
    """``w_c = max_value`` where ``n_c < pixels_per_image·batch_size``, else 1."""
    rare = counts < pixels_per_image * batch_size
    return torch.where(rare, torch.full_like(counts, max_value), torch.ones_like(counts))


class AbsentClassWeights:
    """The often-balance EMA ``ō`` (module docstring): classes missing from recent batches weigh more."""

    def __init__(
        self, num_classes: int, *, max_value: float = RARE_CLASS_WEIGHT, momentum: float = OFTEN_MOMENTUM
    ):
        self.max_value = max_value
        self.momentum = momentum
        self.weights = torch.ones(num_classes)

    def update(self, counts: Tensor) -> Tensor:
        """Fold in one batch's pixel counts; returns the new ``ō``."""
        absent = torch.where(
            counts == 0, torch.full_like(self.weights, self.max_value), torch.ones_like(self.weights)
        )
        self.weights = self.momentum * self.weights + (1.0 - self.momentum) * absent.to(self.weights)
        return self.weights

    def state_dict(self) -> dict[str, Tensor]:
        return {"weights": self.weights.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.weights = state["weights"].clone().float()


def hard_pixel_labels(
    per_pixel_loss: Tensor, labels: Tensor, percentile: float = HARD_PIXEL_PERCENTILE
) -> Tensor:
    """``labels`` with every pixel whose weighted loss is below the ``percentile``-th percentile set to 255.

    ``per_pixel_loss`` must be 0 on ignored pixels; they count in the percentile (module docstring).
    """
    threshold = torch.quantile(per_pixel_loss.detach().flatten().float(), percentile / 100.0)
    return labels.masked_fill(per_pixel_loss.detach() < threshold, IGNORE_INDEX)


def weighted_pixel_losses(logits: Tensor, labels: Tensor, class_weights: Tensor) -> Tensor:
    """``W_{y_i}·(−log p_{y_i})`` per pixel (N×H×W), 0 on ignored pixels."""
    losses = F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_INDEX, reduction="none")
    safe = labels.long().clamp(max=class_weights.numel() - 1)
    return losses * class_weights.to(losses)[safe] * (labels != IGNORE_INDEX)


def class_weighted_cross_entropy(logits: Tensor, labels: Tensor, class_weights: Tensor) -> Tensor:
    """``Σ W_{y_i}·ℓ_i / Σ W_{y_i}`` over labelled pixels; 0 (with a graph) when none is labelled."""
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(
        logits.float(),
        labels.long(),
        weight=class_weights.to(logits.device).float(),
        ignore_index=IGNORE_INDEX,
    )
