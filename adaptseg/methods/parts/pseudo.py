"""Pseudo-labels and their weights: teacher argmax, DACS quality weight, ×s labels.

Spec rules implemented here:

* ddb.md §3 ST step 3 and atp.md §3 "EMA teacher": hard pseudo-labels ``ŷ = argmax softmax(z)`` with the
  confidence ``max softmax(z)`` (:func:`teacher_pseudo_labels`).
* ddb.md §3 ST step 3 / atp.md §3 ``pseudo_weight`` (DACS quality weight, :func:`quality_weight`):
  ``q`` = the fraction of pixels **in the whole batch** whose max probability is ``≥ 0.968``
  (inclusive) — one scalar per batch.
* atp.md §3 ``plcrop`` (:func:`pseudo_weight_map`): ``q`` broadcast to every pixel, with the top 15 and
  bottom 120 rows set to 0 (rows 0–14 and 520–639 of a 640-row crop). DDB disables it (0/0 rows).
* atp.md §3 P.2 (SePiCo ``downscale_label_ratio``, :func:`downscale_label_ratio`): labels down-sampled
  ×s by average-pooling the one-hot map with 255 as an extra bin; a cell keeps its majority class if its
  share is ``≥ 0.75`` (12/16 of a 4×4 cell), else 255 (11/16 → 255).

Quirk switches: none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptseg.data.labels import IGNORE_INDEX

QUALITY_THRESHOLD = 0.968
PLCROP_TOP = 15  # atp.md §3: rows 0–14 get weight 0
PLCROP_BOTTOM = 120  # atp.md §3: the last 120 rows get weight 0
LABEL_SHARE_MIN = 0.75


@torch.no_grad()
def teacher_pseudo_labels(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(confidence, label)`` = max and argmax over classes of ``softmax(logits)`` (N×C×H×W → N×H×W).

    Computed without gradient (the labels are targets, never trained through).
    """
    probs = torch.softmax(logits.detach().float(), dim=1)
    confidence, label = probs.max(dim=1)
    return confidence, label


def quality_weight(confidence: Tensor, threshold: float = QUALITY_THRESHOLD) -> Tensor:
    """DACS quality weight: the share of **all** pixels in the batch with ``confidence ≥ threshold``.

    Returns a 0-d float tensor (one scalar per batch; ddb.md §3 ST step 3, atp.md §3).
    """
    return (confidence >= threshold).float().mean()


def pseudo_weight_map(
    confidence: Tensor,
    threshold: float = QUALITY_THRESHOLD,
    *,
    ignore_top: int = 0,
    ignore_bottom: int = 0,
) -> Tensor:
    """ATP/DACS pixel weight map (N×H×W): the batch quality weight everywhere, 0 on the ``plcrop`` rows.

    ATP uses ``ignore_top=PLCROP_TOP`` (15) and ``ignore_bottom=PLCROP_BOTTOM`` (120) (atp.md §3).
    """
    weight = quality_weight(confidence, threshold) * torch.ones(confidence.shape, device=confidence.device)
    if ignore_top > 0:
        weight[..., :ignore_top, :] = 0
    if ignore_bottom > 0:
        weight[..., -ignore_bottom:, :] = 0
    return weight


def downscale_label_ratio(
    label: Tensor,
    scale_factor: int,
    num_classes: int,
    *,
    min_ratio: float = LABEL_SHARE_MIN,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Down-sample N×H×W labels by ``scale_factor`` keeping a cell's majority class only if its share ≥ ``min_ratio``.

    SePiCo/DAFormer ``downscale_label_ratio`` (atp.md §3 P.2): one-hot with 255 as bin ``num_classes``,
    ``avg_pool2d(kernel=stride=scale_factor)``, argmax; cells whose majority is the ignore bin or whose
    share is below ``min_ratio`` become ``ignore_index``.
    """
    if scale_factor < 1:
        raise ValueError(f"scale_factor must be ≥ 1, got {scale_factor}")
    if scale_factor == 1:
        return label.clone()
    out = label.long().clone()
    out[out == ignore_index] = num_classes
    onehot = F.one_hot(out, num_classes=num_classes + 1).permute(0, 3, 1, 2).float()
    pooled = F.avg_pool2d(onehot, kernel_size=scale_factor)
    share, out = pooled.max(dim=1)
    out[out == num_classes] = ignore_index
    out[share < min_ratio] = ignore_index
    return out
