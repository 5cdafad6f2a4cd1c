"""Rare-class sampling (adaptseg.data.rcs): DAFormer's probabilities, the per-position draws, the crop
redraws, and the cached per-image class statistics with their stale-file error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from adaptseg.data.datasets import build_dataset
from adaptseg.data.pipeline import StreamSampler, TrainStream, with_normalize
from adaptseg.data.rcs import (
    ClassStatistics,
    RareClassReader,
    RareClassSampler,
    RareClassTable,
    load_or_compute_statistics,
    rare_class_probabilities,
)
from adaptseg.errors import UserError
from adaptseg.train.config import RareClassSamplingOptions
from tests.reliability.audit import assert_no_partials, assert_unchanged, assert_user_error, snapshot
from tests.reliability.test_train_data import train
from tests.train.tiny import make_split, tiny_recipe

# a toy table: 3 images × 3 classes; totals 80 / 10 / 10 → f = 0.8, 0.1, 0.1
TOY = np.array([[50, 10, 0], [30, 0, 4], [0, 0, 6]], np.int64)


def toy_stats() -> ClassStatistics:
    return ClassStatistics(("a", "b", "c"), TOY, "toy")


def test_probabilities_are_softmax_of_one_minus_frequency_over_t():
    for temperature in (0.01, 0.1, 1.0):
        classes, p = rare_class_probabilities(TOY.sum(0), temperature)
        # by hand: logits (1 − f)/T = (0.2, 0.9, 0.9)/T; P_0 = e^{0.2/T} / (e^{0.2/T} + 2 e^{0.9/T})
        p0 = 1.0 / (1.0 + 2.0 * math.exp(0.7 / temperature))
        assert classes.tolist() == [0, 1, 2]
        assert p == pytest.approx([p0, (1 - p0) / 2, (1 - p0) / 2], rel=1e-12, abs=1e-15)
    # T = 0.1: P_0 = 1/(1 + 2e^7) = 4.5573e-4 — the frequent class is almost never drawn
    assert rare_class_probabilities(TOY.sum(0), 0.1)[1][0] == pytest.approx(4.5573e-4, rel=1e-4)


def test_absent_classes_are_never_drawn_and_images_need_more_than_min_pixels():
    table = RareClassTable.build(
        ClassStatistics(("a", "b"), np.array([[5, 0, 9], [7, 0, 3]]), "x"), temperature=0.5, min_pixels=3
    )
    assert table.classes.tolist() == [0, 2]  # class 1 has no pixel anywhere
    assert [i.tolist() for i in table.images] == [[0, 1], [0]]  # 3 pixels is not > 3
    with pytest.raises(UserError, match="class 0 has no image with more than 8") as err:
        RareClassTable.build(
            ClassStatistics(("a", "b"), np.array([[5, 0, 9], [7, 0, 3]]), "x"), temperature=0.5, min_pixels=8
        )
    assert "fix: lower rcs.min_pixels" in str(err.value)


def test_draws_follow_the_probabilities_and_are_a_function_of_the_position():
    table = RareClassTable.build(toy_stats(), temperature=0.5, min_pixels=3)
    sampler = RareClassSampler(size=3, seed=4, key=9, table=table, min_crop_pixels=0)
    draws = [sampler.draw(p) for p in range(6000)]
    classes = np.array([c for c, _ in draws])
    share = np.bincount(classes, minlength=3) / len(draws)
    assert share == pytest.approx(table.probabilities, abs=0.02)
    # every drawn image holds more than min_pixels of its class
    assert all(TOY[i, c] > 3 for c, i in draws)
    assert draws[:50] == [sampler.draw(p) for p in range(50)]  # resume replays the same draws
    other = RareClassSampler(size=3, seed=5, key=9, table=table, min_crop_pixels=0)
    assert [other.draw(p) for p in range(50)] != draws[:50]
    # the first crop uses the uniform sampler's own generator; redraws get their own
    uniform = StreamSampler(3, 4, 9)
    assert sampler.rng(7).random() == uniform.rng(7).random() != sampler.rng(7, 1).random()


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return make_split(tmp_path_factory.mktemp("rcs") / "data", n=6, size=(32, 48))


def test_statistics_are_computed_once_cached_and_stale_files_refused(split, tmp_path, monkeypatch):
    reader = build_dataset("cityscapes", split, "train")
    path = tmp_path / "class-stats" / "cs.json"
    stats = load_or_compute_statistics(reader, path)
    by_hand = np.stack(
        [np.bincount(reader[i].label.ravel(), minlength=256)[:255] for i in range(len(reader))]
    )
    assert (
        np.array_equal(stats.counts, by_hand[:, : stats.counts.shape[1]])
        and by_hand[:, stats.counts.shape[1] :].sum() == 0
    )
    assert stats.ids == tuple(e.id for e in reader.entries)

    def no_recompute(_reader):
        raise AssertionError("the cached statistics were recomputed")

    monkeypatch.setattr(ClassStatistics, "compute", no_recompute)
    again = load_or_compute_statistics(reader, path)
    assert np.array_equal(again.counts, stats.counts)

    fewer = build_dataset("cityscapes", split, "train")
    fewer.entries = fewer.entries[:-1]
    with pytest.raises(UserError, match="stale class statistics: computed for 6 images") as err:
        load_or_compute_statistics(fewer, path)
    assert str(path) in str(err.value) and "fix: delete the file" in str(err.value)


def test_an_unlabelled_stream_cannot_use_rcs(split, tmp_path):
    reader = build_dataset("cityscapes", split, "train", labels=False)
    with pytest.raises(UserError, match="rare-class sampling needs labels"):
        load_or_compute_statistics(reader, tmp_path / "s.json")


def test_stream_redraws_the_crop_until_it_holds_the_drawn_class(split, tmp_path):
    """A 16² crop of the 32×48 scenes often misses the car box (class 13); RCS redraws it (up to 10 times)."""
    options = RareClassSamplingOptions(temperature=0.01, min_pixels=10, min_crop_ratio=1.0)
    reader = RareClassReader(build_dataset("cityscapes", split, "train"), options, tmp_path / "stats.json")
    transform = with_normalize([{"random_crop": {"size": [16, 16]}}], (0, 0, 0), (1, 1, 1))
    stream = TrainStream("source", reader, transform, 1, seed=0)
    sampler = stream.sampler
    assert isinstance(sampler, RareClassSampler) and sampler.crop_retries == 10
    redrawn = 0
    for position in range(40):
        cls, index = sampler.draw(position)
        _, label, sample_id = stream.sample(position)
        assert sample_id == reader.entries[index].id
        first = transform(reader[index].image, reader[index].label, sampler.rng(position))[1]
        if np.count_nonzero(first == cls) <= 10:
            redrawn += 1
            attempts = [
                transform(reader[index].image, reader[index].label, sampler.rng(position, a))[1]
                for a in range(11)
            ]
            kept = next((a for a in attempts if np.count_nonzero(a == cls) > 10), attempts[-1])
            assert np.array_equal(label, kept)
        else:
            assert np.array_equal(label, first)
    assert redrawn > 0


def test_stale_statistics_stop_training_with_one_line_naming_the_file(split, tmp_path):
    data = make_split(tmp_path / "data", n=4, size=(32, 48))
    recipe = tiny_recipe(
        tmp_path / "r.yaml", data, iters=1, extra={"data": {"source": {"rcs": {"min_pixels": 5}}}}
    )
    run = tmp_path / "run"
    (run / "class-stats").mkdir(parents=True)
    from adaptseg.data.rcs import statistics_file
    from adaptseg.train.config import StreamSpec

    spec = StreamSpec(name="cityscapes", root=str(data), split="train", rcs={"min_pixels": 5})
    stale = statistics_file(run, spec)
    # the statistics of another dataset (the module's 6-image split) sit where this run keeps its own
    stale.write_text(
        json.dumps(ClassStatistics.compute(build_dataset("cityscapes", split, "train")).to_json())
    )
    before = snapshot(tmp_path / "data")
    kept = stale.read_bytes()
    outcome = train(recipe, run)
    assert_user_error(outcome, "stale class statistics", stale, "delete the file")
    assert stale.read_bytes() == kept  # the user's file is left for them to inspect
    assert_unchanged(tmp_path / "data", before)
    assert_no_partials(run)
