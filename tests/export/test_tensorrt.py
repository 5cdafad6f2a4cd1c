"""TensorRT: what runs without the library (builder settings, calibration batches, the missing-library
error and its CLI exit) and, where tensorrt is installed, an engine build with parity."""

import importlib.util

import numpy as np
import pytest
from typer.testing import CliRunner

from adaptseg.artifact.tensorrt import TensorRTMissing, import_tensorrt
from adaptseg.cli.app import app
from adaptseg.export.calibration import CropBatches, center_crop
from adaptseg.export.profile import load_profile
from adaptseg.export.tensorrt import builder_settings

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_builder_settings_follow_the_profile(tmp_path):
    fp16 = builder_settings(load_profile("trt-fp16").tensorrt, "fp16", (128, 256))
    assert fp16.input_shapes == ((1, 3, 128, 256), (4, 3, 128, 256), (8, 3, 128, 256))
    assert fp16.fp16 and not fp16.int8 and fp16.calibration_cache is None
    assert fp16.workspace_bytes == 4 << 30
    assert (
        fp16.timing_cache is not None
        and fp16.timing_cache.name == "timing.cache"
        and "~" not in str(fp16.timing_cache)
    )

    int8_profile = load_profile("trt-int8").tensorrt.model_copy(
        update={"timing_cache": str(tmp_path / "t.cache")}
    )
    a = builder_settings(int8_profile, "int8", (128, 256), weights_sha256="aa")
    b = builder_settings(int8_profile, "int8", (128, 256), weights_sha256="bb")
    assert a.int8 and a.fp16  # layers int8 cannot take fall back to fp16
    assert a.calibration_cache.parent == tmp_path and a.calibration_cache != b.calibration_cache  # per model
    assert (
        builder_settings(int8_profile.model_copy(update={"timing_cache": ""}), "fp32", (8, 8)).timing_cache
        is None
    )


def test_crop_batches_feed_fixed_size_batches_and_cycle_the_last_one():
    images = [np.full((40, 60, 3), i * 10, np.uint8) for i in range(5)]
    batches = CropBatches(images, crop=(32, 48), batch_size=2)
    assert len(batches) == 3 and batches.shape == (2, 3, 32, 48)
    got = list(batches)
    assert all(b.shape == (2, 3, 32, 48) and b.dtype == np.float32 and b.flags.c_contiguous for b in got)
    firsts = [b[:, 0, 0, 0].tolist() for b in got]
    assert firsts == [[0.0, 10.0], [20.0, 30.0], [40.0, 0.0]]  # the last batch is filled from the start
    # the calibrator's stateful view: every batch once, then None, again after reset
    seen = [batches.next_batch() for _ in range(4)]
    assert seen[3] is None and all(np.array_equal(s, g) for s, g in zip(seen[:3], got, strict=True))
    batches.reset()
    assert np.array_equal(batches.next_batch(), got[0])
    with pytest.raises(IndexError):
        batches.batch(3)


def test_center_crop_upscales_small_images_and_cuts_the_centre():
    image = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    assert np.array_equal(center_crop(image, (4, 6)), image[3:7, 7:13])
    grown = center_crop(image, (30, 30))  # scale ×3 (height decides), keep ratio, then cut 30×30
    assert grown.shape == (30, 30, 3)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_is_one_line_naming_what_to_install(tmp_path):
    with pytest.raises(TensorRTMissing, match="pip install 'tensorrt>=10'"):
        import_tensorrt()
    result = CliRunner().invoke(
        app, ["export", "tiny-deeplabv2", "--format", "trt", "--out", str(tmp_path / "a")]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("error: TensorRT is not installed") and "tensorrt" in lines[0]
    )
    assert not (tmp_path / "a").exists()


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_engine_files_register_a_backend_that_needs_tensorrt(artifacts, tmp_path):
    """A .engine artifact resolves to the TensorRT runtime, which says what to install."""
    import json
    import shutil

    from adaptseg.artifact.runtime import runtimes
    from adaptseg.infer.backends import load_backend

    folder = tmp_path / "engine"
    shutil.copytree(artifacts["onnx"].folder, folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.onnx").rename(folder / "model.engine")
    meta.update(format="trt", file="model.engine")
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(TensorRTMissing, match="TensorRT is not installed"):
        load_backend(folder / "model.engine", device="cpu")
    assert ".engine" in runtimes()["trt"].suffixes


def test_trt_engine_build_and_parity(tmp_path, tiny_weights, calib_dir, fast_profile):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be on the CPU machines)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA device")
    from adaptseg.export.exporter import export_model

    artifact = export_model(tiny_weights, "trt", out=tmp_path / "trt", profile=fast_profile, calib=calib_dir)
    assert artifact.model_path.name == "model.engine" and artifact.meta.batch is not None
    assert artifact.meta.parity.agreement >= 0.999
    fp16 = export_model(tiny_weights, "trt", out=tmp_path / "fp16", profile="trt-fp16", calib=calib_dir)
    assert fp16.meta.precision == "fp16" and fp16.meta.parity.agreement >= 0.99
