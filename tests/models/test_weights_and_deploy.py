"""Safetensors weights (atomic, exact round trip) and the deploy module's contract (DESIGN.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adaptseg.errors import UserError
from adaptseg.models import DeployModule, load_preset, load_weights, save_weights
from adaptseg.models.deploy import deploy_module_for
from adaptseg.models.weights import read_metadata
from tests.models.helpers import image_batch, normalised_batch, seeded_model


def test_safetensors_round_trip_is_exact(tmp_path) -> None:
    source = seeded_model("tiny-dlv2red-adapter", seed=1)
    path = save_weights(source, tmp_path / "student.safetensors", metadata={"preset": "tiny-dlv2red-adapter"})
    assert [p.name for p in tmp_path.iterdir()] == ["student.safetensors"]  # no temp file left behind
    assert read_metadata(path) == {"format": "adaptseg", "preset": "tiny-dlv2red-adapter"}
    target = seeded_model("tiny-dlv2red-adapter", seed=2)
    report = load_weights(target, path)
    assert report.ok and len(report.loaded) == len(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key  # BN buffers included
    x = normalised_batch(2, (64, 128))
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), atol=0, rtol=0)


def test_weights_of_another_preset_do_not_load(tmp_path) -> None:
    save_weights(seeded_model("tiny-deeplabv2"), tmp_path / "v2.safetensors")
    with pytest.raises(UserError, match="v2.safetensors: .*(missing|no place)"):
        load_weights(seeded_model("tiny-dlv2red-adapter"), tmp_path / "v2.safetensors")


def test_weights_must_be_safetensors(tmp_path) -> None:
    with pytest.raises(UserError, match="name the file \\*.safetensors"):
        save_weights(seeded_model("tiny-deeplabv2"), tmp_path / "w.pth")


def test_deploy_module_normalises_runs_and_upsamples() -> None:
    preset = load_preset("tiny-deeplabv2")
    model = seeded_model("tiny-deeplabv2")
    deploy = deploy_module_for(model, "tiny-deeplabv2").eval()
    x = image_batch(2, (64, 96))
    mean = torch.tensor(preset.mean).view(1, 3, 1, 1)
    std = torch.tensor(preset.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = F.interpolate(model((x - mean) / std), size=(64, 96), mode="bilinear", align_corners=False)
        got = deploy(x)
    assert got.shape == (2, 19, 64, 96)
    torch.testing.assert_close(got, expected)


def test_deploy_module_state_is_the_models_under_model_prefix() -> None:
    model = seeded_model("tiny-deeplabv2")
    deploy = DeployModule(model, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert set(deploy.state_dict()) == {f"model.{k}" for k in model.state_dict()}
    with pytest.raises(ValueError, match="3 values"):
        DeployModule(model, (1.0, 2.0), (1.0, 1.0))
