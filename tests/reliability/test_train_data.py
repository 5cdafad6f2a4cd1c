"""Audit cases for ``train``, recipes and dataset reading: bad input and faults a careless or unlucky user meets.

Each case asserts the exit status, one line naming the file (or the override) and the fix, no traceback,
and that nothing the user had was destroyed and no partial file was left. Runs use the tiny band split
and micro recipe of ``tests/train/tiny.py`` (a few iterations, one torch thread).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from adaptseg.errors import UserError
from adaptseg.train.logger import read_scalars
from adaptseg.train.run_lock import LOCK_NAME, run_dir_lock
from tests.data.layouts import rgb, write_palette_png
from tests.reliability.audit import (
    Outcome,
    assert_no_partials,
    assert_unchanged,
    assert_user_error,
    cli,
    snapshot,
)
from tests.train.conftest import one_torch_thread  # noqa: F401 - autouse: torch on one thread here too
from tests.train.tiny import make_split, tiny_recipe


@pytest.fixture
def data(tmp_path) -> Path:
    return make_split(tmp_path / "data", n=4)


def first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def with_unknown_value(root: Path, value: int = 200) -> Path:
    """Put ``value`` (not a Cityscapes labelId) into the first label of the split; returns the label."""
    label = first(root, "gtFine/*/*/*_gtFine_labelIds.png")
    array = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    array[0, :4] = value
    cv2.imwrite(str(label), array)
    return label


def train(recipe: Path, out: Path, *args: str) -> Outcome:
    """``adaptseg train``; its progress lines ("stage 'source' … on cpu") are left out of stderr."""
    outcome = cli("train", recipe, "--out", out, *args)
    return replace(
        outcome,
        stderr="".join(
            line for line in outcome.stderr.splitlines(keepends=True) if not line.startswith("stage '")
        ),
    )


def assert_unchanged_but_lock(run: Path, before: dict[str, str]) -> None:
    """Nothing in the run folder changed, except the lock file (a run records itself there while it holds it)."""
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != LOCK_NAME} == {
        k: v for k, v in before.items() if k != LOCK_NAME
    }


def logged_iterations(run: Path) -> list[int]:
    return [it for it, _ in read_scalars(run / "source" / "scalars.csv")["loss/ce"]]


# ----------------------------------------------------------------------------------------- datasets
def test_missing_dataset_folder(tmp_path):
    recipe = tiny_recipe(tmp_path / "r.yaml", tmp_path / "no-such-data")
    line = assert_user_error(train(recipe, tmp_path / "run"), tmp_path / "no-such-data")
    assert "root not found" in line and "fix:" in line
    assert not list((tmp_path / "run").rglob("checkpoint-*")) and not list((tmp_path / "run").rglob("DONE"))
    assert_no_partials(tmp_path / "run")


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_training_image_is_one_line_with_any_worker_count(tmp_path, data, workers):
    image = first(data, "leftImg8bit/train/*/*.png")
    image.write_bytes(b"not a png")
    before = snapshot(data)
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=4, workers=workers)
    line = assert_user_error(train(recipe, tmp_path / "run"), image)
    assert "corrupt" in line and "fix: re-extract or delete the file" in line
    assert len(line) < 400, line  # not a flattened worker traceback
    assert_unchanged(data, before)
    assert_no_partials(tmp_path / "run")


def test_rgb_label_in_a_palette_dataset_with_two_workers(tmp_path):
    root = tmp_path / "gta5"
    (root / "images").mkdir(parents=True)
    for i in range(1, 5):
        cv2.imwrite(str(root / "images" / f"{i:05d}.png"), rgb(i, (32, 48)))
        write_palette_png(root / "labels" / f"{i:05d}.png", np.full((32, 48), 7, np.uint8))
    broken = root / "labels" / "00002.png"
    cv2.imwrite(str(broken), rgb(9, (32, 48)))  # a colour image where GTA5 ships palette indices
    recipe = tiny_recipe(
        tmp_path / "r.yaml",
        root,
        iters=4,
        workers=2,
        extra={"data": {"source": {"name": "gta5", "split": "all"}}},
    )
    line = assert_user_error(train(recipe, tmp_path / "run"), broken)
    assert "palette" in line and "fix:" in line and len(line) < 400


def test_unknown_label_values_warn_once_per_file_in_training(tmp_path, data, caplog):
    label = with_unknown_value(data)
    # 12 iterations × batch 2 over 4 images: every file is read six times, by two worker processes
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=12, workers=2, checkpoint_every=100)
    with caplog.at_level("WARNING", logger="adaptseg.data"):
        outcome = train(recipe, tmp_path / "run")
    assert outcome.exit_code == 0, outcome.stderr
    warnings = [r.getMessage() for r in caplog.records if "not in the" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert str(label) in warnings[0] and "200" in warnings[0] and "--strict" in warnings[0]


def test_unknown_label_values_stop_training_with_strict(tmp_path, data):
    label = with_unknown_value(data)
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=4, workers=2)
    line = assert_user_error(train(recipe, tmp_path / "run", "--strict"), label, "200")
    assert "adaptseg data check cityscapes" in line
    assert not (tmp_path / "run" / "source" / "DONE").exists()
    assert_no_partials(tmp_path / "run")


@pytest.fixture
def val_split(tmp_path) -> tuple[Path, Path]:
    """A Cityscapes val split whose first label holds the unknown value 200, and a folder of predictions."""
    data = make_split(tmp_path / "data", n=3, split="val")
    pred = tmp_path / "pred"
    pred.mkdir()
    for image in sorted(data.glob("leftImg8bit/val/*/*.png")):
        cv2.imwrite(str(pred / f"{image.stem}.png"), np.zeros((32, 48), np.uint8))
    return data, pred


def evaluate(data: Path, pred: Path, *extra: str) -> Outcome:
    return cli("eval", "--pred", pred, "--dataset", "cityscapes", "--root", data, "--split", "val", *extra)


def test_unknown_label_values_warn_in_evaluation(val_split, caplog):
    data, pred = val_split
    label = with_unknown_value(data)
    with caplog.at_level("WARNING", logger="adaptseg.data"):
        outcome = evaluate(data, pred)
    assert outcome.exit_code == 0, outcome.stderr
    warnings = [r.getMessage() for r in caplog.records if "not in the" in r.getMessage()]
    assert len(warnings) == 1 and str(label) in warnings[0] and "200" in warnings[0], warnings


def test_unknown_label_values_stop_evaluation_with_strict(tmp_path, val_split):
    data, pred = val_split
    label = with_unknown_value(data)
    before = snapshot(tmp_path)
    assert_user_error(evaluate(data, pred, "--strict"), label, "200")
    assert_unchanged(tmp_path, before)


# ------------------------------------------------------------------------------------------ recipes
def test_unknown_recipe_key_suggests_the_nearest(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data, extra={"optim": {"lrr": 0.1}})
    line = assert_user_error(train(recipe, tmp_path / "run"), recipe, "optim.lrr")
    assert "did you mean 'optim.lr'" in line
    assert not (tmp_path / "run").exists()


def test_set_on_a_missing_key_names_the_override(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data)
    before = snapshot(tmp_path)
    line = assert_user_error(train(recipe, tmp_path / "run", "--set", "optim.lrr=0.1"), "--set optim.lrr=0.1")
    assert "did you mean 'optim.lr'" in line
    assert_unchanged(tmp_path, before)


def test_set_with_a_wrong_type_names_the_override(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data)
    line = assert_user_error(
        train(recipe, tmp_path / "run", "--set", "schedule.iters=many"),
        "--set schedule.iters=many",
        "schedule.iters",
    )
    assert "bad value" in line


def test_set_on_a_missing_method_option_names_the_override(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data)
    assert_user_error(
        train(recipe, tmp_path / "run", "--set", "stages.0.options.no_such_option=1"),
        "--set stages.0.options.no_such_option=1",
    )


def test_missing_extends_parent_names_the_recipe_that_asked(tmp_path, data):
    parent = tiny_recipe(tmp_path / "base.yaml", data)
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"extends": "bsae.yaml", "seed": 1}))
    line = assert_user_error(train(child, tmp_path / "run"), child, "bsae.yaml")
    assert "fix:" in line and parent.is_file()


# ---------------------------------------------------------------------------------- run folders
def test_second_run_into_a_held_run_folder_names_the_holder(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=4)
    run = tmp_path / "run"
    assert train(recipe, run).exit_code == 0
    before = snapshot(run)
    with run_dir_lock(run, "adaptseg train (test)"):
        line = assert_user_error(train(recipe, run, "--resume"), run, f"in use by pid {os.getpid()}")
        assert socket.gethostname() in line and "--out" in line
    assert_unchanged_but_lock(run, before)


def test_stale_lock_of_a_dead_process_does_not_block(tmp_path, data):
    dead = subprocess.Popen(["true"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "x"}))
    outcome = train(tiny_recipe(tmp_path / "r.yaml", data, iters=2), run)
    assert outcome.exit_code == 0, outcome.stderr
    assert (run / "source" / "DONE").is_file()
    assert (run / LOCK_NAME).read_text() == ""  # released: no holder recorded


def test_stale_lock_without_flock_support_is_judged_by_pid_and_host(tmp_path, data, monkeypatch):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    run = tmp_path / "run"
    run.mkdir()
    lock = run / LOCK_NAME
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # a live holder
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=2)
    assert_user_error(train(recipe, run), run, f"in use by pid {os.getpid()}")
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert train(recipe, run).exit_code == 0


def test_out_under_a_regular_file(tmp_path, data):
    blocker = tmp_path / "results"
    blocker.write_text("my notes")
    recipe = tiny_recipe(tmp_path / "r.yaml", data)
    line = assert_user_error(train(recipe, blocker / "run"), blocker / "run")
    assert "not a directory" in line.lower() and "--out" in line
    assert blocker.read_text() == "my notes"
    line = assert_user_error(train(recipe, blocker), blocker)
    assert "is a file" in line and blocker.read_text() == "my notes"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_an_unwritable_folder(tmp_path, data):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    line = assert_user_error(train(tiny_recipe(tmp_path / "r.yaml", data), locked / "run"), locked / "run")
    assert "permission denied" in line


# ------------------------------------------------------------------------------ checkpoints, resume
def test_truncated_checkpoint_is_named_and_kept(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=4, checkpoint_every=2)
    run = tmp_path / "run"
    assert train(recipe, run).exit_code == 0
    (run / "source" / "DONE").unlink()
    checkpoint = run / "source" / "checkpoint-last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    before = snapshot(run)
    line = assert_user_error(train(recipe, run, "--resume"), checkpoint)
    assert "unreadable checkpoint" in line and "delete it" in line
    assert_unchanged_but_lock(run, before)


def test_resume_without_a_checkpoint_starts_the_stage(tmp_path, data):
    outcome = cli(
        "train", tiny_recipe(tmp_path / "r.yaml", data, iters=2), "--out", tmp_path / "run", "--resume"
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert "stage 'source': no checkpoint to resume, starting it" in outcome.stderr
    assert (tmp_path / "run" / "source" / "DONE").is_file()


CLI = [sys.executable, "-m", "adaptseg", "train"]


def _start(recipe: Path, run: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [*CLI, str(recipe), "--out", str(run)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a suite started in the background (`cmd &` in a script) inherits SIGINT ignored, and Python then
        # installs no KeyboardInterrupt handler: give the child Ctrl-C as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@contextlib.contextmanager
def live_run(recipe: Path, run: Path, timeout: float = 120.0) -> Iterator[subprocess.Popen]:
    """``adaptseg train`` in a child process, handed over once it has written its first checkpoint."""
    proc = _start(recipe, run)
    deadline = time.monotonic() + timeout
    try:
        while not (run / "source" / "checkpoint-last.pt").is_file():
            assert proc.poll() is None, f"training exited early ({proc.returncode}): {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_live_run_holds_its_folder_then_ctrl_c_says_how_to_resume(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=300, checkpoint_every=2, log_every=1)
    run = tmp_path / "run"
    with live_run(recipe, run) as proc:
        # paused (still holding its lock) so that it cannot finish its 300 iterations while the two
        # checks below start their own processes on a loaded machine
        proc.send_signal(signal.SIGSTOP)
        # a second run is told who holds the folder, not that the live stage "was interrupted"
        line = assert_user_error(train(recipe, run), run, f"in use by pid {proc.pid}")
        assert "interrupted" not in line
        assert_user_error(train(recipe, run, "--resume"), f"in use by pid {proc.pid}")
        proc.send_signal(signal.SIGINT)  # pending until it runs again: Ctrl-C mid-stage
        proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=60)
    errors = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and len(errors) == 1, stderr
    assert "stage 'source' interrupted" in errors[0] and f"--out {run} --resume" in errors[0]
    assert not (run / "source" / "DONE").exists()
    assert_no_partials(run)
    outcome = train(recipe, run, "--set", "schedule.iters=12", "--resume")  # a changed recipe is refused
    assert_user_error(outcome, run, "schedule.iters")
    outcome = train(recipe, run, "--resume")
    assert outcome.exit_code == 0, outcome.stderr
    assert logged_iterations(run) == list(range(1, 301))  # one row per iteration: nothing doubled


def test_sigkill_then_plain_rerun_points_at_resume_and_resume_finishes(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=100, checkpoint_every=2, log_every=1)
    run = tmp_path / "run"
    with live_run(recipe, run) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = snapshot(run)
    line = assert_user_error(train(recipe, run), run / "source")
    assert "--resume" in line
    assert_unchanged_but_lock(run, before)
    outcome = train(recipe, run, "--resume")
    assert outcome.exit_code == 0, outcome.stderr
    assert (run / "source" / "DONE").is_file() and logged_iterations(run) == list(range(1, 101))
    assert_no_partials(run)


def test_a_forked_child_of_a_killed_holder_does_not_keep_the_folder(tmp_path):
    """Data-loading workers are forked: they must not inherit the run lock and hold it after a SIGKILL."""
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import os, sys, time\n"
                "from adaptseg.train.run_lock import run_dir_lock\n"
                f"with run_dir_lock({str(run)!r}):\n"
                "    child = os.fork()\n"
                "    if child == 0:\n"
                "        time.sleep(60); os._exit(0)\n"  # a worker that outlives its parent
                "    print(child, flush=True); time.sleep(60)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    child = None
    try:
        child = int(holder.stdout.readline())
        with pytest.raises(UserError, match="in use by pid"):
            with run_dir_lock(run):
                pass
        holder.kill()
        holder.wait()
        with run_dir_lock(run):  # free at once, while the forked child still sleeps
            assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        holder.kill()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
