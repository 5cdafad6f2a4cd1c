"""EnD's label fusion speed: one 2048×1024 image of 3 teachers (19 classes) on one core (end.md §3; issue 18
item 2: "well under a second")::

    OMP_NUM_THREADS=1 .venv/bin/python bench/end_fusion.py [--repeats 5]

The teachers are synthetic but shaped like real ones: a blocky scene layout (32-pixel cells of random
classes) that each teacher relabels on 15 % of its pixels, and softmax-like certainties (the teacher's class
high, the rest low), stored as the store keeps them (uint8 H×W×C, 0–100). Prints the median time of
each rule, and the share of pixels PLF has to vote on (conflicts and unclaimed pixels).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from adaptseg.methods.parts.label_fusion import fuse_certainty, fuse_majority, fuse_plf

HEIGHT, WIDTH, CLASSES, TEACHERS = 1024, 2048, 19, 3


def synthetic_teachers(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scene = np.kron(rng.integers(0, CLASSES, (HEIGHT // 32, WIDTH // 32)), np.ones((32, 32), np.int64))
    labels, certainties = [], []
    for _ in range(TEACHERS):
        noisy = np.where(rng.random(scene.shape) < 0.15, rng.integers(0, CLASSES, scene.shape), scene)
        cert = rng.integers(0, 4, (HEIGHT, WIDTH, CLASSES), dtype=np.uint8)
        np.put_along_axis(
            cert, noisy[..., None], rng.integers(60, 101, (HEIGHT, WIDTH, 1)).astype(np.uint8), -1
        )
        labels.append(noisy.astype(np.uint8))
        certainties.append(cert)
    return np.stack(labels), np.stack(certainties)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    labels, certainties = synthetic_teachers()
    labels_t, certainties_t = torch.from_numpy(labels), torch.from_numpy(certainties)
    assignment = [c % TEACHERS for c in range(CLASSES)]
    rules = {
        "PLF (5×5 vote on conflicts)": lambda: fuse_plf(labels_t, certainties_t, assignment),
        "certainty (mean ≥ 90)": lambda: fuse_certainty(certainties_t),
        "majority": lambda: fuse_majority(labels_t, CLASSES),
    }
    claims = sum((labels[a] == c) for c, a in enumerate(assignment))
    print(
        f"\n{TEACHERS} teachers, {WIDTH}×{HEIGHT}, {CLASSES} classes, 1 thread; "
        f"PLF votes on {100 * float((claims != 1).mean()):.1f} % of the pixels\n"
    )
    print("| rule | median seconds per image |\n|---|---|")
    for name, fn in rules.items():
        print(f"| {name} | {median_seconds(fn, args.repeats):.3f} |")


if __name__ == "__main__":
    main()
