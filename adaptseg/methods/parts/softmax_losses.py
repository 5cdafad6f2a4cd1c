"""Losses on softmax maps: maximum squares, L1 agreement of two predictions, KL to a teacher's softmax.

Rules (umma.md §3 notation, §3.2, §3.3), each written for N×C×H×W logits:

* :func:`max_squares` — MS(z) = −Σ_{n,c,h,w} σ(z)² / (H·W): the negative maximum-squares loss (Chen et al.
  2019), divided by H·W only — not by batch or classes — so it scales with the batch (§6.9).
* :func:`softmax_l1` — mean over (n, c, h, w) of |σ(a) − σ(b)| (UMMA's L_cmc1 and the disagreement term
  of step 1C).
* :func:`kl_to_target` — Σ_{n,pix,c} p·(log p − log max(q, 1e-10)) / (H·W) with p = σ(target logits) and
  q = σ(logits): KL(p‖q) as UMMA's step 2C computes it (the floor on q, the sum over the batch).

Quirk switches: none.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: the floor on q before its log in :func:`kl_to_target` (the release's ``torch.clamp(q, min=1e-10)``)
KL_FLOOR = 1e-10


def max_squares(logits: Tensor) -> Tensor:
    """−Σ σ(z)² / (H·W) over batch, classes and pixels (a loss: minimising it sharpens predictions)."""
    probs = torch.softmax(logits.float(), dim=1)
    height, width = logits.shape[-2:]
    return -(probs**2).sum() / (height * width)


def softmax_l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference of the two softmax maps over (n, c, h, w)."""
    return (torch.softmax(a.float(), dim=1) - torch.softmax(b.float(), dim=1)).abs().mean()


def kl_to_target(target_logits: Tensor, logits: Tensor) -> Tensor:
    """KL(σ(target)‖σ(logits)) summed over batch, pixels and classes, divided by H·W (target not detached here)."""
    p = torch.softmax(target_logits.float(), dim=1)
    q = torch.softmax(logits.float(), dim=1)
    height, width = logits.shape[-2:]
    # xlogy: a p that underflows to 0 adds 0 (the release's p·log p would be NaN there)
    return (torch.xlogy(p, p) - p * torch.log(q.clamp_min(KL_FLOOR))).sum() / (height * width)


__all__ = ["KL_FLOOR", "kl_to_target", "max_squares", "softmax_l1"]
