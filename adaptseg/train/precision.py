"""Precision and speed switches: AMP, channels-last and ``torch.compile`` (recipe keys of the same names).

* ``amp: bf16`` — autocast to bfloat16 (CPU and CUDA; no loss scaling needed).
* ``amp: fp16`` — autocast to float16 with a ``GradScaler``; CUDA only (CPU fp16 autocast is slow and
  unscaled fp16 gradients underflow).
* ``channels_last`` — models and input batches in NHWC memory format (faster convolutions on tensor cores
  and with oneDNN).
* ``compile`` — ``torch.compile`` of each model's forward; crops are fixed so it compiles once.

``auto`` means on for CUDA (bf16, channels-last, compile) and off on CPU (shared/environment.md: compile
gave no CPU speed-up and costs ~20 s per model).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from adaptseg.errors import UserError
from adaptseg.train.config import CompileSection, Recipe

Amp = Literal["off", "bf16", "fp16"]


@dataclass(frozen=True)
class Switches:
    """The resolved switches of a run on a given device."""

    amp: Amp = "off"
    channels_last: bool = False
    compile: dict[str, Any] | None = None  # torch.compile kwargs, or None for eager
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_switches(recipe: Recipe, device: torch.device) -> Switches:
    """Turn the recipe's ``amp``/``channels_last``/``compile`` (``auto`` included) into concrete settings."""
    cuda = device.type == "cuda"
    amp: Amp = ("bf16" if cuda else "off") if recipe.amp == "auto" else recipe.amp
    if amp == "fp16" and not cuda:
        raise UserError("amp: fp16 needs a CUDA device", fix="use amp: bf16 on CPU (or amp: off)")
    if amp == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU has no bfloat16 support", fix="use amp: fp16")
    channels_last = cuda if recipe.channels_last == "auto" else bool(recipe.channels_last)
    spec = recipe.compile
    if spec == "auto":
        spec = cuda
    if isinstance(spec, CompileSection):
        compile_kwargs: dict[str, Any] | None = spec.model_dump(exclude_none=True)
    else:
        compile_kwargs = {"dynamic": False} if spec else None
    return Switches(amp=amp, channels_last=channels_last, compile=compile_kwargs)


def autocast(switches: Switches, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for a training step (a no-op context when AMP is off)."""
    if switches.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if switches.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(switches: Switches, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 on CUDA; None otherwise."""
    if switches.amp != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
