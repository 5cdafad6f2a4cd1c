"""Shared fixtures for the model-zoo tests: preset parameters, small inputs, deterministic models."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import Tensor, nn

from adaptseg.models.presets import ModelPreset, build_model, list_presets, load_preset

#: small inputs: H×W multiples of 32 so every output stride divides them (full-size nets: the smallest)
TINY_INPUT = (64, 128)
FULL_INPUT = (32, 32)


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


def calibrate(model: nn.Module, size: tuple[int, int], seed: int = 0) -> nn.Module:
    """Realistic, non-trivial BatchNorm state: random affine γ ∈ [0.5, 1.5], β ∈ [-0.5, 0.5], and running
    statistics set from one batch (as a trained net has them). Random statistics instead would let
    activations grow through a deep net until fp32 rounding swamps any comparison."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
        m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0  # running stats := this batch's
    model.train()
    with torch.no_grad():
        model(normalised_batch(4, size, seed=seed + 1000))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return model.eval()


def seeded_model(preset: str | ModelPreset, seed: int = 0, num_classes: int | None = None) -> nn.Module:
    """A preset's model with deterministic weights and calibrated BN state, in eval mode (a fresh copy)."""
    if not isinstance(preset, ModelPreset):
        preset = load_preset(preset)
    return copy.deepcopy(_seeded_model(preset.model_dump_json(), seed, num_classes))


@functools.cache
def _seeded_model(preset_json: str, seed: int, num_classes: int | None) -> nn.Module:
    preset = ModelPreset.model_validate_json(preset_json)
    torch.manual_seed(seed)
    return calibrate(build_model(preset, num_classes=num_classes), input_size(preset), seed)


def image_batch(n: int, size: tuple[int, int], seed: int = 0) -> Tensor:
    """Float RGB in 0–255 (the deploy contract)."""
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed)) * 255


def normalised_batch(n: int, size: tuple[int, int], seed: int = 0) -> Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def tiny_preset(backbone: dict, decode_head: dict, **fields) -> ModelPreset:
    """An inline tiny preset (for layouts no YAML preset uses at tiny size)."""
    return ModelPreset.model_validate(
        {
            "name": "inline",
            "size": "tiny",
            "crop": [64, 128],
            "backbone": backbone,
            "decode_head": decode_head,
            **fields,
        }
    )


def comparison_tolerance(model: nn.Module, x: Tensor, floor: float = 1e-4) -> float:
    """The tolerance for comparing two fp32 runs of ``model`` on ``x``: ``floor`` (1e-4), or three times how
    far fp32 itself is from a float64 run when that is larger (deep full-size nets at random init)."""
    with torch.no_grad():
        ref = model(x).double()
        exact = copy.deepcopy(model).double()(x.double())
    return max(floor, 3 * (ref - exact).abs().max().item())


def assert_same_prediction(got: Tensor, ref: Tensor, tol: float) -> None:
    """Logits within ``tol``; the argmax identical wherever the reference's top-2 margin exceeds ``2·tol``
    (elsewhere a tie within rounding may go either way), and on at least 99.9 % of the pixels."""
    got, ref = torch.as_tensor(got).float(), torch.as_tensor(ref).float()
    assert got.shape == ref.shape
    diff = (got - ref).abs().max().item()
    assert diff <= tol, f"max |difference| {diff:.3g} > {tol:.3g}"
    top2 = ref.topk(2, dim=1).values
    decided = (top2[:, 0] - top2[:, 1]) > 2 * tol
    same = got.argmax(1) == ref.argmax(1)
    assert same[decided].all()
    assert same.float().mean() >= 0.999
