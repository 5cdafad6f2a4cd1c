"""Data preparation that runs in full precision whatever the training step's autocast says.

Strong augmentation (colour jitter, Gaussian blur) and the mixing that DDB's bridging and ATP's ClassMix
do on batches are data preparation: the releases do them in fp32 (in their data pipelines or before
autocast starts). Inside a step the Trainer's autocast would run the blur's convolution in bf16/fp16,
so the functions that prepare data carry :func:`full_precision` themselves — one decision, made where
the data is prepared, and no method has to remember it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable[..., Any])


def _as_float32(value: Any) -> Any:
    if isinstance(value, Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


def full_precision(fn: F) -> F:
    """Decorator: run ``fn`` with autocast off (CPU and CUDA) and its half-precision tensor arguments in float32."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_as_float32(a) for a in args)
        kwargs = {k: _as_float32(v) for k, v in kwargs.items()}
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
