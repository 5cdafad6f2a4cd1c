"""File I/O that never loses data and never returns silent garbage.

* Writes go to a temporary file in the destination folder and are renamed into place, so a crash
  leaves either the old file or the new one, never a truncated one.
* Reads check what OpenCV returns (``cv2.imread`` gives ``None`` for missing or corrupt files) and
  raise :class:`~adaptseg.errors.UserError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from adaptseg.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path`` (atomic on POSIX).

    The temporary name keeps the destination's suffix so writers that pick a format by extension
    (OpenCV, torch.onnx) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, _FILE_MODE)  # mkstemp made it 0600; give it the mode a plain open() would
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_png(path: str | Path, array: np.ndarray, *, rgb: bool | None = None) -> None:
    """Write a uint8/uint16 array as PNG atomically. ``rgb=True`` (default for H×W×3) converts RGB→BGR."""
    array = np.ascontiguousarray(array)
    if array.ndim == 3 and array.shape[2] == 3 and (rgb is None or rgb):
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise UserError("could not encode PNG", path=path)
    write_bytes_atomic(path, buf.tobytes())


def _imread(path: str | Path, flags: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", path=path, fix="check the dataset root and layout")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise UserError("unreadable or corrupt image", path=path, fix="re-extract or delete the file")
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB H×W×3 (grey and 16-bit inputs are converted)."""
    img = _imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel 8-bit label PNG (trainIds or labelIds) as uint8 H×W, unchanged.

    Palette PNGs (GTA5, Mapillary) must not go through this: use :func:`read_palette_indices`.
    """
    img = _imread(path, cv2.IMREAD_UNCHANGED)
    if img.ndim == 3:
        raise UserError(
            f"expected a single-channel label image, got {img.shape[2]} channels",
            path=path,
            fix="use the dataset's id/trainId PNGs, not the colour ones",
        )
    if img.dtype != np.uint8:
        raise UserError(f"expected an 8-bit label image, got {img.dtype}", path=path)
    return img


def read_raw(path: str | Path) -> np.ndarray:
    """Read an image with every channel and bit depth as stored (OpenCV order: BGR for colour)."""
    return _imread(path, cv2.IMREAD_UNCHANGED)


def read_palette_indices(path: str | Path) -> np.ndarray:
    """Read the palette *indices* of an 8-bit palette PNG (PIL mode "P") as uint8 H×W.

    GTA5 and Mapillary store class ids as palette indices; OpenCV expands palettes to colours, so —
    as mmseg and DAFormer do — Pillow reads the indices. Grey 8-bit PNGs are returned as stored.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", path=path, fix="check the dataset root and layout")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise UserError(
                    f"expected a palette or grey label PNG, got mode {img.mode}",
                    path=path,
                    fix="use the dataset's label PNGs, not converted colour images",
                )
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise UserError(
            f"unreadable or corrupt PNG ({exc})", path=path, fix="re-extract or delete the file"
        ) from None


def list_images(folder: str | Path) -> list[Path]:
    """All image files under ``folder`` (recursive), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("folder not found", path=folder, fix="pass an existing folder of images")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
