"""A non-editable install carries the presets, profiles and recipes: build the sdist, build the wheel from
it, install that into a fresh venv and use it from an unrelated folder, by name only (~15 s)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: what the sdist is built from (the YAML folders without the exports that land in models/<name>/)
SOURCES = (
    "adaptseg",
    "models",
    "infer",
    "export",
    "train",
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
)


def _run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _copy_sources(dest: Path) -> None:
    def ignore(folder: str, names: list[str]) -> list[str]:
        exports = Path(folder) == REPO / "models"  # models/<name>/ holds exported artifacts (not pretrained/)
        return [
            n
            for n in names
            if n == "__pycache__"
            or n == "_packaged"
            or (exports and n != "pretrained" and (Path(folder) / n).is_dir())
        ]

    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)


def _build_wheel(tmp_path: Path) -> Path:
    """sdist from a copy of the checkout, then the wheel from the unpacked sdist (PEP 517 hooks, no network)."""
    tree, dist = tmp_path / "tree", tmp_path / "dist"
    _copy_sources(tree)
    hook = "import sys; from setuptools import build_meta as b; print(getattr(b, sys.argv[1])(sys.argv[2]))"
    sdist = dist / _run([sys.executable, "-c", hook, "build_sdist", dist], cwd=tree).strip().splitlines()[-1]
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    unpacked = next((tmp_path / "unpacked").iterdir())
    wheel = (
        dist / _run([sys.executable, "-c", hook, "build_wheel", dist], cwd=unpacked).strip().splitlines()[-1]
    )
    return wheel


def _fresh_venv(path: Path) -> Path:
    """A venv whose own site-packages is empty; this environment's packages (torch, …) are visible after it
    through a ``.pth`` line, so that only adaptseg itself is installed."""
    _run([sys.executable, "-m", "venv", "--without-pip", path], cwd=path.parent)
    python = path / "bin" / "python"
    purelib = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=path).strip()
    )
    here = [p for p in sys.path if p.endswith("site-packages")]
    (purelib / "dependencies.pth").write_text("\n".join(here) + "\n")
    return python


def _shipped(folder: str, pattern: str = "*.yaml") -> set[str]:
    return {p.relative_to(REPO / folder).as_posix() for p in (REPO / folder).glob(pattern)}


def test_installed_wheel_finds_presets_profiles_and_recipes_by_name(tmp_path):
    wheel = _build_wheel(tmp_path)
    packaged = {
        n.removeprefix("adaptseg/_packaged/")
        for n in zipfile.ZipFile(wheel).namelist()
        if n.startswith("adaptseg/_packaged/")
    }
    expected = {f"{folder}/{name}" for folder in ("models", "infer", "export") for name in _shipped(folder)}
    expected |= {f"train/{name}" for name in _shipped("train", "**/*.yaml")}
    expected |= {f"models/{name}" for name in _shipped("models", "pretrained/*.safetensors")}
    assert any(name.startswith("models/pretrained/") for name in expected)  # MiniCity's pre-trained encoders
    assert packaged == expected  # every YAML file of the four folders, the encoders, and nothing else

    python = _fresh_venv(tmp_path / "venv")
    # --ignore-installed: never touch the adaptseg this environment has (visible through the .pth line)
    pip = [sys.executable, "-m", "pip", "--python", python]
    _run([*pip, "install", "--no-deps", "--no-index", "--ignore-installed", "--quiet", wheel], cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ADAPTSEG_HOME")}
    env |= {"ADAPTSEG_MINICITY": str(tmp_path / "minicity"), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    adaptseg = python.parent / "adaptseg"

    where = _run(
        [
            python,
            "-c",
            "import adaptseg.resources as r; from adaptseg.models.presets import exports_dir; "
            "print(r.resource_dir(r.TRAIN)); print(exports_dir())",
        ],
        elsewhere,
        env,
    )
    installed, exports = map(Path, where.split())
    assert installed.parts[-2:] == ("_packaged", "train") and installed.is_relative_to(tmp_path / "venv")
    assert exports == Path("models")  # exports land in the working folder, never inside site-packages

    listing = _run([adaptseg, "models", "list"], elsewhere, env)
    assert all(name.removesuffix(".yaml") in listing for name in _shipped("models"))

    images = elsewhere / "street"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(images / f"frame{i}.png"), rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    _run(
        [
            adaptseg,
            "infer",
            "--model",
            "tiny-deeplabv2",
            "--preset",
            "minicity",
            "--folder",
            "street",
            "--out",
            "pred",
            "--device",
            "cpu",
        ],
        elsewhere,
        env,
    )
    for i in range(2):
        label = cv2.imread(str(elsewhere / "pred" / "label" / f"frame{i}.png"), cv2.IMREAD_UNCHANGED)
        assert label is not None and label.shape == (48, 80) and label.max() < 19

    overrides = [
        "minicity.size=[64,128]",
        "minicity.images=4",
        "schedule.iters=2",
        "schedule.warmup_iters=1",
        "eval.every=0",
        "workers=0",
        "checkpoint_every=2",
    ]
    _run(
        [
            adaptseg,
            "train",
            "source_only/minicity-gta5",
            *(a for o in overrides for a in ("--set", o)),
            "--out",
            "run",
        ],
        elsewhere,
        env,
    )
    stage = elsewhere / "run" / "source"
    assert (stage / "DONE").is_file() and (stage / "student.safetensors").stat().st_size > 0
    assert "tiny-deeplabv2" in (elsewhere / "run" / "recipe.yaml").read_text()  # the packaged recipe's preset
