"""Online class-wise confidence thresholds from a bounded FIFO bank per class (DecoupleNet's self-discrimination).

Spec rules implemented here (decouplenet.md §3 "SD pseudo-labels", §6, §7.1):

* :func:`descending_percentile`: sort descending and take the element at index ``int(p·n)`` (p = 0.8: about
  80 % of the values are ``≥`` it; for 0.1 … 1.0 it is 0.2 and 9 of 10 are kept by a ``≥`` test). The same
  rule makes DecoupleNet's offline per-class thresholds (``get_thresholds.py``).
* :class:`ClassConfidenceBank`: one bank per class. Each update appends the confidence of every pixel
  predicted as ``c`` to bank ``c``, computes ``thr_c`` on the bank **before** truncating it to its last
  ``capacity`` entries (FIFO, 100 000 in the release), and leaves the thresholds of classes absent from the
  update unchanged (initially 0).
* ``StageContext.mean_across_ranks`` (the Trainer's DDP layer): under DDP every rank keeps its own banks and the per-class thresholds are
  all-reduced and divided by the world size, so every rank applies one threshold vector (the release's
  ``all_reduce`` of the thresholds, not of the banks).

Pixels are then ignored where ``conf < thr[ŷ]`` (strict; equality kept):
:func:`adaptseg.methods.parts.thresholds.apply_class_thresholds`.

Quirk switches: none.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from adaptseg.data.labels import IGNORE_INDEX

SD_PERCENTILE = 0.8
SD_BANK_CAPACITY = 100_000


def descending_percentile(values: Tensor, p: float = SD_PERCENTILE) -> Tensor:
    """``sorted(values, descending)[int(p·n)]`` of a non-empty 1-D tensor."""
    if values.numel() == 0:
        raise ValueError("descending_percentile of an empty tensor")
    index = min(int(p * values.numel()), values.numel() - 1)
    return values.sort(descending=True).values[index]


class ClassConfidenceBank:
    """Per-class FIFO banks of recent confidences and the thresholds they give (module docstring)."""

    def __init__(
        self, num_classes: int, *, capacity: int = SD_BANK_CAPACITY, percentile: float = SD_PERCENTILE
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be ≥ 1, got {capacity}")
        self.num_classes = num_classes
        self.capacity = capacity
        self.percentile = percentile
        self.banks: list[Tensor] = [torch.zeros(0) for _ in range(num_classes)]
        self.thresholds = torch.zeros(num_classes)

    @torch.no_grad()
    def update(self, label: Tensor, confidence: Tensor) -> Tensor:
        """Append this batch's confidences per predicted class and return the (per-rank) thresholds."""
        label = label.reshape(-1)
        confidence = confidence.detach().float().reshape(-1)
        for c in label.unique().tolist():
            if c == IGNORE_INDEX or not 0 <= c < self.num_classes:
                continue
            bank = torch.cat([self.banks[c].to(confidence.device), confidence[label == c]])
            self.thresholds[c] = descending_percentile(bank, self.percentile).cpu()
            self.banks[c] = bank[-self.capacity :]
        return self.thresholds.clone()

    def state_dict(self) -> dict[str, Tensor | list[Tensor]]:
        return {"banks": [b.cpu() for b in self.banks], "thresholds": self.thresholds.clone()}

    def load_state_dict(self, state: Mapping[str, Tensor | list[Tensor]]) -> None:
        self.banks = [torch.as_tensor(b).float() for b in state["banks"]]
        self.thresholds = torch.as_tensor(state["thresholds"]).float().clone()


__all__ = [
    "SD_BANK_CAPACITY",
    "SD_PERCENTILE",
    "ClassConfidenceBank",
    "descending_percentile",
]
