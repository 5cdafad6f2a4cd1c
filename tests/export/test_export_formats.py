"""Every model preset exports to TorchScript and ONNX with parity (tiny presets here, full ones `slow`);
the exporters' choices (script vs trace, legacy vs dynamo ONNX, fp16) are exact where they claim to be."""

import pytest
import torch
from torch import nn

from adaptseg.errors import UserError
from adaptseg.export.exporter import export_model
from adaptseg.export.torchscript import export_torchscript
from adaptseg.models import list_presets, load_preset
from tests.export.conftest import TINY, write_profile

PRESETS = {name: load_preset(name) for name in list_presets()}
TINY_PRESETS = [n for n, p in PRESETS.items() if p.size == "tiny"]
FULL_PRESETS = [n for n, p in PRESETS.items() if p.size == "full"]
#: parity crops: the graph is the same at any crop, so tests export small ones to stay fast (a 64×64
#: crop still leaves a 2×2 map at output stride 32)
CROP = {"tiny": (64, 128), "full": (64, 64)}


def _claims(preset: str, fmt: str) -> None:
    if not getattr(PRESETS[preset].capabilities, fmt):
        pytest.skip(f"preset {preset} does not claim {fmt} export")


def _export_and_check(tmp_path, preset, fmt, calib_dir, profile):
    _claims(preset, fmt)
    artifact = export_model(
        preset, fmt, out=tmp_path / fmt, profile=profile, calib=calib_dir, crop=CROP[PRESETS[preset].size]
    )
    meta = artifact.meta
    assert meta.crop == CROP[PRESETS[preset].size] and meta.source.preset == preset
    parity = meta.parity
    assert parity.agreement >= 0.999 and parity.max_abs_diff <= parity.bar.logit_bound(parity.logit_scale)
    if PRESETS[preset].size == "tiny":
        assert parity.max_abs_diff <= 1e-3  # small logits: the absolute bound of the issue
    if fmt == "torchscript":
        assert meta.exporter == "torch.jit.script", (
            f"{preset} claims torchscript but needed tracing: {meta.exporter_note}"
        )
    assert sorted(p.name for p in artifact.folder.iterdir()) == sorted([meta.file, "model.json"])


@pytest.fixture(scope="module")
def small_profile(tmp_path_factory):
    """Two parity crops run one at a time: the artifacts were recorded with a batch of 2, so this checks the
    dynamic batch too."""
    return write_profile(tmp_path_factory.mktemp("p") / "small.yaml", parity={"images": 2, "batch_size": 1})


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_tiny_presets_export_with_parity(tmp_path, preset, fmt, calib_dir, small_profile):
    _export_and_check(tmp_path, preset, fmt, calib_dir, small_profile)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("preset", FULL_PRESETS)
def test_full_presets_export_with_parity(tmp_path, preset, fmt, calib_dir, small_profile):
    _export_and_check(tmp_path, preset, fmt, calib_dir, small_profile)


@pytest.mark.slow
def test_dynamo_exporter_is_exact_too(tmp_path, tiny_weights, calib_dir):
    profile = write_profile(
        tmp_path / "dynamo.yaml", onnx={"exporter": "dynamo"}, parity={"images": 3, "batch_size": 2}
    )
    artifact = export_model(
        tiny_weights, "onnx", out=tmp_path / "a", profile=profile, calib=calib_dir, crop=(64, 128)
    )
    assert artifact.meta.exporter == "onnx-dynamo" and artifact.meta.opset == 18
    assert artifact.meta.parity.max_abs_diff <= 1e-3 and (tmp_path / "a" / "model.onnx").is_file()
    assert not list((tmp_path / "a").glob("*.data"))  # one self-contained file


@pytest.mark.slow
@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_dynamo_exporter_on_every_tiny_preset(tmp_path, preset, calib_dir):
    profile = write_profile(
        tmp_path / "dynamo.yaml", onnx={"exporter": "dynamo"}, parity={"images": 3, "batch_size": 2}
    )
    _export_and_check(tmp_path, preset, "onnx", calib_dir, profile)


def test_fp16_onnx_meets_the_fp16_bar(tmp_path, tiny_weights, calib_dir, small_profile):
    artifact = export_model(
        tiny_weights,
        "onnx",
        out=tmp_path / "h",
        profile=small_profile,
        calib=calib_dir,
        fp16=True,
        crop=(64, 128),
    )
    meta = artifact.meta
    assert meta.precision == "fp16" and meta.parity.bar.min_agreement == 0.99
    assert 0 < meta.parity.max_abs_diff <= 0.5 and meta.parity.agreement >= 0.99
    import onnx

    weights = onnx.load(str(artifact.model_path)).graph.initializer
    assert {w.data_type for w in weights if len(w.dims) == 4} == {onnx.TensorProto.FLOAT16}


class _NotScriptable(nn.Module):
    """Scripting rejects ``super().forward()``; tracing records it fine."""

    class _Conv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x)

    def __init__(self):
        super().__init__()
        self.conv = self._Conv(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class _BatchDependent(nn.Module):
    """Output depends on the batch size through Python control flow: a trace freezes one branch."""

    def forward(self, x):
        if x.shape[0] > 2:
            return x * 2
        return x + 1


def test_torchscript_traces_when_scripting_fails_and_says_why(tmp_path):
    example = torch.rand(2, 3, 8, 8)
    result = export_torchscript(_NotScriptable().eval(), example, tmp_path / "m.pt")
    assert result.exporter == "torch.jit.trace" and "torch.jit.script failed" in result.note
    with pytest.raises(UserError, match="torch.jit.script cannot compile"):
        export_torchscript(_NotScriptable().eval(), example, tmp_path / "n.pt", mode="script")


def test_torchscript_scripts_control_flow_and_refuses_a_wrong_trace(tmp_path):
    example = torch.rand(2, 3, 8, 8)
    assert export_torchscript(_BatchDependent(), example, tmp_path / "s.pt").exporter == "torch.jit.script"
    with pytest.raises(UserError, match="traced model differs from eager"):
        export_torchscript(_BatchDependent(), example, tmp_path / "t.pt", mode="trace")
    assert not (tmp_path / "t.pt").exists()


def test_int8_is_for_onnx_and_tensorrt_only(tmp_path):
    with pytest.raises(UserError, match="torchscript exports fp32/fp16, not int8"):
        export_model(TINY, "torchscript", out=tmp_path / "x", profile="onnx-int8")
