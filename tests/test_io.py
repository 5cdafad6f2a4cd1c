"""Atomic writes and image reads that fail loudly, naming the file."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from adaptseg import io
from adaptseg.errors import UserError


def test_atomic_path_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.bin"]  # temp file cleaned up


def test_atomic_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_bytes_atomic(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == io._FILE_MODE
    assert io._FILE_MODE & 0o044  # readable by group/others under a usual umask, unlike mkstemp's 0600


def test_png_round_trip_keeps_rgb_order(tmp_path):
    img = np.zeros((4, 5, 3), np.uint8)
    img[..., 0] = 200  # red
    io.write_png(tmp_path / "a.png", img)
    back = io.read_image(tmp_path / "a.png")
    assert back.shape == (4, 5, 3) and (back[..., 0] == 200).all() and (back[..., 2] == 0).all()
    label = np.arange(20, dtype=np.uint8).reshape(4, 5)
    io.write_png(tmp_path / "l.png", label)
    assert np.array_equal(io.read_label(tmp_path / "l.png"), label)


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="bad.png: unreadable or corrupt image"):
        io.read_image(bad)
    with pytest.raises(UserError, match="missing.png: file not found"):
        io.read_image(tmp_path / "missing.png")


def test_palette_indices_are_read_as_ids_not_colours(tmp_path):
    ids = np.array([[7, 26], [255, 0]], np.uint8)
    img = Image.fromarray(ids, mode="P")
    palette = [0] * 768
    palette[7 * 3 : 7 * 3 + 3] = [128, 64, 128]
    img.putpalette(palette)
    img.save(tmp_path / "gta.png")
    assert np.array_equal(io.read_palette_indices(tmp_path / "gta.png"), ids)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="expected a palette or grey label PNG"):
        io.read_palette_indices(tmp_path / "rgb.png")


def test_read_label_rejects_colour_images(tmp_path):
    io.write_png(tmp_path / "c.png", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(UserError, match="single-channel"):
        io.read_label(tmp_path / "c.png")
