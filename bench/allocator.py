"""Host allocator: CPU inference and training with glibc's malloc defaults vs adaptseg's setting.

``adaptseg`` raises glibc's mmap and trim thresholds at start-up (``adaptseg.allocator``) so that the
large activations freed after one forward are reused by the next instead of being unmapped and
faulted in again. This prints, measured in one run, for the inference engine (as ``eval``,
``infer`` and ``pseudo-label`` run it) and for a training step (as ``adaptseg train`` runs it):
time, minor page faults and peak resident set with each setting, and the speed-up.

The setting is process-wide and permanent, so every measurement is a child process
(``ADAPTSEG_MALLOC=system`` or ``tuned``); children alternate, and the median of ``--repeats`` children
per setting counts.

    python bench/allocator.py                  # about 2 minutes on 2 CPU cores
    python bench/allocator.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from adaptseg.allocator import ENV_VAR, tune_host_allocator  # noqa: E402
from infer import peak_rss  # noqa: E402  (bench/infer.py: VmHWM, not ru_maxrss)

MODEL = "tiny-deeplabv2"
SETTINGS = ("system", "tuned")


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def probe_infer(runs: int) -> dict[str, float]:
    """The engine over 4 images 1024×512 (slide 256², stride 171, batch 8: bench/infer.py's set-up)."""
    from adaptseg.infer.config import InferenceConfig
    from adaptseg.infer.engine import SlidingWindow
    from infer import backend, make_images

    images = make_images(4, 512, 1024)
    cfg = InferenceConfig(mode="slide", crop=(256, 256), stride=(171, 171), batch_size=8, workers=1)
    engine = SlidingWindow(backend(MODEL), cfg)
    items = [(str(i), im) for i, im in enumerate(images)]

    def run() -> None:
        for prediction in engine.run(items):
            prediction.label()
            prediction.release()

    run()  # warm-up
    times, before = [], faults()
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "faults": (faults() - before) / runs, "unit": "4 images"}


def probe_train(steps: int) -> dict[str, float]:
    """``Trainer.run_step`` of a source-only stage, batch 4 of 256×512 (bench/train_step.py, eager fp32)."""
    from train_step import MODES, time_mode

    seconds, _, step_faults = time_mode(MODEL, "cpu", MODES["eager fp32"], 4, (256, 512), steps, 3)
    return {"seconds": seconds, "faults": step_faults, "unit": "step"}


def child(kind: str, threads: int) -> None:
    applied = tune_host_allocator()
    torch.set_num_threads(threads)
    import logging

    logging.getLogger("adaptseg").setLevel(logging.ERROR)
    result = probe_infer(5) if kind == "infer" else probe_train(10)
    print(json.dumps({**result, "applied": applied, "peak": peak_rss()}))


def measure(kind: str, setting: str, threads: int) -> dict[str, float]:
    env = {**os.environ, ENV_VAR: setting}
    res = subprocess.run(
        [sys.executable, __file__, "--probe", kind, "--threads", str(threads)],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(res.stdout.strip().splitlines()[-1])
    if result["applied"] != (setting == "tuned"):
        raise SystemExit(
            f"the {setting} child reported applied={result['applied']}: mallopt unavailable here?"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", choices=("infer", "train"))
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the children")
    parser.add_argument("--repeats", type=int, default=3, help="children per setting and workload")
    args = parser.parse_args()
    if args.probe:
        child(args.probe, args.threads)
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"host allocator — {MODEL}, CPU, {args.threads} thread(s), torch {torch.__version__}; "
        f"medians of {args.repeats} child processes per setting (alternating)"
    )
    for col in (
        "workload",
        "glibc defaults",
        "adaptseg (tuned)",
        "speed-up",
        "page faults (defaults → tuned)",
        "peak RSS (defaults → tuned)",
    ):
        table.add_column(col)
    for kind, label in (
        ("infer", "engine, 4 × 1024×512 (slide 256², 72 crops)"),
        ("train", "train step, batch 4 × 256×512, eager fp32"),
    ):
        runs: dict[str, list[dict[str, float]]] = {s: [] for s in SETTINGS}
        for _ in range(args.repeats):
            for setting in SETTINGS:
                runs[setting].append(measure(kind, setting, args.threads))
        med = {
            s: {k: statistics.median(r[k] for r in runs[s]) for k in ("seconds", "faults", "peak")}
            for s in SETTINGS
        }
        unit = runs["tuned"][0]["unit"]
        sys_, tuned = med["system"], med["tuned"]
        table.add_row(
            label,
            f"{sys_['seconds']:.3f} s / {unit}", f"{tuned['seconds']:.3f} s / {unit}",
            f"{sys_['seconds'] / tuned['seconds']:.2f}×",
            f"{sys_['faults']:,.0f} → {tuned['faults']:,.0f} per {unit}",
            f"{sys_['peak'] / 2**20:.0f} → {tuned['peak'] / 2**20:.0f} MiB",
        )  # fmt: skip
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
