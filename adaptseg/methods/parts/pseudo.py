"""Pseudo-labels and their weights: teacher argmax, DACS quality weight, class-wise thresholds, ×s labels.

Spec rules implemented here:

* ddb.md §3 ST step 3 and atp.md §3 "EMA teacher": hard pseudo-labels ``ŷ = argmax softmax(z)`` with the
  confidence ``max softmax(z)`` (:func:`teacher_pseudo_labels`).
* ddb.md §3 ST step 3 / atp.md §3 ``pseudo_weight`` (DACS quality weight, :func:`quality_weight`):
  ``q`` = the fraction of pixels **in the whole batch** whose max probability is ``≥ 0.968``
  (inclusive) — one scalar per batch.
* atp.md §3 ``plcrop`` (:func:`pseudo_weight_map`): ``q`` broadcast to every pixel, with the top 15 and
  bottom 120 rows set to 0 (rows 0–14 and 520–639 of a 640-row crop). DDB disables it (0/0 rows).
* Class-wise percentile thresholds (:func:`class_percentile_thresholds`, :func:`apply_class_thresholds`),
  written once for the later methods: per class ``c``, the confidences of the pixels labelled ``c`` are
  sorted and one order statistic is taken; pixels with ``conf < t_ŷ`` (strict) become 255.
  - umma.md §3.1: ascending, index ``round(0.5·n_c)`` (half to even), capped at 0.9, 0 for empty classes
    → ``percentile=50, index_rounding="half_even", max_threshold=0.9``.
  - decouplenet.md §2.3 / §3: descending, index ``int(0.8·n_c)`` → ``percentile=80, descending=True``.
* atp.md §3 P.2 (SePiCo ``downscale_label_ratio``, :func:`downscale_label_ratio`): labels down-sampled
  ×s by average-pooling the one-hot map with 255 as an extra bin; a cell keeps its majority class if its
  share is ``≥ 0.75`` (12/16 of a 4×4 cell), else 255 (11/16 → 255).

Quirk switches: none.
"""

from __future__ import annotations

from typing import Literal

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


def class_percentile_thresholds(
    confidence: Tensor,
    label: Tensor,
    percentile: float,
    num_classes: int,
    *,
    descending: bool = False,
    index_rounding: Literal["floor", "half_even"] = "floor",
    max_threshold: float | None = None,
    empty_value: float = 0.0,
) -> Tensor:
    """Per-class confidence thresholds (shape ``(num_classes,)``): an order statistic of each class's pixels.

    For class ``c`` with ``n_c`` pixels labelled ``c`` (any shape; ignored pixels match no class), the
    confidences are sorted (ascending, or descending with ``descending=True``) and the value at index
    ``i = rule(percentile/100 · n_c)`` is taken, ``rule`` being ``int`` (``"floor"``) or Python ``round``
    (``"half_even"``), clipped to ``n_c − 1``. Then ``t_c = min(t_c, max_threshold)``; classes without
    pixels get ``empty_value``. See the module docstring for the UMMA and DecoupleNet settings.
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    if index_rounding not in ("floor", "half_even"):
        raise ValueError(f"index_rounding must be 'floor' or 'half_even', got {index_rounding!r}")
    conf = confidence.reshape(-1)
    lab = label.reshape(-1)
    fraction = percentile / 100.0
    thresholds = torch.full((num_classes,), float(empty_value), dtype=torch.float32, device=conf.device)
    for c in range(num_classes):
        values = conf[lab == c]
        n = values.numel()
        if n == 0:
            continue
        position = fraction * n
        index = int(position) if index_rounding == "floor" else round(position)
        index = min(index, n - 1)
        thresholds[c] = torch.sort(values, descending=descending).values[index].float()
    if max_threshold is not None:
        thresholds = torch.clamp(thresholds, max=max_threshold)
    return thresholds


def apply_class_thresholds(
    label: Tensor, confidence: Tensor, thresholds: Tensor, *, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Set ``label`` to ``ignore_index`` where ``confidence < thresholds[label]`` (strict: equality is kept)."""
    valid = label != ignore_index
    safe = torch.where(valid, label, torch.zeros_like(label)).long()
    below = confidence < thresholds.to(confidence.device)[safe]
    return torch.where(valid & below, torch.full_like(label, ignore_index), label)


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
