"""``pseudo-label`` and ``eval --model`` under torchrun: shards by rank, one store, summed confusion matrix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from adaptseg.cli.app import app
from adaptseg.infer.ranks import DistInfo, shard
from adaptseg.infer.store import PseudoLabelStore

from .conftest import make_cityscapes

WORKER = Path(__file__).with_name("rank_worker.py")


def test_shards_are_disjoint_and_cover_the_split_in_order():
    ranks = [shard(range(7), DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert ranks == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard(range(7), DistInfo()) == list(range(7))


def _commands(weights: str, root: Path, store: Path, report: Path) -> tuple[list[str], list[str]]:
    common = [
        "--model",
        weights,
        "--dataset",
        "cityscapes",
        "--root",
        str(root),
        "--split",
        "val",
        "--preset",
        "minicity",
    ]
    return (
        ["pseudo-label", *common, "--out", str(store), "--device", "cpu", "--topk", "2", "--batch-size", "2"],
        ["eval", *common, "--json", str(report)],
    )


def test_two_processes_write_the_same_store_and_metrics_as_one(tmp_path, weights):
    root = tmp_path / "cs"
    ids = make_cityscapes(root, [(40, 56), (32, 48), (40, 56), (24, 40), (32, 48)], split="val")

    one_store, one_report = tmp_path / "one", tmp_path / "one.json"
    pseudo, evaluate = _commands(weights, root, one_store, one_report)
    for args in (pseudo, evaluate):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output

    two_store, two_report = tmp_path / "two", tmp_path / "two.json"
    pseudo, evaluate = _commands(weights, root, two_store, two_report)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        "\x1f".join(pseudo),
        "\x1f".join(evaluate),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("wrote 5 pseudo-label(s)") == 1  # rank 0 reports the totals of both ranks

    one, two = PseudoLabelStore(one_store), PseudoLabelStore(two_store)
    assert one.ids() == two.ids() == sorted(ids)
    for image_id in ids:
        for kind, path in one.paths(image_id).items():
            assert path.read_bytes() == two.paths(image_id)[kind].read_bytes(), (kind, image_id)
    assert json.loads((one_store / "store.json").read_text()) == json.loads(
        (two_store / "store.json").read_text()
    )
    assert not [p for p in two_store.rglob("*") if p.name.startswith(".")]  # no temporary file left behind

    metrics = json.loads(one_report.read_text()), json.loads(two_report.read_text())
    assert metrics[0] == metrics[1]
