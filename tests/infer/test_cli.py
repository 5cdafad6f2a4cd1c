"""`adaptseg infer` on a folder (with a corrupt image) and `adaptseg pseudo-label` with resume."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from adaptseg.cli.app import app
from adaptseg.infer.store import PseudoLabelStore
from adaptseg.io import read_image, read_label, write_png

from .conftest import make_cityscapes, random_image

runner = CliRunner()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    write_png(root / "a.png", random_image(40, 56, 0))
    write_png(root / "sub" / "b.png", random_image(33, 47, 1))  # another size, in a sub-folder
    (root / "sub").mkdir(exist_ok=True)
    import cv2

    ok, jpg = cv2.imencode(".jpg", random_image(24, 64, 2))
    (root / "sub" / "c.jpg").write_bytes(jpg.tobytes())
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_infer_writes_every_kind_and_skips_the_corrupt_image(folder, tmp_path, weights):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "infer",
            "--model",
            weights,
            "--folder",
            str(folder),
            "--out",
            str(out),
            "--colour",
            "--overlay",
            "--confidence",
            "--preset",
            "minicity",
            "--device",
            "cpu",
            "--batch-size",
            "3",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.output and "skipped 1" in result.output
    sizes = {"a": (40, 56), "sub/b": (33, 47), "sub/c": (24, 64)}
    for rel, (h, w) in sizes.items():
        label = read_label(out / "label" / f"{rel}.png")
        assert label.shape == (h, w) and int(label.max()) < 19
        colour = read_image(out / "colour" / f"{rel}.png")
        assert colour.shape == (h, w, 3)
        assert read_image(out / "overlay" / f"{rel}.png").shape == (h, w, 3)
        conf = read_label(out / "confidence" / f"{rel}.png")
        assert conf.shape == (h, w) and int(conf.min()) >= 255 // 19  # max prob ≥ 1/C
    assert not (out / "label" / "broken.png").exists()
    from adaptseg.data.labels import PALETTE

    label = read_label(out / "label" / "a.png")
    assert np.array_equal(read_image(out / "colour" / "a.png"), PALETTE[label])


def test_infer_without_problems_exits_zero_and_writes_labels_only(tmp_path, weights):
    root = tmp_path / "images"
    write_png(root / "x.png", random_image(20, 30, 3))
    result = runner.invoke(
        app,
        ["infer", "--model", weights, "--folder", str(root), "--out", str(tmp_path / "o"), "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "label" / "x.png").is_file() and not (tmp_path / "o" / "colour").exists()


def test_infer_bad_input_is_a_one_line_error(tmp_path, weights):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app, ["infer", "--model", weights, "--folder", str(tmp_path / "empty"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "no images" in result.output
    result = runner.invoke(
        app,
        [
            "infer",
            "--model",
            weights,
            "--folder",
            str(tmp_path),
            "--out",
            str(tmp_path),
            "--set",
            "batch_sise=2",
        ],
    )
    assert result.exit_code == 2 and "batch_size" in result.output


def test_output_names_keep_extensions_only_when_stems_collide(tmp_path):
    from adaptseg.infer.run import output_names

    files = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "s" / "b.png"]
    assert output_names(files, tmp_path) == ["a.jpg", "a.png", "s/b"]
    # a full name may equal another input's short name: that one keeps its full name too
    files = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "a.jpg.png", tmp_path / "c.d.png"]
    names = output_names(files, tmp_path)
    assert names == ["a.jpg", "a.png", "a.jpg.png", "c.d"] and len(set(names)) == len(names)


def test_infer_writes_one_output_per_input_when_stems_collide(tmp_path, weights):
    root = tmp_path / "images"
    write_png(root / "x.png", random_image(20, 30, 3))
    import cv2

    (root / "x.jpg").write_bytes(cv2.imencode(".jpg", random_image(22, 30, 4))[1].tobytes())
    result = runner.invoke(
        app,
        [
            "infer",
            "--model",
            weights,
            "--folder",
            str(root),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
            "--colour",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 2 image(s)" in result.output
    for kind in ("label", "colour"):
        assert sorted(p.name for p in (tmp_path / "o" / kind).iterdir()) == ["x.jpg.png", "x.png.png"]
    assert read_label(tmp_path / "o" / "label" / "x.jpg.png").shape == (22, 30)


def test_pseudo_label_resumes_after_interruption(tmp_path, weights):
    root = tmp_path / "cs"
    ids = make_cityscapes(root, [(40, 56), (32, 48), (40, 56)], split="train")
    out = tmp_path / "pseudo"
    args = [
        "pseudo-label",
        "--model",
        weights,
        "--dataset",
        "cityscapes",
        "--root",
        str(root),
        "--split",
        "train",
        "--out",
        str(out),
        "--preset",
        "minicity",
        "--topk",
        "2",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    store = PseudoLabelStore(out)
    assert store.ids() == sorted(ids) and store.topk == 2
    label, conf, topk = store.read(ids[1])
    assert label.shape == conf.shape == (32, 48) and topk.classes.shape == (2, 32, 48)

    # interruption: one image never finished its label, another left a truncated confidence map
    untouched = store.paths(ids[0])["label"].stat().st_mtime_ns
    store.paths(ids[1])["label"].unlink()
    conf_path = store.paths(ids[2])["conf"]
    conf_path.write_bytes(conf_path.read_bytes()[:-12])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 of 3 image(s) already labelled" in result.output and "wrote 2" in result.output
    assert store.paths(ids[0])["label"].stat().st_mtime_ns == untouched
    assert store.ids() == sorted(ids)
    np.testing.assert_array_equal(store.read(ids[1]).label, label)  # the redone image is the same

    result = runner.invoke(app, [*args[:-4], "--topk", "3"])
    assert result.exit_code == 2 and "topk=2" in result.output
