"""bench/gpu.py's CPU-side logic (timing, ratios, parity, the table, the time budget) and its no-CUDA exit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_calls_times_after_warmup_and_counts_the_sync(gpu):
    clock, costs = FakeClock(), iter([5.0, 1.0, 2.0, 3.0])  # the first call (warm-up) is slow and not counted
    synced = []

    def call():
        clock.now += next(costs)

    def sync():
        clock.now += 0.5  # device work finishing: part of each timing
        synced.append(clock.now)

    times = gpu.time_calls(call, warmup=1, repeats=3, sync=sync, clock=clock)
    assert times == [1.5, 2.5, 3.5] and len(synced) == 4
    assert gpu.median_ms(times) == 2500.0


def test_ratios_tables_and_missing_figures(gpu):
    rows = gpu.with_ratios(
        [
            gpu.Row("s", "eager fp32", 100.0, peak_mib=512.0),
            gpu.Row("s", "compile", 40.0),
            gpu.Row("s", "failed", None, note="OOM"),
        ],
        "eager fp32",
    )
    assert [r.ratio for r in rows] == [1.0, 2.5, None]
    table = gpu.markdown_table(rows).splitlines()
    assert table[0].startswith("| section | case | ms | × reference | peak GPU MiB")
    assert table[2] == "| s | eager fp32 | 100.0 | 1.00 | 512 |  |"
    assert table[3] == "| s | compile | 40.0 | 2.50 | – |  |"
    assert table[4] == "| s | failed | – | – | – | OOM |"


def test_parity_is_max_abs_difference_and_argmax_agreement(gpu):
    ref = torch.zeros(1, 2, 2, 2)
    ref[:, 0] = 1.0
    out = ref.clone()
    out[0, 1, 0, 0] = 3.0
    assert gpu.parity(ref, out) == (3.0, 0.75)


def test_sections_past_the_budget_or_failing_become_rows(gpu):
    clock = FakeClock()
    budget = gpu.Budget(100, clock=clock)
    ran = []
    assert (
        gpu.run_section("a", lambda: ran.append(1) or [gpu.Row("a", "x", 1.0)], budget, need=50)[0].ms == 1.0
    )
    clock.now = 60
    skipped = gpu.run_section("b", lambda: ran.append(2) or [], budget, need=50)
    assert ran == [1] and skipped[0].case == "skipped" and "40 s left" in skipped[0].note

    def broken():
        raise RuntimeError("CUDA out of memory\nmore")

    failed = gpu.run_section("c", broken, gpu.Budget(100), need=1)
    assert failed[0].case == "failed" and failed[0].note == "RuntimeError: CUDA out of memory"


def test_results_file_is_written_whole(gpu, tmp_path):
    path = tmp_path / "RESULTS-gpu.md"
    gpu.write_results(path, [gpu.Row("s", "c", 1.0)], "# head")
    assert path.read_text().startswith("# head\n\n| section |") and [p.name for p in tmp_path.iterdir()] == [
        path.name
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_without_cuda_one_line_and_exit_zero(gpu, capsys, tmp_path):
    assert gpu.main(["--out", str(tmp_path / "r.md")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA device" in out
    assert not (tmp_path / "r.md").exists()
