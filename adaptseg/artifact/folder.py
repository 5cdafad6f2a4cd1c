"""Exported artifacts on disk: one folder with the model file and its ``model.json`` sidecar.

::

    models/<name>/
      model.onnx | model.pt | model.engine   the deploy module (DESIGN.md "Contracts") in one format
      model.json                             :class:`~adaptseg.artifact.meta.ArtifactMeta`

The sidecar records the file's size and sha256, so a truncated or swapped model file is caught before a
runtime chokes on it; every problem reading an artifact is one :class:`~adaptseg.errors.UserError` line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from adaptseg.artifact.meta import SIDECAR, ArtifactMeta
from adaptseg.config import validate
from adaptseg.errors import UserError


@dataclass(frozen=True)
class Artifact:
    """An artifact folder whose sidecar and model file have been checked against each other."""

    folder: Path
    meta: ArtifactMeta

    @property
    def model_path(self) -> Path:
        return self.folder / self.meta.file

    @property
    def sidecar_path(self) -> Path:
        return self.folder / SIDECAR


# ------------------------------------------------------------------------------------------------ hashing
def weights_sha256(state: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict: every entry's name, dtype, shape and bytes, in name order.

    Two models with equal weights hash equally whatever their device or memory format.
    """
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- class table
def class_table(num_classes: int) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and RGB palette for a model with ``num_classes`` outputs (the Cityscapes 19 when it has 19)."""
    import numpy as np

    from adaptseg.data.labels import CLASSES, PALETTE

    if num_classes == len(CLASSES):
        return list(CLASSES), [tuple(int(v) for v in row) for row in PALETTE]
    rng = np.random.default_rng(num_classes)
    palette = rng.integers(0, 256, size=(num_classes, 3))
    return [f"class_{i}" for i in range(num_classes)], [tuple(int(v) for v in row) for row in palette]


# ------------------------------------------------------------------------------------------------ reading
def _folder_and_file(path: Path) -> tuple[Path, Path | None]:
    if path.is_dir():
        return path, None
    return path.parent, path


def read_sidecar(folder: Path) -> ArtifactMeta:
    """Parse and validate ``folder/model.json`` (one-line error when missing or malformed)."""
    sidecar = folder / SIDECAR
    if not sidecar.is_file():
        raise UserError(
            f"no {SIDECAR} beside the model: an artifact is a folder with the model file and its sidecar",
            path=folder,
            fix="export again with `adaptseg export` (it writes both), or copy the whole artifact folder",
        )
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable {SIDECAR} ({exc})", path=sidecar, fix="re-export the model") from None
    if not isinstance(data, dict):
        raise UserError(f"{SIDECAR} is not a JSON object", path=sidecar, fix="re-export the model")
    return validate(ArtifactMeta, data, source=sidecar)


def _model_file_names() -> set[str]:
    from adaptseg.artifact.runtime import runtimes

    return {runtime.model_file for runtime in runtimes().values()}


def artifact_files(meta: ArtifactMeta) -> set[str]:
    """The names an artifact folder holds: its sidecar and its model file (with an ONNX external-data
    companion, ``<file>.data``, when the weights did not fit in the graph)."""
    return {SIDECAR, meta.file, f"{meta.file}.data"}


def is_artifact_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an artifact and nothing else: a valid ``model.json`` and the files it
    lists (what ``export --force`` may replace without destroying anything of the user's)."""
    if not folder.is_dir() or not (folder / SIDECAR).is_file():
        return False
    try:
        meta = read_sidecar(folder)
    except UserError:
        return False
    return all(entry.name in artifact_files(meta) for entry in folder.iterdir())


def open_artifact(path: str | Path, expected_format: str | None = None) -> Artifact:
    """Resolve ``path`` (the artifact folder or its model file) and check sidecar and file agree.

    Checks, each a one-line :class:`UserError`: the sidecar exists and validates, names the format a
    caller expects, names this file, the file exists, is as long as recorded (truncation) and has the
    recorded sha256 (a model file swapped under its sidecar).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError("artifact not found", path=path, fix="pass the folder written by `adaptseg export`")
    folder, file = _folder_and_file(path)
    if file is not None and not (folder / SIDECAR).is_file() and file.name not in _model_file_names():
        raise UserError(
            f"no {SIDECAR} beside this file, so it is not an exported artifact",
            path=file,
            fix="pass an artifact folder from `adaptseg export`; a training checkpoint is loaded through its run folder",
        )
    meta = read_sidecar(folder)
    sidecar = folder / SIDECAR
    if expected_format is not None and meta.format != expected_format:
        raise UserError(
            f"{SIDECAR} says format '{meta.format}' but this is loaded as '{expected_format}'",
            path=sidecar,
            fix="pass the artifact folder so the right backend is chosen, or re-export",
        )
    if file is not None and file.name != meta.file:
        raise UserError(
            f"{SIDECAR} describes '{meta.file}', not '{file.name}'",
            path=file,
            fix="keep each exported model in its own folder with its own model.json (re-export to a new --out)",
        )
    model_path = folder / meta.file
    if not model_path.is_file():
        raise UserError(
            f"model file '{meta.file}' named by {SIDECAR} is missing", path=folder, fix="re-export the model"
        )
    size = model_path.stat().st_size
    if size != meta.file_bytes:
        state = "truncated" if size < meta.file_bytes else "longer than recorded"
        raise UserError(
            f"model file is {state} ({size} of {meta.file_bytes} bytes)",
            path=model_path,
            fix="copy the artifact again or re-export it",
        )
    if file_sha256(model_path) != meta.file_sha256:
        raise UserError(
            f"model file does not match its {SIDECAR} (sha256 differs)",
            path=model_path,
            fix="the file was replaced or corrupted: re-export the model so file and sidecar match",
        )
    return Artifact(folder, meta)


def check_crop(artifact: Artifact, actual: tuple[int, int] | None, what: str) -> None:
    """Raise when the model file's fixed input size (``what`` says where it was read) differs from the sidecar's."""
    if actual is not None and tuple(actual) != tuple(artifact.meta.crop):
        h, w = artifact.meta.crop
        raise UserError(
            f"{SIDECAR} says crop {h}x{w} but the {what} takes {actual[0]}x{actual[1]} crops",
            path=artifact.sidecar_path,
            fix="the sidecar does not belong to this model: re-export it",
        )


def check_classes(artifact: Artifact, actual: int | None, what: str) -> None:
    """Raise when the model file's output channels differ from the sidecar's class count."""
    if actual is not None and actual != artifact.meta.num_classes:
        raise UserError(
            f"{SIDECAR} says {artifact.meta.num_classes} classes but the {what} outputs {actual}",
            path=artifact.sidecar_path,
            fix="the sidecar does not belong to this model: re-export it",
        )


def check_input(artifact: Artifact, crops: torch.Tensor) -> None:
    """Raise a one-line error when a crop batch does not fit the artifact's crop (backends call this per batch)."""
    h, w = artifact.meta.crop
    if crops.ndim != 4 or crops.shape[1] != 3 or tuple(crops.shape[2:]) != (h, w):
        raise UserError(
            f"the artifact runs N×3×{h}×{w} crops, got {tuple(crops.shape)}",
            path=artifact.folder,
            fix=f"slide {h}x{w} windows (an inference preset with crop: [{h}, {w}]) or re-export with --crop",
        )
