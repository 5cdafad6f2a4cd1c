"""Two CPU processes under torchrun (DDP over gloo): identical parameters on both ranks, equal to one
process with the combined batch, and only rank 0 writes."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaptseg.config import validate
from adaptseg.train.logger import read_scalars
from adaptseg.train.trainer import Trainer
from tests.train.tiny import TwoView, band_net, make_context, make_split, tiny_recipe

WORKER = Path(__file__).with_name("ddp_worker.py")
SETTINGS = dict(
    iters=4, checkpoint_every=2, log_every=1, stages=[{"name": "source", "method": "test_two_view"}]
)


def _batch(size: int) -> dict:
    return {
        "data": {
            "source": {"batch_size": size, "pipeline": [{"random_crop": {"size": [16, 16]}}, {"flip": 0.5}]}
        }
    }


@pytest.mark.slow  # three Python processes importing torch: ~15 s idle, ~40 s on a busy 2-core machine
def test_ddp_two_processes_match_one_process_with_twice_the_batch(tmp_path):
    data = make_split(tmp_path / "data", n=8)
    recipe = tiny_recipe(tmp_path / "r.yaml", data, extra=_batch(2), **SETTINGS)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(recipe),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    ranks = torch.load(out / "ranks.pt", weights_only=True)
    assert [r["ddp"] for r in ranks] == ["DistributedDataParallel"] * 2
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])

    # the distributed sampler + gradient averaging = one process over both ranks' samples
    ctx = make_context(tmp_path / "single", data, extra=_batch(4), **SETTINGS)
    single = Trainer(ctx, TwoView(validate(TwoView.Options, {}), ctx), hooks=[])
    single.train()
    params = torch.cat([p.detach().flatten() for p in single.handles["student"].module.parameters()])
    initial = torch.cat([p.detach().flatten() for p in band_net().parameters()])
    assert not torch.allclose(params, initial, atol=1e-3)  # it trained
    assert torch.allclose(ranks[0]["params"], params, atol=1e-6)

    # rank 0 alone wrote the log (each iteration once) and the outputs
    assert [i for i, _ in read_scalars(out / "source" / "scalars.csv")["loss/ce"]] == [1, 2, 3, 4]
    assert (out / "source" / "student.safetensors").is_file()
    assert torch.load(out / "source" / "checkpoint-last.pt", weights_only=True)["sampler"]["world_size"] == 2
