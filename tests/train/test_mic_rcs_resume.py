"""MIC and RCS compose with the Trainer's switches: a DDB self-training stage with both on, under bf16
autocast and channels-last, killed with SIGKILL and resumed, ends with the weights of an uninterrupted run;
compiled and under torchrun DDP (slow) it runs and the class statistics are computed once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from adaptseg.train.logger import read_scalars
from adaptseg.train.pipeline import run_recipe
from tests.methods.test_ddb import tiny_recipe_dict
from tests.train.test_resume import _env, train_until_killed
from tests.train.tiny import make_split

REPO = Path(__file__).resolve().parents[2]


def st_recipe(tmp_path: Path, iters: int, **top) -> Path:
    """``ddb_st`` (cut path) on the tiny band scenes with ``mic`` on and ``rcs`` on the source stream."""
    data = (
        make_split(tmp_path / "source", n=6, size=(32, 48)),
        make_split(tmp_path / "target", n=5, size=(32, 48), seed=1),
    )
    recipe = tiny_recipe_dict(data, iters=iters, workers=0, **top)
    stage = next(s for s in recipe["stages"] if s["name"] == "r1_st_cu")
    # a low threshold gives the untrained teacher's labels a weight q > 0, so the MIC term trains
    stage["options"].update(mic={"block_size": 8}, pseudo_threshold=0.2)
    recipe["stages"] = [stage]
    recipe["data"]["source"]["rcs"] = {"min_pixels": 20}
    del recipe["data"]["source_pmd"]
    path = tmp_path / "st.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_sigkill_then_resume_is_bit_exact_with_mic_rcs_bf16_channels_last(tmp_path):
    iters = 12
    recipe = st_recipe(
        tmp_path, iters, amp="bf16", channels_last=True, deterministic=True, checkpoint_every=3, log_every=1
    )
    run_recipe(recipe, out=tmp_path / "full")

    killed = tmp_path / "killed"
    assert 0 < train_until_killed(recipe, killed, "r1_st_cu") < iters
    stats = sorted((killed / "class-stats").glob("*.json"))
    assert len(stats) == 1
    assert stats[0].read_bytes() == (tmp_path / "full" / "class-stats" / stats[0].name).read_bytes()
    written = stats[0].stat().st_mtime_ns

    assert [r.status for r in run_recipe(recipe, out=killed, resume=True)] == ["resumed"]
    assert stats[0].stat().st_mtime_ns == written  # the resumed run read the cached statistics
    for name in ("student", "ema"):
        full = load_file(tmp_path / "full" / "r1_st_cu" / f"{name}.safetensors")
        again = load_file(killed / "r1_st_cu" / f"{name}.safetensors")
        assert all(torch.equal(full[k], again[k]) for k in full), f"resumed {name} differs"
    a = read_scalars(tmp_path / "full" / "r1_st_cu" / "scalars.csv")
    b = read_scalars(killed / "r1_st_cu" / "scalars.csv")
    assert [i for i, _ in b["loss/mic"]] == list(range(1, iters + 1))
    assert a["loss/mic"] == b["loss/mic"] and a["loss/src"] == b["loss/src"]
    assert sum(value > 0 for _, value in a["loss/mic"]) >= iters // 2  # q > 0 once the teacher is confident


@pytest.mark.slow  # torch.compile on a CPU: ~20 s per compiled model
def test_mic_and_rcs_run_compiled(tmp_path):
    results = run_recipe(st_recipe(tmp_path, 2, compile=True), out=tmp_path / "run")
    assert [(r.name, r.status) for r in results] == [("r1_st_cu", "ran")]
    assert "loss/mic" in read_scalars(tmp_path / "run" / "r1_st_cu" / "scalars.csv")


@pytest.mark.slow  # three Python processes importing torch
def test_mic_and_rcs_under_torchrun_ddp(tmp_path):
    import shutil

    recipe = st_recipe(tmp_path, 3)
    cli = shutil.which("adaptseg") or str(Path(sys.executable).with_name("adaptseg"))
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        cli,
        "train",
        str(recipe),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((out / "r1_st_cu" / "DONE").read_text())["outputs"]
    payload = torch.load(out / "r1_st_cu" / "checkpoint-last.pt", weights_only=True)
    assert payload["sampler"]["world_size"] == 2 and payload["iteration"] == 3
    assert len(list((out / "class-stats").glob("*.json"))) == 1
