"""Every preset in models/*.yaml: forward shape and output stride, backward, channels_last, bf16 autocast,
deploy module → TorchScript / ONNX (onnxruntime), torch.compile. Tiny presets run in the default suite,
full-size ones are ``slow``; adding a preset adds its tests."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from adaptseg.models import DeployModule, build_model, load_preset
from tests.models.helpers import (
    assert_same_prediction,
    comparison_tolerance,
    expected_logits_size,
    image_batch,
    input_size,
    normalised_batch,
    preset_params,
    seeded_model,
)

#: tiny presets compare to 1e-4 (the spec); full-size ones to what fp32 allows (``comparison_tolerance``)
TINY_TOL = 1e-4


@pytest.mark.parametrize("name", preset_params())
def test_forward_shape_and_output_stride(name: str) -> None:
    preset = load_preset(name)
    model = seeded_model(name)
    size = input_size(preset)
    with torch.no_grad():
        out = model.forward_features(normalised_batch(2, size))
    logits = out["logits"]
    assert model.output_stride in (4, 8, 16, 32)
    assert logits.shape == (2, preset.num_classes, *expected_logits_size(preset, size, model.output_stride))
    assert out["feature"].shape[0] == 2 and out["feature"].dim() == 4
    assert torch.isfinite(logits).all()
    assert torch.equal(model(normalised_batch(2, size)), logits)


@pytest.mark.parametrize("name", preset_params())
def test_num_classes_override(name: str) -> None:
    preset = load_preset(name)
    if preset.size != "tiny":
        pytest.skip("shape logic is shared; one size suffices")
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(normalised_batch(1, input_size(preset))).shape[1] == 7


@pytest.mark.parametrize("name", preset_params())
def test_backward_reaches_every_parameter(name: str) -> None:
    preset = load_preset(name)
    torch.manual_seed(0)
    model = build_model(name).train()
    for (
        m
    ) in model.modules():  # stochastic regularisers off: a block dropped for the whole batch gets no gradient
        if isinstance(m, nn.Dropout | nn.Dropout2d) or "droppath" in type(m).__name__.lower():
            m.eval()
    out = model.forward_features(normalised_batch(2, input_size(preset)))
    loss = sum(v.float().square().mean() for v in out.values())
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert not missing, f"no gradient reaches {missing[:5]}"


@pytest.mark.parametrize("name", preset_params())
def test_channels_last_gives_the_same_logits(name: str) -> None:
    preset = load_preset(name)
    model = seeded_model(name)
    x = normalised_batch(2, input_size(preset))
    tol = TINY_TOL if preset.size == "tiny" else comparison_tolerance(model, x)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    assert_same_prediction(got, ref, tol)


@pytest.mark.parametrize("name", preset_params())
def test_bf16_autocast_runs(name: str) -> None:
    preset = load_preset(name)
    model = seeded_model(name)
    x = normalised_batch(2, input_size(preset))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    with torch.no_grad():
        ref = model(x)
    assert logits.shape == ref.shape
    assert logits.dtype == torch.bfloat16, "autocast did not reach the convolutions"
    assert torch.isfinite(logits.float()).all()
    if preset.size == "tiny":
        # bf16 keeps ~3 significant digits: a shallow net's logits follow the fp32 ones closely. (A deep
        # net at random init amplifies rounding chaotically, so full-size presets only have to run.)
        err = (logits.float() - ref).abs().mean() / ref.abs().mean()
        assert err < 0.1


@pytest.mark.parametrize("name", preset_params("torchscript"))
def test_deploy_module_scripts(name: str) -> None:
    preset = load_preset(name)
    deploy = DeployModule(seeded_model(name), preset.mean, preset.std).eval()
    x = image_batch(2, input_size(preset))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        scripted = torch.jit.script(deploy)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), deploy(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", preset_params("onnx"))
def test_deploy_module_onnx_dynamic_batch(name: str, tmp_path) -> None:
    import onnxruntime as ort

    preset = load_preset(name)
    size = input_size(preset)
    deploy = DeployModule(seeded_model(name), preset.mean, preset.std).eval()
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            deploy,
            (image_batch(2, size),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    assert not list(tmp_path.glob("*.data")), "weights must stay inside the .onnx file"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tol = TINY_TOL if preset.size == "tiny" else comparison_tolerance(deploy, image_batch(3, size, seed=3))
    for n in (1, 3):
        x = image_batch(n, size, seed=n)
        (got,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            ref = deploy(x)
        assert got.shape == (n, preset.num_classes, *size)
        assert_same_prediction(torch.from_numpy(got), ref, tol)
        if preset.size == "tiny":
            np.testing.assert_array_equal(got.argmax(1), ref.argmax(1).numpy())


@pytest.mark.slow
@pytest.mark.parametrize("name", [p for p in preset_params("compile") if "tiny" in p.id])
def test_compile_tiny_presets(name: str) -> None:
    preset = load_preset(name)
    model = seeded_model(name)
    x = normalised_batch(2, input_size(preset))
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)
