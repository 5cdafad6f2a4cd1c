"""Precision and speed switches: AMP, channels-last and ``torch.compile`` (recipe keys of the same names).

* ``amp: bf16`` — autocast to bfloat16 (CPU and CUDA; no loss scaling needed).
* ``amp: fp16`` — autocast to float16 with a ``GradScaler``; CUDA only (CPU fp16 autocast is slow and
  unscaled fp16 gradients underflow).
* ``channels_last`` — models and input batches in NHWC memory format (faster convolutions on tensor cores
  and with oneDNN).
* ``compile`` — ``torch.compile`` of each model's forward; crops are fixed so it compiles once.

``auto`` means on for CUDA (bf16, channels-last, compile) and off on CPU (shared/environment.md: compile
gave no CPU speed-up and costs ~20 s per model).

On CPU, :func:`to_channels_last` keeps one kind of layer in NCHW: oneDNN's channels-last weight gradient
of a strided 1×1 convolution with fewer than 8 input channels writes past its buffer on AVX2-only CPUs
(torch 2.13.0+cpu, one thread: glibc aborts with "corrupted size vs. prev_size" a few steps later). No
shipped preset has such a layer (their narrowest is 16 channels); narrow test and user models do.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

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


#: oneDNN's AVX2 channels-last weight-gradient kernel overruns its buffer below this many input channels
_NARROW_INPUT_CHANNELS = 8


def _is_unsafe_channels_last_conv(module: nn.Module) -> bool:
    """A strided 1×1 convolution with fewer than 8 input channels (the oneDNN case in the module docstring)."""
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride != (1, 1)
        and module.in_channels < _NARROW_INPUT_CHANNELS
    )


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def to_channels_last(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in channels-last memory format; on CPU, unsafe narrow strided 1×1 convolutions stay NCHW.

    Those layers keep contiguous weights and get a forward pre-hook that makes their input contiguous,
    so oneDNN runs its NCHW kernels for them (same numbers); every other layer is channels-last.
    """
    module = module.to(memory_format=torch.channels_last)
    if device.type != "cpu":
        return module
    for layer in module.modules():
        if _is_unsafe_channels_last_conv(layer):
            layer.weight.data = layer.weight.data.clone(memory_format=torch.contiguous_format)
            layer.register_forward_pre_hook(_contiguous_input)
    return module
