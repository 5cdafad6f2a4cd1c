"""Small real inputs for the export tests: MiniCity target images, a fast profile, seeded tiny weights,
and one TorchScript + one ONNX artifact of them shared by the tests that only read artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from adaptseg.artifact.folder import Artifact
from adaptseg.export.calibration import minicity_images
from adaptseg.export.profile import profile_path
from adaptseg.io import write_png

TINY = "tiny-deeplabv2"


def write_profile(path: Path, **sections) -> Path:
    """An export profile extending ``export/default.yaml`` with ``sections`` merged in."""
    path.write_text(yaml.safe_dump({"extends": str(profile_path("default")), **sections}))
    return path


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory) -> Path:
    """Three MiniCity Cityscapes-like val images (128×256 PNGs)."""
    folder = tmp_path_factory.mktemp("calib")
    for i, image in enumerate(minicity_images(3)):
        write_png(folder / f"minicity_{i}.png", image)
    return folder


@pytest.fixture(scope="session")
def fast_profile(tmp_path_factory) -> Path:
    """The default profile with 3 parity crops in batches of 2 (so the batch-of-1 path runs too)."""
    return write_profile(
        tmp_path_factory.mktemp("profile") / "fast.yaml", parity={"images": 3, "batch_size": 2}
    )


def seeded_weights(path: Path, preset: str = TINY, seed: int = 0) -> Path:
    """A randomly initialised (seeded) model of ``preset`` saved as safetensors with its preset name."""
    from adaptseg.models import build_model, save_weights

    torch.manual_seed(seed)
    model = build_model(preset)
    return save_weights(model, path, metadata={"preset": preset, "num_classes": str(model.num_classes)})


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    return seeded_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, tiny_weights, calib_dir, fast_profile) -> dict[str, Artifact]:
    """``{"torchscript": …, "onnx": …}`` exported once from :func:`tiny_weights`; copy before modifying."""
    from adaptseg.export.exporter import export_model

    root = tmp_path_factory.mktemp("artifacts")
    return {
        fmt: export_model(tiny_weights, fmt, out=root / fmt, profile=fast_profile, calib=calib_dir)
        for fmt in ("torchscript", "onnx")
    }


@pytest.fixture
def artifact_copy(tmp_path, artifacts):
    """``artifact_copy(fmt)`` → a private copy of a shared artifact folder, safe to damage."""

    def copy(fmt: str) -> Path:
        dest = tmp_path / f"{fmt}-copy"
        shutil.copytree(artifacts[fmt].folder, dest)
        return dest

    return copy
