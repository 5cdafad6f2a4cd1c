"""Shared fixtures for the model-zoo tests: preset parameters, small inputs, deterministic models."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from adaptseg.models.presets import ModelPreset, build_model, list_presets, load_preset

#: small inputs: H×W multiples of 32 so every output stride divides them
TINY_INPUT = (64, 128)
FULL_INPUT = (64, 64)


def preset_params(capability: str | None = None) -> list:
    """``pytest.param`` per preset: tiny ones in the default suite, full ones marked ``slow``.

    With ``capability`` ("torchscript", "onnx", "compile"), only presets that claim it.
    """
    params = []
    for name in list_presets():
        preset = load_preset(name)
        if capability is not None and not getattr(preset.capabilities, capability):
            continue
        marks = () if preset.size == "tiny" else (pytest.mark.slow,)
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def input_size(preset: ModelPreset) -> tuple[int, int]:
    return TINY_INPUT if preset.size == "tiny" else FULL_INPUT


def expected_logits_size(preset: ModelPreset, size: tuple[int, int], output_stride: int) -> tuple[int, int]:
    """``size / output_stride``; Caffe's ceil-mode stem pool adds one row and column."""
    extra = 1 if preset.backbone.options.get("ceil_mode") else 0
    return size[0] // output_stride + extra, size[1] // output_stride + extra


def randomise_bn_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN running statistics and affine parameters, so a lost buffer shows in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


def seeded_model(preset: str | ModelPreset, seed: int = 0, num_classes: int | None = None) -> nn.Module:
    """A preset's model with deterministic weights and BN statistics, in eval mode."""
    torch.manual_seed(seed)
    return randomise_bn_stats(build_model(preset, num_classes=num_classes), seed).eval()


def image_batch(n: int, size: tuple[int, int], seed: int = 0) -> Tensor:
    """Float RGB in 0–255 (the deploy contract)."""
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed)) * 255


def normalised_batch(n: int, size: tuple[int, int], seed: int = 0) -> Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def tiny_preset(backbone: dict, decode_head: dict, **fields) -> ModelPreset:
    """An inline tiny preset (for layouts no YAML preset uses at tiny size)."""
    return ModelPreset.model_validate(
        {"name": "inline", "size": "tiny", "crop": [64, 128], "backbone": backbone, "decode_head": decode_head,
         **fields}
    )
