"""The mean teacher: an exponential moving average of the student (DAFormer/DACS style).

Rule (shared/methods/ddb.md §3 ST step 1, atp.md §3): at iteration ``t = 0`` the teacher becomes a copy of
the student; at ``t ≥ 1``, *before* that iteration's forward pass, ``θ_ema ← α θ_ema + (1 − α) θ`` with
``α = min(1 − 1/(t + 1), α_max)`` (α(1) = 0.5, α(2) = 2/3; capped from ``t = 1/(1−α_max) − 1``).

By default only parameters are averaged (``buffers=False``), as in DAFormer, DDB and ATP: the teacher's
BatchNorm buffers are left alone by the update and change only through the teacher's own forward passes
in train mode. ``buffers=True`` also averages floating-point buffers and copies integer ones
(``num_batches_tracked``). Deterministic: no randomness, in-place arithmetic in a fixed order.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def ema_alpha(t: int, alpha_max: float) -> float:
    """``min(1 − 1/(t+1), α_max)``: the weight kept by the teacher at iteration ``t`` (0 at ``t = 0``)."""
    return min(1.0 - 1.0 / (t + 1), alpha_max)


class EMATeacher(nn.Module):
    """A teacher that follows ``student`` by EMA; call :meth:`update` at the start of every iteration.

    The teacher is a deep copy of the student taken at construction, with gradients off. Declare it to
    the Trainer with role ``"ema"`` so it is placed on the device, checkpointed and (optionally)
    exported like any model; its forward passes run the copied model.
    """

    def __init__(self, student: nn.Module, *, alpha_max: float = 0.99, buffers: bool = False):
        super().__init__()
        if not 0.0 <= alpha_max < 1.0:
            raise ValueError(f"alpha_max must be in [0, 1), got {alpha_max}")
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.alpha_max = alpha_max
        self.buffers_too = buffers

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return self.model.forward_features(x)

    def alpha(self, t: int) -> float:
        return ema_alpha(t, self.alpha_max)

    @torch.no_grad()
    def update(self, student: nn.Module, t: int) -> None:
        """Copy the student at ``t = 0``; average it in with weight ``1 − α(t)`` afterwards."""
        pairs = list(zip(self.model.parameters(), student.parameters(), strict=True))
        if self.buffers_too:
            pairs += list(zip(self.model.buffers(), student.buffers(), strict=True))
        if t == 0:
            for mine, theirs in pairs:
                mine.copy_(theirs)
            return
        alpha = self.alpha(t)
        for mine, theirs in pairs:
            if mine.is_floating_point():
                mine.mul_(alpha).add_(theirs.detach(), alpha=1.0 - alpha)
            else:
                mine.copy_(theirs)
