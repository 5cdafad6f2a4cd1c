"""``batch_size: auto``: the probe's choice with a backend whose time per batch the test sets."""

from __future__ import annotations

import pytest
import torch

from adaptseg.infer.batching import BatchSizeProbe, crop_bytes, probe_candidates
from adaptseg.infer.config import InferenceConfig, load_preset
from adaptseg.infer.engine import SlidingWindow

from .conftest import random_image, tiny_backend


class TimedBackend:
    """The tiny backend, on a fake clock that each forward of ``n`` crops advances by ``cost(n)`` seconds."""

    def __init__(self, cost):
        self.inner = tiny_backend()
        self.cost = cost
        self.now = 0.0
        self.batches: list[int] = []
        self.num_classes, self.mean = self.inner.num_classes, self.inner.mean

    def clock(self) -> float:
        return self.now

    def __call__(self, x):
        self.batches.append(x.shape[0])
        self.now += self.cost(x.shape[0])
        return self.inner(x)


def test_candidates_are_powers_of_two_up_to_the_size_and_memory_caps():
    assert probe_candidates((16, 16), 5, max_size=32, memory_mib=1024) == [1, 2, 4, 8, 16, 32]
    assert probe_candidates((16, 16), 5, max_size=6, memory_mib=1024) == [1, 2, 4]
    per_crop = crop_bytes((512, 512), 19)
    assert per_crop == 4 * 512 * 512 * 22
    assert probe_candidates((512, 512), 19, max_size=32, memory_mib=5 * per_crop / (1 << 20)) == [1, 2, 4]
    assert probe_candidates((4096, 4096), 19, max_size=32, memory_mib=1) == [1]  # always at least one crop


def test_probe_keeps_the_least_time_per_crop_and_stops_once_sizes_get_slower():
    probe = BatchSizeProbe([1, 2, 4, 8, 16], repeats=2)
    per_crop = {1: 1.0, 2: 0.5, 4: 0.7}  # 4 is 40 % slower per crop than 2: stop, never try 8 and 16
    seen = []
    while not probe.done:
        n = probe.size
        seen.append(n)
        slow_first = (
            3.0 if n not in probe.seconds_per_crop else 1.0
        )  # a one-off set-up cost is not held against n
        probe.record(n, per_crop[n] * n * slow_first)
    assert seen == [1, 1, 2, 2, 4, 4]
    assert probe.choice == 2 and probe.size == 2
    assert probe.seconds_per_crop == pytest.approx(per_crop)
    assert probe.probe_crops == 14
    probe.record(2, 100.0)  # settled: later batches change nothing
    assert probe.choice == 2
    line = probe.summary()
    assert "2 crops per forward" in line and "probe" in line and "cap 16" in line


def test_probe_ignores_batches_of_other_sizes():
    probe = BatchSizeProbe([1, 2], repeats=1)
    probe.record(3, 0.001)  # a partial batch (the last of a run) is not a measurement
    assert probe.size == 1 and not probe.seconds_per_crop


@pytest.mark.parametrize(("per_crop", "best"), [({1: 4.0, 2: 3.0, 4: 1.0, 8: 1.5}, 4), ({1: 1.0, 2: 1.6}, 1)])
def test_engine_runs_the_rest_at_the_fastest_size_with_the_same_labels(per_crop, best):
    backend = TimedBackend(lambda n: per_crop.get(n, 10.0) * n)
    cfg = InferenceConfig(
        mode="slide", crop=(16, 16), stride=(8, 8), batch_size="auto", auto_batch={"max_size": 8}, workers=1
    )
    engine = SlidingWindow(backend, cfg)
    engine.clock = backend.clock
    images = [(f"im{i}", random_image(40, 56, seed=i)) for i in range(6)]  # 4×6 = 24 windows each
    labels = [p.label() for p in engine.run(images)]

    probe = engine.batch_probe
    assert probe is not None and probe.choice == best
    done, crops_after_probe = 0, []
    for n in backend.batches:  # the batches after the probe's crops
        if done >= probe.probe_crops:
            crops_after_probe.append(n)
        done += n
    assert crops_after_probe and set(crops_after_probe[:-1]) == {best}  # the last batch may be partial
    assert sum(backend.batches) == 6 * 24  # probing re-ran nothing

    fixed = SlidingWindow(
        tiny_backend(), InferenceConfig(mode="slide", crop=(16, 16), stride=(8, 8), batch_size=3)
    )
    for label, reference in zip(labels, (p.label() for p in fixed.run(images)), strict=True):
        assert torch.equal(label, reference)


def test_a_number_fixes_the_batch_size():
    cfg = load_preset("minicity", ["batch_size=3"])
    backend = TimedBackend(lambda n: 1.0)
    engine = SlidingWindow(backend, cfg)
    list(
        engine.run(
            [("a", random_image(20, 20, 0)), ("b", random_image(20, 20, 1)), ("c", random_image(20, 20, 2))]
        )
    )
    assert backend.batches == [3] and engine.batch_probe is None
    assert load_preset(None, ["batch_size=auto"]).batch_size == "auto"
    with pytest.raises(Exception, match="batch_size"):
        load_preset(None, ["batch_size=0"])


def test_a_short_run_settles_on_the_best_size_it_could_time():
    backend = TimedBackend(lambda n: {1: 2.0, 2: 1.5}.get(n, 1.0) * n)
    cfg = InferenceConfig(
        mode="slide",
        crop=(16, 16),
        stride=(16, 16),
        batch_size="auto",
        auto_batch={"max_size": 32, "repeats": 1, "memory_mib": 64},
        workers=1,
    )
    engine = SlidingWindow(backend, cfg)
    engine.clock = backend.clock
    list(engine.run([("a", random_image(32, 48, 0))]))  # 6 windows: sizes 1, 2 timed, then 3 left at size 4
    assert backend.batches == [1, 2, 3] and engine.batch_probe.choice == 2  # size 4 never filled a batch
