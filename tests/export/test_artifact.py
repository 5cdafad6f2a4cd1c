"""Artifacts on disk: the sidecar's contents, weight hashing, and one-line errors for bad artifacts."""

import json

import pytest
import torch

from adaptseg.artifact.folder import SIDECAR, check_input, open_artifact, weights_sha256
from adaptseg.data.labels import CLASSES, PALETTE
from adaptseg.errors import UserError
from adaptseg.models import build_model, load_weights
from tests.export.conftest import TINY


def test_sidecar_records_what_a_runtime_needs(artifacts, tiny_weights):
    model = build_model(TINY)
    load_weights(model, tiny_weights)
    for fmt, artifact in artifacts.items():
        meta = json.loads(artifact.sidecar_path.read_text())
        assert (
            meta["format"] == fmt and meta["file"] == {"onnx": "model.onnx", "torchscript": "model.pt"}[fmt]
        )
        assert meta["classes"] == list(CLASSES) and meta["palette"] == PALETTE.tolist()
        assert meta["mean"] == [123.675, 116.28, 103.53] and meta["std"] == [58.395, 57.12, 57.375]
        assert meta["crop"] == [128, 256] and meta["stride"] == [64, 128] and meta["output_stride"] == 8
        assert meta["precision"] == "fp32" and meta["num_classes"] == 19
        assert meta["source"] == {
            "model": str(tiny_weights),
            "preset": TINY,
            "weights_sha256": weights_sha256(model),
        }
        assert meta["file_bytes"] == artifact.model_path.stat().st_size
        parity = meta["parity"]
        assert parity["crops"] == 3 and parity["pixels"] == 3 * 128 * 256
        assert parity["agreement"] >= 0.999 and parity["max_abs_diff"] <= 1e-3
        assert parity["bar"] == {
            "min_agreement": 0.999,
            "max_abs_diff": 1e-3,
            "max_rel_diff": 1e-5,
            "min_miou": None,
        }
        assert parity["miou"] >= 0.99  # the class map against eager's
        assert 1 < parity["logit_scale"] < 100  # a tiny random-init net: the absolute bound applies
        assert "torch" in meta["versions"] and "onnxruntime" in meta["versions"]
    assert artifacts["onnx"].meta.opset == 18 and artifacts["onnx"].meta.exporter == "onnx-legacy"
    assert artifacts["torchscript"].meta.exporter == "torch.jit.script"  # scripting is exact for this preset
    assert "scripted" in artifacts["torchscript"].meta.exporter_note


def test_weights_hash_depends_on_values_not_layout():
    torch.manual_seed(0)
    model = build_model(TINY)
    digest = weights_sha256(model)
    assert digest == weights_sha256({k: v.clone() for k, v in model.state_dict().items()})
    assert digest == weights_sha256(model.to(memory_format=torch.channels_last))
    with torch.no_grad():
        next(model.parameters())[0, 0, 0, 0] += 1e-3
    assert weights_sha256(model) != digest


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_sidecar(artifact_copy):
    folder = artifact_copy("onnx")
    (folder / SIDECAR).unlink()
    with pytest.raises(UserError, match="no model.json beside the model") as info:
        open_artifact(folder / "model.onnx")
    assert str(folder) in _one_line(info)


def test_truncated_model_file(artifact_copy):
    folder = artifact_copy("torchscript")
    data = (folder / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        UserError, match=rf"model file is truncated \({len(data) // 2} of {len(data)} bytes\)"
    ) as info:
        open_artifact(folder)
    assert "model.pt" in _one_line(info)


def test_model_file_swapped_under_its_sidecar(artifact_copy, artifacts):
    folder = artifact_copy("onnx")
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-100] ^= 0xFF  # same length, different bytes
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its model.json"):
        open_artifact(folder)


def test_sidecar_of_another_format_or_file(artifact_copy):
    folder = artifact_copy("onnx")
    with pytest.raises(UserError, match="says format 'onnx' but this is loaded as 'torchscript'"):
        open_artifact(folder, "torchscript")
    (folder / "model.onnx").rename(folder / "other.onnx")
    with pytest.raises(UserError, match="is missing"):
        open_artifact(folder)
    with pytest.raises(UserError, match="describes 'model.onnx', not 'other.onnx'"):
        open_artifact(folder / "other.onnx")


def test_malformed_sidecar(artifact_copy):
    folder = artifact_copy("onnx")
    meta = json.loads((folder / SIDECAR).read_text())
    meta["crop"] = "wide"
    (folder / SIDECAR).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="bad value for 'crop'"):
        open_artifact(folder)
    (folder / SIDECAR).write_text("{not json")
    with pytest.raises(UserError, match="unreadable model.json"):
        open_artifact(folder)


def test_crops_of_the_wrong_size_are_refused(artifacts):
    check_input(artifacts["onnx"], torch.zeros(2, 3, 128, 256))
    with pytest.raises(UserError, match=r"runs N×3×128×256 crops, got \(2, 3, 64, 64\)"):
        check_input(artifacts["onnx"], torch.zeros(2, 3, 64, 64))
