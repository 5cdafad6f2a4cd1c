"""`adaptseg data check` on miniature trees: clean trees exit 0; each kind of problem exits 1 and is named."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from adaptseg.cli.app import app
from adaptseg.data import DATASETS
from adaptseg.data.check import check_dataset
from tests.data import layouts as L
from tests.data.layouts import H, W, grid, rgb


def run_check(*args: str):
    return CliRunner().invoke(app, ["data", "check", *args], env={"COLUMNS": "200"})


def build_clean(name: str, root):
    return L.make_gta5(root, size_pitfall=False) if name == "gta5" else L.BUILDERS[name](root)


@pytest.mark.parametrize("name", list(DATASETS))
def test_clean_trees_exit_0(tmp_path, name):
    root = build_clean(name, tmp_path / name)
    result = run_check(name, str(root))
    assert result.exit_code == 0, result.output
    assert "clean: no problems found" in result.output
    report = check_dataset(name, root)
    assert report.ok and all(s.problems == 0 for s in report.splits)
    assert sum(s.images for s in report.splits) == sum(
        len(DATASETS[name](root, s.split)) for s in report.splits
    )


def test_broken_cityscapes_tree_exits_1_and_names_every_problem(tmp_path):
    root = L.make_cityscapes(tmp_path)
    train_img, train_gt = root / "leftImg8bit" / "train" / "aachen", root / "gtFine" / "train" / "aachen"
    L.write_png(train_img / "aachen_000009_000019_leftImg8bit.png", rgb(9))  # no label
    L.write_png(train_gt / "aachen_000008_000019_gtFine_labelIds.png", grid([7]))  # no image
    L.write_png(train_gt / "aachen_000001_000019_gtFine_labelIds.png", grid([7], shape=(H, W + 2)))  # size
    L.write_png(
        root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelIds.png", grid([7, 40])
    )
    bochum = root / "leftImg8bit" / "train" / "bochum" / "bochum_000000_000313_leftImg8bit.png"
    bochum.write_bytes(bochum.read_bytes()[:40])  # truncated PNG

    result = run_check("cityscapes", str(root))
    assert result.exit_code == 1, result.output
    out = result.output
    assert "1 image(s) without a label" in out and "aachen_000009_000019_leftImg8bit.png" in out
    assert "1 label file(s) without an image" in out and "aachen_000008_000019_gtFine_labelIds.png" in out
    assert "aachen_000001_000019_gtFine_labelIds.png: label 8x4, image 6x4" in out
    assert "value 40 in 1 file(s), e.g." in out and "frankfurt_000000_000294_gtFine_labelIds.png" in out
    assert "1 unreadable file(s)" in out and "bochum_000000_000313_leftImg8bit.png" in out
    assert "not clean: 5 problem(s)" in out

    report = check_dataset("cityscapes", root)
    train, val, test = report.splits
    assert not report.ok and (train.images, train.labelled) == (4, 3)
    assert [p.name for p in train.unpaired_images] == ["aachen_000009_000019_leftImg8bit.png"]
    assert [p.name for p in train.unpaired_labels] == ["aachen_000008_000019_gtFine_labelIds.png"]
    assert [(p.name, ih, lh) for p, ih, lh in train.size_mismatches] == [
        ("aachen_000001_000019_gtFine_labelIds.png", (H, W), (H, W + 2))
    ]
    assert [p.name for p, _ in train.unreadable] == [bochum.name]
    assert list(val.unknown_values) == [40] and test.problems == 0


def test_gta5_size_pitfall_and_split_mat_ids(tmp_path):
    root = L.make_gta5(tmp_path)
    result = run_check("gta5", str(root))
    assert result.exit_code == 1
    assert "labels/00003.png: label 12x8, image 6x4" in result.output
    (root / "images" / "00005.png").unlink()
    result = run_check("gta5", str(root), "--split", "test")
    assert result.exit_code == 1
    assert "1 id(s) listed in the split but without an image" in result.output and "00005" in result.output
    assert "00003.png" not in result.output  # only the test split was read


def test_unknown_values_in_synthia_and_mapillary(tmp_path):
    synthia = L.make_synthia(tmp_path / "synthia")
    L.write_synthia_label(
        synthia / "RAND_CITYSCAPES" / "GT" / "LABELS" / "0000001.png", grid([3, 23, 300], dtype=np.uint16)
    )
    report = check_dataset("synthia", synthia)
    assert not report.ok and sorted(report.splits[0].unknown_values) == [23, 300]
    mapillary = L.make_mapillary(tmp_path / "mapillary")
    key = L.MAPILLARY_VAL[0]
    L.write_palette_png(mapillary / "validation" / "labels" / f"{key}.png", grid([65, 66]))
    report = check_dataset("mapillary", mapillary, split="val")
    assert not report.ok and list(report.splits[0].unknown_values) == [66]
    assert [s.split for s in report.splits] == ["val"]


def test_absent_and_missing_folders(tmp_path):
    root = L.make_cityscapes(tmp_path)
    shutil.rmtree(root / "leftImg8bit" / "test")
    result = run_check("cityscapes", str(root))
    assert result.exit_code == 0 and "absent" in result.output  # a split not downloaded is not a problem
    result = run_check("cityscapes", str(root), "--split", "test")
    assert result.exit_code == 2 and "missing folder leftImg8bit/test/" in result.output
    shutil.rmtree(root / "gtFine" / "val")  # images without their label folder: every image is unpaired
    result = run_check("cityscapes", str(root), "--split", "val")
    assert result.exit_code == 1 and "missing folder gtFine/val/" in result.output
    assert "1 image(s) without a label" in result.output
    result = run_check("cityscapes", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "error:" in result.output and "nowhere" in result.output
    result = run_check("cityscapes", str(root / "gtFine"))
    assert result.exit_code == 2 and "no cityscapes split found" in result.output
    result = run_check("citiscapes", str(root))
    assert result.exit_code == 2 and "did you mean 'cityscapes'" in result.output


def test_empty_split_is_a_problem(tmp_path):
    root = L.make_darkzurich(tmp_path)
    for f in (root / "rgb_anon" / "test" / "night").rglob("*.png"):
        f.unlink()
    report = check_dataset("darkzurich", root)
    test = next(s for s in report.splits if s.split == "test")
    assert not report.ok and "no images" in test.error


def test_acdc_check_counts_every_condition(tmp_path):
    report = check_dataset("acdc", L.make_acdc(tmp_path))
    assert [(s.split, s.images, s.labelled) for s in report.splits] == [
        ("train", 9, 9),
        ("val", 4, 4),
        ("test", 4, 0),
    ]
    assert np.all([s.problems == 0 for s in report.splits])
