"""Kill a CPU training run with SIGKILL mid-way, resume it, and get the weights of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from adaptseg.train.checkpoint import load_checkpoint
from adaptseg.train.logger import read_scalars
from adaptseg.train.pipeline import run_recipe
from tests.train.tiny import make_split, tiny_recipe

CLI = [sys.executable, "-c", "from adaptseg.cli.app import main; main()", "train"]


def _env() -> dict[str, str]:
    # the same thread count as this process (conftest: 1), so the subprocess computes what run_recipe does here
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def _wait_for_checkpoint(proc: subprocess.Popen, path, timeout: float = 300.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            return load_checkpoint(path)["iteration"]
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}): {proc.stderr.read().decode()}")
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def train_until_killed(recipe, out, stage: str) -> int:
    """``adaptseg train RECIPE --out OUT`` in a child process, SIGKILLed once ``stage`` wrote a checkpoint;
    returns the checkpoint's iteration."""
    proc = subprocess.Popen(
        [*CLI, str(recipe), "--out", str(out)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for_checkpoint(proc, out / stage / "checkpoint-last.pt")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return load_checkpoint(out / stage / "checkpoint-last.pt")["iteration"]


def test_sigkill_then_resume_is_bit_exact(tmp_path):
    data = make_split(tmp_path / "data", n=6)
    iters = 16
    recipe = tiny_recipe(
        tmp_path / "r.yaml", data, iters=iters, checkpoint_every=4, log_every=1, deterministic=True
    )
    run_recipe(recipe, out=tmp_path / "full")  # uninterrupted, in this process

    killed = tmp_path / "killed"
    stopped_at = train_until_killed(recipe, killed, "source")
    assert 0 < stopped_at < iters and not (killed / "source" / "DONE").exists()

    assert [r.status for r in run_recipe(recipe, out=killed, resume=True)] == ["resumed"]

    full = load_file(tmp_path / "full" / "source" / "student.safetensors")
    again = load_file(killed / "source" / "student.safetensors")
    assert full.keys() == again.keys()
    assert all(torch.equal(full[k], again[k]) for k in full), (
        "resumed weights differ from the uninterrupted run"
    )
    # the log reads as one run: every iteration once, with the same losses
    a, b = (
        read_scalars(tmp_path / "full" / "source" / "scalars.csv"),
        read_scalars(killed / "source" / "scalars.csv"),
    )
    assert [i for i, _ in b["loss/ce"]] == list(range(1, iters + 1))
    assert a["loss/ce"] == b["loss/ce"]
