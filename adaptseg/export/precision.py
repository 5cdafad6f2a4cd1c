"""Reduced precision for formats whose file carries its arithmetic (TorchScript, ONNX)."""

from __future__ import annotations

import copy

from torch import Tensor, nn


class HalfPrecision(nn.Module):
    """float32 crops in and logits out, float16 weights and arithmetic inside (``--fp16`` for
    TorchScript/ONNX; TensorRT chooses its kernels' precision itself)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.half()

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.half()).float()


def at_precision(module: nn.Module, precision: str) -> nn.Module:
    """``module`` itself for fp32, a half-precision copy for fp16 (the eager reference stays fp32)."""
    return HalfPrecision(copy.deepcopy(module)) if precision == "fp16" else module
