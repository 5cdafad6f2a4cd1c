"""Generate the MiniCity datasets: which domains exist, how big their splits are, and writing them.

Each image is made from its own random generator, seeded from ``(seed, domain, split, condition,
index)``: images do not depend on each other, the order they are made in, or how many worker
processes make them, so the same seed always gives byte-identical files. A domain is written into
a staging folder and moved into place when complete; an existing MiniCity domain is replaced, any
other existing folder is left alone (UserError).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptseg.data.minicity import layouts
from adaptseg.data.minicity.layouts import Sample
from adaptseg.data.minicity.render import render
from adaptseg.data.minicity.scene import SceneConfig, sample_scene
from adaptseg.data.minicity.styles import GTA, SYNSCAPES, SYNTHIA, Style, photo_like
from adaptseg.errors import UserError
from adaptseg.io import write_json_atomic

DOMAINS: tuple[str, ...] = ("gta5", "synthia", "synscapes", "cityscapes", "acdc", "darkzurich")

#: How far the Cityscapes-like look is moved from the GTA-like one towards a photograph
#: (DESIGN.md feasibility study: 0.4–0.5 gives a real gap that adaptation can close).
PHOTO_STRENGTH = 0.45
MARKER = "minicity.json"
VERSION = 1

SOURCE_SCENE = SceneConfig()
CITY_SCENE = SceneConfig(ego_hood=True)
#: SYNTHIA-RAND-like: a higher viewpoint with a wider lens; no terrain, trucks or trains.
SYNTHIA_SCENE = SceneConfig(
    cam_height=(2.5, 5.0),
    horizon=(0.2, 0.34),
    focal=(0.5, 0.65),
    yaw=0.15,
    terrain=False,
    trucks=False,
    trains=False,
)


@dataclass(frozen=True)
class SplitSpec:
    """One split of a domain: the dataset's split name, its default size, the render condition."""

    split: str
    count: int
    condition: str | None = None


@dataclass(frozen=True)
class DomainSpec:
    """A MiniCity domain: its layout distribution, its look, its splits and its writer."""

    name: str
    scene: SceneConfig
    style: Style
    splits: tuple[SplitSpec, ...]
    write: Callable[[Path, SplitSpec, int, Sample], None]


_TARGET = photo_like(PHOTO_STRENGTH)

SPECS: dict[str, DomainSpec] = {
    "gta5": DomainSpec(
        "gta5",
        SOURCE_SCENE,
        GTA,
        (SplitSpec("all", 500),),
        lambda root, sp, i, s: layouts.write_gta5(root, i, s),
    ),
    "synthia": DomainSpec(
        "synthia",
        SYNTHIA_SCENE,
        SYNTHIA,
        (SplitSpec("all", 400),),
        lambda root, sp, i, s: layouts.write_synthia(root, i, s),
    ),
    "synscapes": DomainSpec(
        "synscapes",
        SOURCE_SCENE,
        SYNSCAPES,
        (SplitSpec("all", 400),),
        lambda root, sp, i, s: layouts.write_synscapes(root, i, s),
    ),
    "cityscapes": DomainSpec(
        "cityscapes",
        CITY_SCENE,
        _TARGET,
        (SplitSpec("train", 300), SplitSpec("val", 60)),
        lambda root, sp, i, s: layouts.write_cityscapes(root, sp.split, i, s),
    ),
    "acdc": DomainSpec(
        "acdc",
        SOURCE_SCENE,
        _TARGET,
        tuple(
            SplitSpec(split, n, cond)
            for cond in ("fog", "night", "rain", "snow")
            for split, n in (("train", 60), ("val", 15))
        ),
        lambda root, sp, i, s: layouts.write_acdc(root, sp.condition or "", sp.split, i, s),
    ),
    "darkzurich": DomainSpec(
        "darkzurich",
        SOURCE_SCENE,
        _TARGET,
        (SplitSpec("train", 120, "darkzurich"), SplitSpec("val", 30, "darkzurich")),
        lambda root, sp, i, s: layouts.write_darkzurich(root, sp.split, i, s),
    ),
}


def _key(text: str) -> int:
    return zlib.crc32(text.encode())


def make_sample(domain: str, split: SplitSpec, index: int, *, seed: int, size: tuple[int, int]) -> Sample:
    """Lay out and render one image of ``domain``; a pure function of its arguments."""
    spec = SPECS[domain]
    rng = np.random.default_rng([seed, _key(domain), _key(split.split), _key(split.condition or ""), index])
    scene = sample_scene(rng, size, spec.scene, index)
    image = render(scene, spec.style, rng, split.condition)
    return Sample(image, scene.label_ids, scene.instances, scene.table.lane_mark[scene.ids])


def _write_chunk(job: tuple[str, Path, SplitSpec, Sequence[int], int, tuple[int, int]]) -> int:
    domain, root, split, indices, seed, size = job
    for index in indices:
        SPECS[domain].write(root, split, index, make_sample(domain, split, index, seed=seed, size=size))
    return len(indices)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _prepare_root(out: Path, domain: str) -> tuple[Path, Path]:
    root, staging = out / domain, out / f".{domain}.partial"
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not (root / MARKER).is_file())):
        raise UserError(
            f"{root} exists and was not written by MiniCity",
            path=root,
            fix="choose another --out folder, or move that folder away",
        )
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return root, staging


def _counts(spec: DomainSpec, images: int | None) -> list[tuple[SplitSpec, int]]:
    return [(sp, sp.count if images is None else images) for sp in spec.splits]


def generate(
    out: str | Path,
    *,
    seed: int = 0,
    images: int | None = None,
    size: tuple[int, int] = (128, 256),
    domains: Sequence[str] = DOMAINS,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Path]:
    """Write the MiniCity datasets under ``out/<domain>`` in their official layouts.

    ``images`` overrides every split's size (e.g. 8 for fast tests; ACDC gets that many per condition
    and split). ``size`` is (height, width). ``workers`` processes render in parallel (default: up to
    2 for large runs, 1 for small ones); the files do not depend on it. Returns domain → dataset root.
    """
    out = Path(out)
    if seed < 0:
        raise UserError(f"seed {seed} is negative", fix="use a seed >= 0")
    if images is not None and images < 1:
        raise UserError(f"--images {images} must be at least 1", fix="leave it out for the default sizes")
    height, width = (int(v) for v in size)
    if height < 32 or width < 32:
        raise UserError(f"image size {height}x{width} is too small", fix="use at least 32x32")
    unknown = [d for d in domains if d not in SPECS]
    if unknown:
        raise UserError(f"unknown MiniCity domain(s) {unknown}", fix=f"choose from {', '.join(DOMAINS)}")
    if out.exists() and not out.is_dir():
        raise UserError("output path exists and is not a folder", path=out, fix="choose another --out")
    wanted = [d for d in DOMAINS if d in domains]
    total = sum(n for d in wanted for _, n in _counts(SPECS[d], images))
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if total >= 64 else 1
    roots = {d: _prepare_root(out, d) for d in wanted}  # fail before writing anything
    # spawn, not fork: forking a process whose OpenCV/BLAS threads hold locks can deadlock the children
    pool = (
        ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
        )
        if workers > 1
        else None
    )
    written: dict[str, Path] = {}
    try:
        for domain in wanted:
            started = time.perf_counter()
            root, staging = roots[domain]
            counts = _counts(SPECS[domain], images)
            jobs = [
                (domain, staging, sp, range(i, min(i + 16, n)), seed, (height, width))
                for sp, n in counts
                for i in range(0, n, 16)
            ]
            done = sum(pool.map(_write_chunk, jobs) if pool else map(_write_chunk, jobs))
            write_json_atomic(
                staging / MARKER,
                {
                    "generator": "adaptseg MiniCity",
                    "version": VERSION,
                    "domain": domain,
                    "seed": seed,
                    "size": [height, width],
                    "splits": [
                        {"split": sp.split, "condition": sp.condition, "images": n} for sp, n in counts
                    ],
                },
            )
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
            written[domain] = root
            if progress:
                print(
                    f"minicity: {domain:10s} {done:5d} images  {time.perf_counter() - started:5.1f} s",
                    file=sys.stderr,
                )
    finally:
        if pool is not None:
            pool.shutdown()
        for domain in wanted:
            staging = roots[domain][1]
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return written
