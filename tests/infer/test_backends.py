"""How `--model` resolves to a backend, the backend registry, and the eager backend's options."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from adaptseg.errors import UserError
from adaptseg.infer import backends
from adaptseg.infer.backends import Backend, TorchBackend, load_backend, register_backend
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
    with pytest.raises(UserError, match="model not found"):
        load_backend(tmp_path / "nope" / "x.safetensors", "cpu")
    odd = tmp_path / "model.xyz"
    odd.write_text("?")
    with pytest.raises(UserError, match="no backend reads"):
        load_backend(odd, "cpu")
    with pytest.raises(UserError, match="student.safetensors"):
        load_backend(tmp_path, "cpu")
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.json").write_text(json.dumps({"format": "hologram"}))
    with pytest.raises(UserError, match="hologram"):
        load_backend(export, "cpu")
    with pytest.raises(UserError, match="unknown model preset"):
        load_backend("no-such-preset", "cpu")


def test_registered_kinds_load_by_suffix_and_by_model_json(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "BACKEND_KINDS", dict(backends.BACKEND_KINDS))
    calls = []

    @register_backend("fake", suffixes=(".fake",))
    def load_fake(path, *, device, options, arch=None):
        calls.append(path)
        torch.manual_seed(0)
        return TorchBackend(Deploy(TinyNet(3)), num_classes=3, device=device, crop=(32, 48))

    artifact = tmp_path / "model.fake"
    artifact.write_text("weights")
    assert load_backend(artifact, "cpu").crop == (32, 48)
    (tmp_path / "model.json").write_text(json.dumps({"format": "fake"}))
    assert load_backend(tmp_path, "cpu").num_classes == 3
    assert calls == [artifact, tmp_path]
    with pytest.raises(ValueError, match="twice"):
        register_backend("fake")(load_fake)


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
