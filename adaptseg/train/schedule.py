"""Iteration-based learning-rate schedules with mmcv semantics (``mmcv.runner.hooks.lr_updater``, 1.x).

The schedule is a pure function of the iteration ``t`` (0-based, the number of optimiser steps already
taken), so resuming needs no scheduler state: the lr of every group is recomputed from ``t`` before each
step. mmcv's rules, which every seed that trains with mmseg follows (shared/methods/ddb.md §4, atp.md §4):

* **poly**: ``lr(t) = (base − min_lr) · (1 − t/T)^power + min_lr`` where ``base`` is the group's own
  initial lr (head groups already carry their ×10) and ``T`` the horizon (``max_iters``).
* **warmup** (for ``t < warmup_iters``) multiplies the *regular* (poly) lr, it does not replace it:
  ``linear``: ``1 − (1 − t/W)(1 − ratio)``; ``constant``: ``ratio``; ``exp``: ``ratio^(1 − t/W)``.
  From ``t = W`` on the regular lr is used, so DDB's factor is 1e-6 at ``t=0`` and ``1 − 1500/40000 =
  0.9625`` at ``t=1500``.
* The seeds that do not use mmcv (UMMA, DecoupleNet) write ``base·(1 − i/N)^0.9``: the same poly rule with
  ``min_lr = 0`` and no warmup.
"""

from __future__ import annotations

from typing import Literal

from torch.optim import Optimizer

Warmup = Literal["linear", "constant", "exp"]


def poly_lr(t: int, base: float, total: int, *, power: float = 1.0, min_lr: float = 0.0) -> float:
    """mmcv ``PolyLrUpdaterHook.get_lr``: ``(base − min_lr)·(1 − t/total)^power + min_lr``."""
    if total <= 0:
        raise ValueError(f"poly horizon must be positive, got {total}")
    coeff = max(0.0, 1.0 - t / total) ** power
    return (base - min_lr) * coeff + min_lr


def warmup_factor(t: int, warmup_iters: int, warmup_ratio: float, kind: Warmup | None = "linear") -> float:
    """mmcv ``LrUpdaterHook.get_warmup_lr`` as a factor on the regular lr (1 once ``t ≥ warmup_iters``)."""
    if kind is None or warmup_iters <= 0 or t >= warmup_iters:
        return 1.0
    if kind == "linear":
        return 1.0 - (1.0 - t / warmup_iters) * (1.0 - warmup_ratio)
    if kind == "constant":
        return warmup_ratio
    if kind == "exp":
        return warmup_ratio ** (1.0 - t / warmup_iters)
    raise ValueError(f"unknown warmup {kind!r}")


def poly_warmup_lr(
    t: int,
    base: float,
    total: int,
    *,
    power: float = 1.0,
    min_lr: float = 0.0,
    warmup_iters: int = 0,
    warmup_ratio: float = 1e-6,
    warmup: Warmup | None = "linear",
) -> float:
    """The lr at iteration ``t``: poly decay over ``total`` iterations times the warmup factor (mmcv)."""
    regular = poly_lr(t, base, total, power=power, min_lr=min_lr)
    return regular * warmup_factor(t, warmup_iters, warmup_ratio, warmup)


class PolyWarmupSchedule:
    """Sets every param group's lr from its ``initial_lr`` for iteration ``t`` (see the module docstring).

    Stateless apart from its settings: ``apply(optimizer, t)`` before each step is all a resumed run needs.
    """

    def __init__(
        self,
        total: int,
        *,
        power: float = 1.0,
        min_lr: float = 0.0,
        warmup: Warmup | None = "linear",
        warmup_iters: int = 0,
        warmup_ratio: float = 1e-6,
    ):
        if total <= 0:
            raise ValueError(f"poly horizon must be positive, got {total}")
        self.total = total
        self.power = power
        self.min_lr = min_lr
        self.warmup = warmup
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio

    def lr(self, t: int, base: float) -> float:
        return poly_warmup_lr(
            t,
            base,
            self.total,
            power=self.power,
            min_lr=self.min_lr,
            warmup_iters=self.warmup_iters,
            warmup_ratio=self.warmup_ratio,
            warmup=self.warmup,
        )

    def apply(self, optimizer: Optimizer, t: int) -> list[float]:
        """Write the lr for iteration ``t`` into every group; returns the lrs (group order)."""
        lrs = []
        for group in optimizer.param_groups:
            group["lr"] = self.lr(t, group.setdefault("initial_lr", group["lr"]))
            lrs.append(group["lr"])
        return lrs

    def state_dict(self) -> dict:
        return dict(vars(self))
