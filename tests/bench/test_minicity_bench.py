"""bench/minicity_bench.py: the oracle's stream, the gap-closed share and the AdaBN batches that every
MiniCity bench's figures rest on."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from adaptseg.config import load_recipe
from adaptseg.train.config import DatasetSpec, Recipe

REPO = Path(__file__).resolve().parents[2]
TINY = ["minicity.size=[64,128]", "minicity.images=3"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_minicity_bench", REPO / "bench" / "minicity_bench.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def recipe(path: str, *overrides: str) -> Recipe:
    return load_recipe(Recipe, REPO / path, [*TINY, *overrides])


def test_gap_closed_is_the_share_of_the_source_to_oracle_gap(bench):
    assert bench.gap_closed(35.0, 30.0, 40.0) == pytest.approx(0.5)
    assert bench.gap_closed(40.0, 30.0, 40.0) == pytest.approx(1.0)
    assert bench.gap_closed(28.0, 30.0, 40.0) == pytest.approx(-0.2)
    assert math.isnan(bench.gap_closed(35.0, 30.0, 30.0))  # no gap to close
    assert math.isnan(bench.gap_closed(35.0, 30.0, 25.0))


def test_the_oracle_reads_the_labelled_target_split_with_the_named_streams_batch_and_pipeline(bench):
    ddb = recipe("train/ddb/minicity.yaml")
    target, source = ddb.data["target"], ddb.data["source"]
    assert not target.labels and target.pipeline != source.pipeline  # so the assertions below can fail

    like_source = bench.labelled_target(ddb, batch_from="source", pipeline_from="source")
    assert (like_source.name, like_source.root, like_source.split) == (target.name, target.root, target.split)
    assert like_source.labels
    assert like_source.pipeline == source.pipeline and like_source.batch_size == source.batch_size

    umma = recipe("train/umma/minicity-synscapes+gta5-p.yaml")
    oracle = bench.oracle_recipe(umma, "synscapes")
    assert list(oracle.data) == ["source"] and [(s.name, s.method) for s in oracle.stages] == [
        ("oracle", "source_only")
    ]
    stream = oracle.data["source"]
    assert stream.labels and stream.name == "cityscapes" and stream.split == "train"
    assert stream.batch_size == umma.data["synscapes"].batch_size != umma.data["target"].batch_size
    assert stream.pipeline == umma.data["target"].pipeline
    assert (oracle.model, oracle.schedule, oracle.seed) == (umma.model, umma.schedule, umma.seed)


def test_adabn_batches_are_seeded_by_the_recipe_and_sized_as_asked(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTSEG_MINICITY", str(tmp_path / "cache"))
    ddb = recipe("train/ddb/minicity.yaml")  # target pipeline: random 128×128 crop + random flip

    def draw(seed: int) -> list[torch.Tensor]:
        seeded = ddb.model_copy(update={"seed": seed})
        return list(bench.target_batches(seeded, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), batches=3, batch_size=2))

    first, again, other = draw(0), draw(0), draw(1)
    assert [tuple(b.shape) for b in first] == [(2, 3, 64, 128)] * 3  # the crop is capped by the 64×128 images
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_only_plain_splits_are_opened(bench):
    spec = DatasetSpec(name="cityscapes", root="minicity:cityscapes", split="train", ids="rank/easy.txt")
    with pytest.raises(ValueError, match="plain splits"):
        bench.open_split(recipe("train/ddb/minicity.yaml"), spec)


@pytest.mark.parametrize("script", ["umma_minicity.py", "end_minicity.py", "decouplenet_minicity.py"])
def test_a_bench_given_a_missing_recipe_says_so_in_one_line(script, tmp_path):
    import subprocess

    missing = tmp_path / "nope.yaml"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--recipe", str(missing), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {missing}: recipe file not found — fix: check the path (recipes live in train/, models/, "
        "export/, infer/)"
    ]
