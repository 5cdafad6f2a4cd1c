"""Artifact backends: the engine picks them from the artifact, they honour the deploy contract, ONNX
Runtime providers are chosen in order, and a sidecar that does not describe its model is refused."""

import json

import pytest
import torch

from adaptseg.artifact.onnx import OnnxRuntimeBackend, choose_providers, requested_providers
from adaptseg.artifact.torchscript import TorchScriptBackend
from adaptseg.errors import UserError
from adaptseg.infer.backends import load_backend
from adaptseg.infer.engine import SlidingWindow

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
TRT, CUDA, CPU = ALL


@pytest.mark.parametrize(
    ("available", "device", "expected"),
    [
        (ALL, "cuda", ALL),
        ([CPU, CUDA, "AzureExecutionProvider"], "cuda", [CUDA, CPU]),
        ([CPU, TRT], "cuda", [TRT, CPU]),
        (ALL, "cpu", [CPU]),
        (["AzureExecutionProvider", CPU], "cuda", [CPU]),
    ],
)
def test_providers_best_first_from_what_is_available(available, device, expected):
    assert choose_providers(available, device) == expected


def test_requested_providers_override_and_are_checked(monkeypatch):
    assert choose_providers(ALL, "cpu", [CUDA, CPU]) == [CUDA, CPU]
    with pytest.raises(UserError, match="provider CUDAExecutionProvider is not available here"):
        choose_providers([CPU], "cuda", [CUDA])
    with pytest.raises(UserError, match="offers none of CPUExecutionProvider"):
        choose_providers(["AzureExecutionProvider"], "cpu")
    monkeypatch.setenv("ADAPTSEG_ORT_PROVIDERS", " CUDAExecutionProvider , CPUExecutionProvider")
    assert requested_providers() == [CUDA, CPU]
    assert requested_providers("CPUExecutionProvider") == [CPU]
    monkeypatch.delenv("ADAPTSEG_ORT_PROVIDERS")
    assert requested_providers() is None


@pytest.mark.parametrize(("fmt", "kind"), [("onnx", OnnxRuntimeBackend), ("torchscript", TorchScriptBackend)])
def test_load_backend_picks_the_backend_from_the_artifact(artifacts, tiny_weights, fmt, kind):
    artifact = artifacts[fmt]
    by_folder = load_backend(artifact.folder, device="cpu")
    by_file = load_backend(artifact.model_path, device="cpu")
    assert isinstance(by_folder, kind) and isinstance(by_file, kind)
    assert by_folder.crop == (128, 256) and by_folder.num_classes == 19
    assert by_folder.mean == pytest.approx((123.675, 116.28, 103.53))
    eager = load_backend(tiny_weights, device="cpu")
    crops = torch.rand(3, 3, 128, 256) * 255
    with torch.inference_mode():
        ref = eager.module(crops)
    out = by_folder(crops)
    assert out.shape == (3, 19, 128, 256) and out.dtype == torch.float32
    assert (out - ref).abs().max() < 1e-3
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.999


def test_onnx_runtime_on_the_cpu_device(artifacts):
    backend = load_backend(artifacts["onnx"].folder, device="cpu")
    assert backend.providers == ["CPUExecutionProvider"] and backend.device == torch.device("cpu")


def test_engine_refuses_a_preset_sliding_other_crops(artifacts):
    from adaptseg.infer.config import InferenceConfig

    backend = load_backend(artifacts["torchscript"].folder, device="cpu")
    with pytest.raises(UserError, match="runs crops of 128x256"):
        SlidingWindow(backend, InferenceConfig(mode="slide", crop=(64, 64)))
    with pytest.raises(UserError, match=r"runs N×3×128×256 crops, got \(1, 3, 64, 64\)"):
        backend(torch.zeros(1, 3, 64, 64))


def test_sidecar_crop_that_the_onnx_graph_does_not_take(artifact_copy):
    folder = artifact_copy("onnx")
    meta = json.loads((folder / "model.json").read_text())
    meta["crop"] = [256, 256]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(
        UserError, match="model.json says crop 256x256 but the ONNX graph takes 128x256 crops"
    ):
        load_backend(folder, device="cpu")


def test_sidecar_classes_that_the_onnx_graph_does_not_output(artifact_copy):
    folder = artifact_copy("onnx")
    meta = json.loads((folder / "model.json").read_text())
    meta["num_classes"] = 16
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="says 16 classes but the ONNX graph outputs 19"):
        load_backend(folder, device="cpu")


def test_weights_saved_as_pt_are_weights_not_an_artifact(tmp_path, tiny_weights):
    """A ``.pt`` without a model.json beside it is read as weights (issue 15, defect 8): the fix it
    suggests is an option the CLI has."""
    from adaptseg.models import build_model, load_weights

    model = build_model("tiny-deeplabv2")
    load_weights(model, tiny_weights)
    pt = tmp_path / "weights.pt"
    torch.save(model.state_dict(), pt)
    with pytest.raises(UserError, match="--arch NAME"):
        load_backend(pt, device="cpu")
    crops = torch.rand(1, 3, 32, 64) * 255
    torch.testing.assert_close(
        load_backend(pt, device="cpu", arch="tiny-deeplabv2")(crops),
        load_backend(tiny_weights, device="cpu")(crops),
    )
