"""Exports are atomic: a failure leaves no partial artifact (and keeps an existing one), a parity miss
deletes the artifact."""

import errno

import pytest
import torch

from adaptseg.artifact.folder import file_sha256
from adaptseg.errors import UserError
from adaptseg.export import exporter
from adaptseg.export.calibration import parity_crops
from adaptseg.export.exporter import export_model
from adaptseg.export.profile import ParityBar
from adaptseg.export.staging import staged_folder
from adaptseg.export.verify import ParityError, verify_artifact
from adaptseg.io import list_images
from adaptseg.models import build_model, load_preset
from adaptseg.models.deploy import deploy_module_for
from tests.export.conftest import TINY, write_profile


def test_staged_folder_renames_on_success_and_leaves_nothing_on_failure(tmp_path, artifact_copy):
    root = tmp_path / "out"
    root.mkdir()
    dest = root / "art"
    with pytest.raises(RuntimeError), staged_folder(dest) as stage:
        (stage / "model.onnx").write_bytes(b"partial")
        raise RuntimeError("crash while writing")
    assert list(root.iterdir()) == []
    with staged_folder(dest) as stage:
        (stage / "a").write_text("1")
    assert (dest / "a").read_text() == "1"
    # a folder of other files is never replaced, with or without force (issue 15, defect 1)
    for force in (False, True):
        with pytest.raises(UserError, match="not an adaptseg artifact"), staged_folder(dest, force=force):
            pass
    assert (dest / "a").read_text() == "1"
    # an artifact is replaced with force only
    artifact = artifact_copy("onnx")
    with pytest.raises(UserError, match="already exists.*--force"), staged_folder(artifact):
        pass
    with staged_folder(artifact, force=True) as stage:
        (stage / "b").write_text("2")
    assert sorted(p.name for p in artifact.iterdir()) == ["b"]
    assert sorted(p.name for p in artifact.parent.iterdir()) == ["onnx-copy", "out"]


def test_artifact_folders_get_the_umask_permissions(tmp_path):
    """Issue 15, defect 8: not 0700 whatever the umask."""
    import os

    old = os.umask(0o022)
    try:
        with staged_folder(tmp_path / "art") as stage:
            (stage / "a").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "art").stat().st_mode & 0o777 == 0o755


def test_failure_after_the_model_file_is_written_leaves_no_artifact(
    tmp_path, monkeypatch, tiny_weights, calib_dir, fast_profile, artifact_copy
):
    def broken_meta(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exporter, "_meta", broken_meta)
    with pytest.raises(
        UserError, match="cannot write the artifact: no space left on device.*free some space"
    ):
        export_model(
            tiny_weights, "onnx", out=tmp_path / "new", profile=fast_profile, calib=calib_dir, crop=(32, 64)
        )
    assert not (tmp_path / "new").exists() and [p.name for p in tmp_path.iterdir() if "new" in p.name] == []
    # a --force re-export that fails keeps the artifact that was there
    existing = artifact_copy("onnx")
    before = file_sha256(existing / "model.onnx")
    with pytest.raises(
        UserError, match="cannot write the artifact: no space left on device.*free some space"
    ):
        export_model(tiny_weights, "onnx", out=existing, force=True, profile=fast_profile, calib=calib_dir)
    assert file_sha256(existing / "model.onnx") == before
    assert sorted(p.name for p in existing.parent.iterdir() if p.name.startswith(".")) == []


def test_parity_miss_deletes_the_artifact_and_keeps_the_previous_one(
    tmp_path, tiny_weights, calib_dir, artifact_copy
):
    impossible = write_profile(
        tmp_path / "strict.yaml",
        parity={
            "images": 2,
            "batch_size": 2,
            "min_agreement": 1.0,
            "max_abs_diff": 1e-9,
            "max_rel_diff": 0.0,
        },
    )
    existing = artifact_copy("onnx")
    before = file_sha256(existing / "model.onnx")
    with pytest.raises(ParityError, match=r"differs from eager PyTorch: .*artifact deleted") as info:
        export_model(
            tiny_weights, "onnx", out=existing, force=True, profile=impossible, calib=calib_dir, fp16=True
        )
    assert "\n" not in str(info.value)
    assert file_sha256(existing / "model.onnx") == before
    assert [p.name for p in existing.parent.iterdir() if p.name.startswith(".")] == []


def test_verify_deletes_an_artifact_that_is_not_the_model(artifact_copy, calib_dir):
    """A tampered artifact (another model's weights under this sidecar) fails parity and is deleted."""
    folder = artifact_copy("torchscript")
    torch.manual_seed(123)
    other = deploy_module_for(build_model(TINY), load_preset(TINY))
    crops = parity_crops(list_images(calib_dir)[:2], (128, 256))
    with pytest.raises(ParityError, match="argmax agreement"):
        verify_artifact(
            folder, other, crops, ParityBar(min_agreement=0.999, max_abs_diff=1e-3), images=2, batch_size=2
        )
    assert not folder.exists()
