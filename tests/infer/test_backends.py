"""How `--model` resolves to a backend, the backend registry, and the eager backend's options."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from adaptseg.errors import UserError
from adaptseg.infer.backends import Backend, TorchBackend, load_backend
from adaptseg.infer.config import BackendOptions

from .conftest import Deploy, TinyNet

CROPS = torch.rand(2, 3, 32, 48) * 255


def test_weights_file_run_folder_and_preset_name_resolve(tmp_path, weights):
    from adaptseg.models import build_model, save_weights

    from_file = load_backend(weights, "cpu")
    assert isinstance(from_file, Backend) and from_file.num_classes == 19 and from_file.crop is None
    assert from_file.mean == pytest.approx((123.675, 116.28, 103.53))
    expected = from_file(CROPS)
    assert expected.shape == (2, 19, 32, 48)

    # a run folder: the last stage's student.safetensors (no preset in its header) + recipe.yaml's preset
    run = tmp_path / "run"
    (run / "stage2").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"model": {"preset": "tiny-deeplabv2"}}))
    model = build_model("tiny-deeplabv2")
    from adaptseg.models import load_weights

    load_weights(model, weights)
    save_weights(model, run / "stage2" / "student.safetensors")
    torch.testing.assert_close(load_backend(run, "cpu")(CROPS), expected)

    # weights without a preset need --arch
    bare = tmp_path / "bare.safetensors"
    save_weights(model, bare)
    with pytest.raises(UserError, match="--arch"):
        load_backend(bare, "cpu")
    torch.testing.assert_close(load_backend(bare, "cpu", arch="tiny-deeplabv2")(CROPS), expected)

    assert load_backend("tiny-deeplabv2", "cpu").num_classes == 19  # a preset name: random weights


def test_unknown_models_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        load_backend(tmp_path / "nope" / "x.safetensors", "cpu")
    odd = tmp_path / "model.xyz"
    odd.write_text("?")
    with pytest.raises(UserError, match="is not a weights file"):
        load_backend(odd, "cpu")
    with pytest.raises(UserError, match="student.safetensors"):
        load_backend(tmp_path, "cpu")
    export = _fake_artifact(tmp_path / "export")
    meta = json.loads((export / "model.json").read_text())
    (export / "model.json").write_text(json.dumps({**meta, "format": "hologram"}))
    with pytest.raises(UserError, match="names format 'hologram', which no runtime here runs"):
        load_backend(export, "cpu")
    with pytest.raises(UserError, match="no such file or folder, nor a model preset"):
        load_backend("no-such-preset", "cpu")


def test_registered_runtimes_load_by_suffix_and_by_model_json(tmp_path, monkeypatch):
    """A runtime registered in the artifact layer runs artifacts of its format, by folder or by file."""
    from adaptseg.artifact import runtime

    registry = runtime.Registry("artifact runtime", ())
    for name, entry in runtime.runtimes().items():
        registry.add(name, entry)
    monkeypatch.setattr(runtime, "RUNTIMES", registry)
    opened = []

    @runtime.register_runtime("fake", model_file="model.fake", suffixes=(".fake",))
    def open_fake(artifact, device=None):
        opened.append(artifact.model_path)
        torch.manual_seed(0)
        return TorchBackend(Deploy(TinyNet(3)), num_classes=3, device=device, crop=(32, 48))

    folder = _fake_artifact(tmp_path / "fake")
    assert load_backend(folder, "cpu").crop == (32, 48)
    assert load_backend(folder / "model.fake", "cpu").num_classes == 3
    assert opened == [folder / "model.fake"] * 2
    with pytest.raises(ValueError, match="twice"):
        runtime.register_runtime("fake", model_file="model.fake")(open_fake)


def _fake_artifact(folder):
    """A minimal valid artifact folder of format ``fake`` (sidecar + model file with its hash)."""
    from adaptseg.artifact.folder import class_table, file_sha256
    from adaptseg.artifact.meta import ArtifactMeta, SourceInfo

    folder.mkdir()
    (folder / "model.fake").write_bytes(b"weights")
    classes, palette = class_table(3)
    meta = ArtifactMeta(
        name="fake",
        format="fake",
        file="model.fake",
        file_bytes=7,
        file_sha256=file_sha256(folder / "model.fake"),
        precision="fp32",
        exporter="test",
        crop=(32, 48),
        stride=(16, 24),
        output_stride=1,
        num_classes=3,
        classes=classes,
        palette=palette,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        source=SourceInfo(model="x", preset="x", weights_sha256="0"),
    )
    (folder / "model.json").write_text(meta.model_dump_json())
    return folder


def test_a_missing_adaptseg_module_is_never_reported_as_an_unknown_format(monkeypatch):
    """Item 8 of issue 14: a renamed runtime module is an import error, not "unknown format"."""
    from adaptseg.artifact import runtime

    monkeypatch.setattr(
        runtime, "RUNTIMES", runtime.Registry("artifact runtime", ("adaptseg.artifact.renamed_runtime",))
    )
    with pytest.raises(ModuleNotFoundError, match="renamed_runtime"):
        runtime.runtimes()


def test_only_the_optional_dependency_itself_is_reported_as_not_installed(monkeypatch):
    import builtins

    from adaptseg.artifact.onnx import import_onnxruntime

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    missing = "onnxruntime"
    with pytest.raises(UserError, match="ONNX Runtime is not installed.*pip install onnxruntime"):
        import_onnxruntime()
    missing = "adaptseg.something_renamed"  # onnxruntime present, but a module it needs is ours and gone
    with pytest.raises(ModuleNotFoundError, match="something_renamed"):
        import_onnxruntime()


def test_eager_options_keep_the_outputs():
    torch.manual_seed(0)
    module = Deploy(TinyNet(4))
    plain = TorchBackend(module, num_classes=4, device="cpu", options=BackendOptions(channels_last=False))
    ref = plain(CROPS)
    assert plain.mean == pytest.approx((120.0, 110.0, 100.0))  # read from the module's buffer
    fast = TorchBackend(module, num_classes=4, device="cpu", options=BackendOptions(channels_last=True))
    torch.testing.assert_close(fast(CROPS), ref, atol=1e-4, rtol=1e-4)
    amp = TorchBackend(module, num_classes=4, device="cpu", options=BackendOptions(amp=True))
    out = amp(CROPS)
    assert out.dtype == torch.float32 and amp.amp_dtype == torch.bfloat16
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_a_gpu_is_a_user_error():
    with pytest.raises(UserError, match="--device cpu"):
        load_backend("tiny-deeplabv2", "cuda")


@pytest.mark.slow
def test_compiled_backend_matches_eager():
    torch.manual_seed(0)
    module = Deploy(TinyNet(4))
    eager = TorchBackend(module, num_classes=4, device="cpu", options=BackendOptions(channels_last=False))
    compiled = TorchBackend(module, num_classes=4, device="cpu", options=BackendOptions(compile=True))
    torch.testing.assert_close(compiled(CROPS), eager(CROPS), atol=1e-4, rtol=1e-4)
