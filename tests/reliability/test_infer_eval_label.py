"""Audit of `infer`, `eval`, `pseudo-label`, `data` and `models` with bad input and faults.

Each case is a regression test: the exit status, one ``error:`` line naming the file (and the fix), no
traceback, nothing the user had destroyed and no partial file left behind. File-system faults are
simulated (the suite runs as root, whom ``chmod`` does not stop) by making the real write path raise the
``OSError`` the kernel would: ``EACCES`` from ``mkdir``, ``ENOSPC`` from a write, ``EBUSY`` from the
rename that puts a file in place.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptseg.infer.store import PseudoLabelStore, model_sha256
from adaptseg.io import read_label, write_png
from tests.infer.conftest import make_cityscapes, random_image

from .audit import assert_no_partials, assert_unchanged, assert_user_error, cli, snapshot

SIZES = [(40, 56), (32, 48), (40, 56)]


# ------------------------------------------------------------------------------------------------ fixtures
def _weights(folder: Path, seed: int) -> str:
    from adaptseg.models import build_model, save_weights

    torch.manual_seed(seed)
    path = folder / f"seed{seed}" / "student.safetensors"
    path.parent.mkdir(parents=True)
    save_weights(build_model("tiny-deeplabv2"), path, {"preset": "tiny-deeplabv2"})
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    """Two tiny-deeplabv2 weight files with different random weights."""
    folder = tmp_path_factory.mktemp("models")
    return _weights(folder, 0), _weights(folder, 1)


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> tuple[Path, list[str]]:
    """A Cityscapes-layout tree with a train and a val split of three small images each."""
    root = tmp_path_factory.mktemp("cs")
    make_cityscapes(root, SIZES, split="val")
    return root, make_cityscapes(root, SIZES, split="train")


def write_image(path: Path, image: np.ndarray) -> None:
    """Write an image in the format its suffix names."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, image)
    assert ok
    path.write_bytes(data.tobytes())


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    write_png(folder / "a.png", random_image(24, 32, 0))
    write_png(folder / "sub" / "b.png", random_image(20, 28, 1))
    return folder


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def infer(model: str, folder: Path, out: Path, *extra: str):
    return cli("infer", "--model", model, "--folder", folder, "--out", out, "--device", "cpu", *extra)


def pseudo_label(model: str, root: Path, out: Path, *extra: str, split: str = "train"):
    return cli(
        "pseudo-label",
        "--model",
        model,
        "--dataset",
        "cityscapes",
        "--root",
        root,
        "--split",
        split,
        "--out",
        out,
        "--preset",
        "minicity",
        "--device",
        "cpu",
        *extra,
    )


@pytest.fixture
def store(tmp_path, models, cityscapes, one_thread) -> Path:
    """A complete store of model 0 on the train split."""
    out = tmp_path / "pseudo"
    outcome = pseudo_label(models[0], cityscapes[0], out)
    assert outcome.exit_code == 0, outcome.stderr
    return out


def fail_under(
    monkeypatch, target: object, name: str, root: Path, error: int, message: str, *, after: int = 0
):
    """Make ``target.name(path, …)`` raise ``OSError(error)`` for paths under ``root`` (after ``after`` calls)."""
    real = getattr(target, name)
    calls = []

    def failing(first, *args, **kwargs):
        if str(first).startswith(str(root)):
            calls.append(first)
            if len(calls) > after:
                raise OSError(error, message, None if error == errno.ENOSPC else str(first))
        return real(first, *args, **kwargs)

    monkeypatch.setattr(target, name, failing)


# ------------------------------------------------------------------------------------------------ infer
def test_infer_skips_a_corrupt_image_by_name_and_writes_the_rest(images, tmp_path, models, one_thread):
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    outcome = infer(models[0], images, out)
    assert outcome.exit_code == 1 and "Traceback" not in outcome.stderr
    assert "broken.jpg" in outcome.stderr and "skipped 1" in outcome.stderr
    assert "wrote 2 image(s)" in outcome.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "label/a.png",
        "label/sub/b.png",
    ]
    assert_no_partials(out)


def test_infer_keeps_one_output_per_input_when_names_collide(tmp_path, models, one_thread):
    folder = tmp_path / "images"
    for i, name in enumerate(["x.png", "x.jpg", "y.png", "y.jpg", "z.png"]):
        write_image(folder / name, random_image(16 + i, 24, i))
    out = tmp_path / "out"
    outcome = infer(models[0], folder, out)
    assert outcome.exit_code == 0, outcome.stderr
    written = sorted(p.name for p in (out / "label").iterdir())
    assert written == ["x.jpg.png", "x.png.png", "y.jpg.png", "y.png.png", "z.png"]
    assert "wrote 5 image(s)" in outcome.stdout  # the count printed is the count of files written
    assert read_label(out / "label" / "x.jpg.png").shape == (17, 24)  # each output is its own input's
    assert read_label(out / "label" / "x.png.png").shape == (16, 24)


def test_infer_on_an_empty_folder(tmp_path, models):
    (tmp_path / "empty").mkdir()
    line = assert_user_error(infer(models[0], tmp_path / "empty", tmp_path / "out"), tmp_path / "empty")
    assert "no images" in line and not (tmp_path / "out").exists()


def test_infer_on_a_folder_of_non_images(tmp_path, models):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    (tmp_path / "docs" / "data.csv").write_text("1,2")
    line = assert_user_error(infer(models[0], tmp_path / "docs", tmp_path / "out"), tmp_path / "docs")
    assert "no images" in line and "fix:" in line and not (tmp_path / "out").exists()


def test_infer_folder_that_is_a_file(images, tmp_path, models):
    line = assert_user_error(infer(models[0], images / "a.png", tmp_path / "out"), images / "a.png")
    assert "is a file, not a folder" in line and "not found" not in line


def test_infer_folder_that_does_not_exist(tmp_path, models):
    line = assert_user_error(infer(models[0], tmp_path / "nowhere", tmp_path / "out"), tmp_path / "nowhere")
    assert "folder not found" in line


def test_infer_out_under_a_regular_file(images, tmp_path, models, one_thread):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    line = assert_user_error(infer(models[0], images, blocker / "out"), blocker / "out")
    assert "Not a directory" in line and "fix:" in line
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize(
    ("target", "name", "error", "cause"),
    [
        (Path, "mkdir", errno.EACCES, "Permission denied"),
        (Path, "write_bytes", errno.ENOSPC, "No space left on device"),
        (os, "replace", errno.EBUSY, "Device or resource busy"),
    ],
    ids=["unwritable", "disk-full", "device-busy"],
)
def test_infer_file_system_errors_are_one_line(
    images, tmp_path, models, monkeypatch, one_thread, target, name, error, cause
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    before = snapshot(out)
    fail_under(monkeypatch, target, name, out / "label", error, cause)
    line = assert_user_error(infer(models[0], images, out), out / "label")
    assert cause in line and "fix:" in line
    assert_no_partials(out)
    after = {k: v for k, v in snapshot(out).items() if k in before}
    assert after == before  # what the user had is still there


def test_infer_out_that_is_a_regular_file(images, tmp_path, models):
    out = tmp_path / "results.txt"
    out.write_text("mine")
    line = assert_user_error(infer(models[0], images, out), out)
    assert "Not a directory" in line
    assert out.read_text() == "mine"


def test_infer_mistyped_run_folder_says_no_such_path(tmp_path, images):
    (tmp_path / "runs" / "mine" / "stage").mkdir(parents=True)
    typo = tmp_path / "runs" / "mien" / "stage"
    line = assert_user_error(infer(str(typo), images, tmp_path / "out"), typo)
    assert "no such path" in line and "unknown model preset" not in line
    assert str(tmp_path / "runs" / "mine") in line  # the near miss is suggested


def test_infer_missing_weights_file_says_no_such_path(tmp_path, images):
    line = assert_user_error(infer("student.safetensors", images, tmp_path / "out"), "student.safetensors")
    assert "no such path" in line


def test_infer_unknown_preset_name_suggests_the_nearest(tmp_path, images):
    line = assert_user_error(infer("tiny-deeplabv22", images, tmp_path / "out"), "tiny-deeplabv22")
    assert "nor a model preset" in line and "did you mean the preset 'tiny-deeplabv2'" in line
    assert not (tmp_path / "out").exists()


def test_infer_unknown_inference_preset(tmp_path, images, models):
    line = assert_user_error(infer(models[0], images, tmp_path / "out", "--preset", "minicty"), "minicty")
    assert "unknown inference preset" in line and "did you mean 'minicity'" in line


# ------------------------------------------------------------------------------------------ pseudo-label
def test_pseudo_label_resumes_after_an_interrupted_run(tmp_path, models, cityscapes, monkeypatch, one_thread):
    """A full disk on the second image: one line naming the file; after space is freed the run resumes."""
    root, ids = cityscapes
    out = tmp_path / "pseudo"
    fail_under(
        monkeypatch, Path, "write_bytes", out / "conf", errno.ENOSPC, "No space left on device", after=1
    )
    line = assert_user_error(pseudo_label(models[0], root, out), out / "conf")
    assert "No space left on device" in line and "free some disk space" in line
    assert_no_partials(out)
    assert PseudoLabelStore(out).ids() == [sorted(ids)[0]]  # the first image is complete, nothing else

    monkeypatch.undo()
    outcome = pseudo_label(models[0], root, out)
    assert outcome.exit_code == 0, outcome.stderr
    assert "1 of 3 image(s) already labelled" in outcome.stdout and "wrote 2" in outcome.stdout
    assert PseudoLabelStore(out).ids() == sorted(ids)
    assert_no_partials(out)


def _mismatch(out: Path, outcome, field: str) -> str:
    line = assert_user_error(outcome, out / "store.json", field)
    assert "--force" in line and "--out" in line
    return line


def test_pseudo_label_refuses_a_store_of_another_model(store, models, cityscapes):
    before = snapshot(store)
    line = _mismatch(store, pseudo_label(models[1], cityscapes[0], store), "model=")
    assert "other weights" in line
    assert_unchanged(store, before)


def test_pseudo_label_accepts_the_same_weights_moved(store, models, cityscapes, tmp_path, one_thread):
    moved = tmp_path / "elsewhere" / "student.safetensors"
    moved.parent.mkdir()
    shutil.copy(models[0], moved)
    outcome = pseudo_label(str(moved), cityscapes[0], store, "--batch-size", "1")  # speed settings may differ
    assert outcome.exit_code == 0, outcome.stderr
    assert "3 of 3 image(s) already labelled" in outcome.stdout


def test_pseudo_label_refuses_a_store_of_another_split(store, models, cityscapes):
    before = snapshot(store)
    _mismatch(store, pseudo_label(models[0], cityscapes[0], store, split="val"), "split='train'")
    assert_unchanged(store, before)


def test_pseudo_label_refuses_a_store_of_another_dataset(store, models, cityscapes):
    info = json.loads((store / "store.json").read_text())
    info["origin"]["dataset"] = "acdc"  # as if an ACDC run had written this folder
    (store / "store.json").write_text(json.dumps(info))
    before = snapshot(store)
    _mismatch(store, pseudo_label(models[0], cityscapes[0], store), "dataset='acdc'")
    assert_unchanged(store, before)


def test_pseudo_label_refuses_other_tta_settings(store, models, cityscapes):
    before = snapshot(store)
    _mismatch(store, pseudo_label(models[0], cityscapes[0], store, "--set", "tta.flip=true"), "tta.flip")
    assert_unchanged(store, before)


def test_pseudo_label_refuses_another_topk(store, models, cityscapes):
    before = snapshot(store)
    _mismatch(store, pseudo_label(models[0], cityscapes[0], store, "--topk", "2"), "topk=0")
    assert_unchanged(store, before)


def test_pseudo_label_force_refuses_a_folder_that_is_not_a_store(tmp_path, models, cityscapes):
    out = tmp_path / "mine"
    (out / "label").mkdir(parents=True)
    (out / "label" / "holiday.jpg").write_bytes(b"photo")
    (out / "thesis.tex").write_text("years of work")
    before = snapshot(out)
    line = assert_user_error(pseudo_label(models[0], cityscapes[0], out, "--force"), out)
    assert "not a pseudo-label store" in line and "thesis.tex" in line
    assert_unchanged(out, before)


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_pseudo_label_out_that_is_a_regular_file(tmp_path, models, cityscapes, force):
    out = tmp_path / "labels.txt"
    out.write_text("mine")
    line = assert_user_error(
        pseudo_label(models[0], cityscapes[0], out, *(["--force"] if force else [])), out
    )
    assert "fix:" in line and "remove" not in line
    assert out.read_text() == "mine"


def test_pseudo_label_force_starts_a_store_of_another_model_over(store, models, cityscapes, one_thread):
    first = read_label(store / "label" / f"{cityscapes[1][0]}.png")
    outcome = pseudo_label(models[1], cityscapes[0], store, "--force")
    assert outcome.exit_code == 0, outcome.stderr
    assert "removed the pseudo-label store" in outcome.stdout and "wrote 3" in outcome.stdout
    origin = json.loads((store / "store.json").read_text())["origin"]
    assert origin["model_sha256"] == model_sha256(models[1])
    assert not np.array_equal(read_label(store / "label" / f"{cityscapes[1][0]}.png"), first)
    assert_no_partials(store)


# ------------------------------------------------------------------------------------------------- eval
def _predictions(root: Path, out: Path, split: str = "val") -> None:
    """A trainId PNG at its image's size for every image of the split."""
    for image in sorted((root / "leftImg8bit" / split).rglob("*.png")):
        h, w = read_label(
            image.parent.parent.parent.parent
            / "gtFine"
            / split
            / image.parent.name
            / image.name.replace("leftImg8bit", "gtFine_labelIds")
        ).shape
        write_png(out / f"{image.stem}.png", np.zeros((h, w), np.uint8))


def test_eval_blames_a_ground_truth_of_the_wrong_size(tmp_path):
    root = tmp_path / "cs"
    ids = make_cityscapes(root, SIZES, split="val")
    _predictions(root, tmp_path / "pred")
    city, base = ids[1].split("/")
    gt = root / "gtFine" / "val" / city / f"{base}_gtFine_labelIds.png"
    write_png(gt, np.full((16, 24), 7, np.uint8))  # the ground truth, not the prediction, is off
    before = snapshot(tmp_path)
    line = assert_user_error(
        cli("eval", "--pred", tmp_path / "pred", "--dataset", "cityscapes", "--root", root), gt
    )
    assert "ground truth is 24x16" in line and "data check" in line
    assert str(tmp_path / "pred") not in line.split(" — ")[0]
    assert_unchanged(tmp_path, before)


def test_eval_model_blames_a_ground_truth_of_the_wrong_size(tmp_path, models, one_thread):
    root = tmp_path / "cs"
    ids = make_cityscapes(root, SIZES, split="val")
    city, base = ids[0].split("/")
    gt = root / "gtFine" / "val" / city / f"{base}_gtFine_labelIds.png"
    write_png(gt, np.full((20, 28), 7, np.uint8))
    outcome = cli(
        "eval", "--model", models[0], "--dataset", "cityscapes", "--root", root, "--preset", "minicity"
    )
    line = assert_user_error(outcome, gt)
    assert "ground truth is 28x20" in line


def test_eval_still_blames_a_prediction_of_the_wrong_size(tmp_path):
    root = tmp_path / "cs"
    make_cityscapes(root, SIZES, split="val")
    _predictions(root, tmp_path / "pred")
    bad = sorted((tmp_path / "pred").iterdir())[0]
    write_png(bad, np.zeros((10, 10), np.uint8))
    line = assert_user_error(
        cli("eval", "--pred", tmp_path / "pred", "--dataset", "cityscapes", "--root", root), bad
    )
    assert "prediction is 10x10" in line


def test_eval_on_a_missing_split_folder(tmp_path):
    root = tmp_path / "cs"
    make_cityscapes(root, SIZES[:1], split="val")
    (tmp_path / "pred").mkdir()
    line = assert_user_error(
        cli(
            "eval", "--pred", tmp_path / "pred", "--dataset", "cityscapes", "--root", root, "--split", "test"
        ),
        root,
    )
    assert "test" in line and "fix:" in line


def test_eval_pred_folder_that_is_a_file(tmp_path):
    root = tmp_path / "cs"
    make_cityscapes(root, SIZES[:1], split="val")
    (tmp_path / "pred.png").write_bytes(b"x")
    line = assert_user_error(
        cli("eval", "--pred", tmp_path / "pred.png", "--dataset", "cityscapes", "--root", root),
        tmp_path / "pred.png",
    )
    assert "is a file, not a folder" in line


# -------------------------------------------------------------------------------------- data and models
def test_data_minicity_rejects_a_bad_size(tmp_path):
    line = assert_user_error(cli("data", "minicity", "--out", tmp_path / "mc", "--size", "10x10"), "--size")
    assert "too small" in line and not (tmp_path / "mc").exists()


def test_data_minicity_out_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    outcome = cli(
        "data",
        "minicity",
        "--out",
        blocker / "mc",
        "--images",
        "1",
        "--size",
        "32x64",
        "--domains",
        "cityscapes",
    )
    line = assert_user_error(outcome, blocker / "mc")
    assert "Not a directory" in line and ".partial" not in line
    assert blocker.read_text() == "mine"


def test_data_check_on_a_missing_root(tmp_path):
    line = assert_user_error(cli("data", "check", "cityscapes", tmp_path / "nowhere"), tmp_path / "nowhere")
    assert "not found" in line


def test_models_list_with_no_match():
    line = assert_user_error(cli("models", "list", "zzz*"), "zzz*")
    assert "models list" in line
