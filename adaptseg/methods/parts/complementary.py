"""ATP's negative (complementary) label loss, added to every CE of the T and P steps.

Spec rule implemented here (atp.md §3 "Negative loss", released ``negative_cross_loss``):

* ``p = softmax(z)`` of the *student's own* logits; the negative set ``N_i = {c : p_ic < 0.04}`` (strict)
  is a detached mask, ``p`` is not detached;
* ``L_neg = mean_i −log(clamp(1 − Σ_{c∈N_i} p_ic, 1e−8, 1))`` over **all** pixels: labels (255 included)
  and pixel weights play no part. Example: ``p = (0.9, 0.07, 0.03)`` → ``N = {2}`` → ``−log 0.97``.

Quirk switches: none.
"""

from __future__ import annotations

import torch
from torch import Tensor

NEGATIVE_THRESHOLD = 0.04


def negative_label_loss(logits: Tensor, *, threshold: float = NEGATIVE_THRESHOLD) -> Tensor:
    """Push the total probability of the classes the model already finds unlikely (``p < threshold``) to 0.

    ``logits``: N×C×H×W student logits at label resolution. Returns the mean over all N·H·W pixels.
    """
    probs = torch.softmax(logits, dim=1, dtype=torch.promote_types(logits.dtype, torch.float32))
    negative = (probs < threshold).detach()
    kept = 1 - (negative * probs).sum(dim=1)
    return -torch.clamp(kept, 1e-8, 1).log().mean()
