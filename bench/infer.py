"""Inference engine benchmark: overhead, speed-up over a per-window loop, peak memory, store size.

Prints two tables; every figure comes from this one run on the same images:

(a) engine time / raw batched forward of the same crops (target <= 1.05), per model
(b) engine vs a per-window loop with mmseg semantics (one forward per window, a full-size padded
    logit tensor per window; target >= 2x on CPU), per model
(c) peak memory for one 2048x1024 image with a 19-class model above the model's own (target
    <= 2 x C x H x W float32), from the resident-set peak of two child processes that run the same
    crops: the raw forwards alone, and the engine
(d) bytes per pixel of the pseudo-label store on MiniCity scenes
(e) ``batch_size: auto`` against each fixed batch size, per model: auto's run time (its probe excluded,
    reported apart) over the best fixed size's (target <= 1.05), and the size it chose

With MONAI installed (``pip install -e .[bench]``), (a)/(b) also time MONAI's ``sliding_window_inference``
on the same backend, crops, stride and batch (target: engine <= MONAI) and print its label agreement
with the engine.

    python bench/infer.py              # about 8 minutes on 2 idle CPU cores
    python bench/infer.py --quick      # smaller images, fewer repeats
    python bench/infer.py --threads 2  # timings with 2 intra-op threads
    python bench/infer.py --quick --timing-only --models deeplabv2-r101-v1c   # (a)/(b) with a real preset

The engine is timed as ``eval``, ``infer`` and ``pseudo-label`` use it: each prediction is released
once consumed, so later images of the same size reuse its buffer (the engine keeps a couple of free
buffers, like a caching allocator; the warm-up run fills them, as the first images of a split do).

The engine's own work is per output pixel (uint8 crops to float, each window's logits added into the
image's accumulator: memory-bound), the forward's per crop; so (a) depends on how heavy the model is
per pixel. The default list runs every tiny preset (the demo's tiny-deeplabv3plus first); DeepLab-v2
R101 is in bench/RESULTS.md.

Like every bench it runs with the ``adaptseg`` command's host allocator setting (adaptseg.allocator;
bench/allocator.py measures what it changes): forwards ~20 % faster than with glibc's defaults.

Timings use one intra-op thread by default: on a machine shared with other jobs, OpenMP threads that
lose their core spin at barriers, and back-to-back forwards (the raw baseline, the per-window loop)
then pay several times more than forwards with work in between (the engine) — measured here as a
2.5x swing with 2 threads under load 8, which says nothing about the engine. One thread per process
compares the same work fairly; on an idle machine pass --threads 2.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptseg.allocator import tune_host_allocator  # noqa: E402
from adaptseg.infer.backends import load_backend  # noqa: E402
from adaptseg.infer.config import InferenceConfig  # noqa: E402
from adaptseg.infer.engine import SlidingWindow  # noqa: E402
from adaptseg.infer.windows import window_grid  # noqa: E402

MODEL = "tiny-deeplabv2"  # 19 classes; random weights are fine for timing and memory
#: (a)/(b) by default: every tiny preset, the demo's deployed model first
TIMING_MODELS = ("tiny-deeplabv3plus", "tiny-deeplabv2", "tiny-daformer", "tiny-segformer")


def make_images(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.integers(0, 256, size=(h // 32, w // 32, 3), dtype=np.uint8)
        out.append(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR))
    return out


def backend(model: str = MODEL):
    torch.manual_seed(0)
    import logging

    logging.getLogger("adaptseg.models.loading").setLevel(logging.ERROR)
    return load_backend(model, "cpu")


def crop_batches(images: list[np.ndarray], cfg: InferenceConfig, pad: torch.Tensor) -> Iterator[torch.Tensor]:
    """Every window of every image, padded to the crop, in batches of cfg.batch_size (what the engine
    runs), made one batch at a time."""
    crops = []
    for image in images:
        x = torch.from_numpy(image).permute(2, 0, 1).float()
        for y0, y1, x0, x1 in window_grid(*image.shape[:2], cfg.crop, cfg.slide_stride):
            c = pad.expand(3, *cfg.crop).clone()
            c[:, : y1 - y0, : x1 - x0] = x[:, y0:y1, x0:x1]
            crops.append(c)
            if len(crops) == cfg.batch_size:
                yield torch.stack(crops)
                crops = []
    if crops:
        yield torch.stack(crops)


def mmseg_slide(model, image: np.ndarray, cfg: InferenceConfig, num_classes: int) -> torch.Tensor:
    """mmseg EncoderDecoder.slide_inference: one window per forward, F.pad to full size per window."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    (h_crop, w_crop), (h_stride, w_stride) = cfg.crop, cfg.slide_stride
    _, _, h_img, w_img = x.shape
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = x.new_zeros((1, num_classes, h_img, w_img))
    count_mat = x.new_zeros((1, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop_seg_logit = model(x[:, :, y1:y2, x1:x2])
            preds += F.pad(
                crop_seg_logit, (int(x1), int(preds.shape[3] - x2), int(y1), int(preds.shape[2] - y2))
            )
            count_mat[:, :, y1:y2, x1:x2] += 1
    return (preds / count_mat).softmax(1)[0]


def interleaved_runs(fns: dict, rounds: int) -> dict[str, list[float]]:
    """Times of ``rounds`` runs of each function, run in turn (A B C A B C …): wall-clock under
    ``<name>`` and process CPU time (every thread of this process, the engine's reader included;
    insensitive to waiting for a core on a shared machine) under ``<name>_cpu``, one entry per round.

    Ratios are taken per round (each round's candidates run back to back, so slow drifts of the
    machine's speed hit both) and their median is reported: on this VM the same forward varies by
    ±5 % from minute to minute, as much as the engine's own cost, and a ratio of two separate minima
    moved by that much between runs."""
    times: dict[str, list[float]] = {key: [] for name in fns for key in (name, f"{name}_cpu")}
    for _ in range(rounds):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - wall)
            times[f"{name}_cpu"].append(time.process_time() - cpu)
    return times


def median_ratio(times: dict[str, list[float]], top: str, bottom: str) -> float:
    return statistics.median(a / b for a, b in zip(times[top], times[bottom], strict=True))


def timing(quick: bool, model_name: str = MODEL) -> dict[str, float]:
    h, w = (256, 512) if quick else (512, 1024)
    images = make_images(2 if quick else 4, h, w)
    cfg = InferenceConfig(mode="slide", crop=(256, 256), stride=(171, 171), batch_size=8, workers=1)
    model = backend(model_name)
    engine = SlidingWindow(model, cfg)
    batches = list(crop_batches(images, cfg, engine.pad_value))
    items = [(str(i), im) for i, im in enumerate(images)]

    def raw():
        with torch.inference_mode():
            for b in batches:
                model(b)

    def run_engine():
        for prediction in engine.run(items):
            prediction.release()  # as eval, infer and pseudo-label do once a prediction is written

    def loop():
        with torch.inference_mode():
            for im in images:
                mmseg_slide(model, im, cfg, model.num_classes)

    fns = {"raw": raw, "engine": run_engine, "loop": loop}
    peer = monai_peer(model, cfg)
    if peer is not None:
        fns["monai"] = lambda: [peer(im) for im in images]
    for fn in fns.values():  # warm-up
        fn()
    rounds = 3 if quick else 9
    times = interleaved_runs(fns, rounds=rounds)
    out = {"images": f"{len(images)} x {w}x{h}", "crops": sum(len(b) for b in batches), "rounds": rounds}
    for clock in ("", "_cpu"):
        for name in fns:
            out[f"{name}{clock}"] = statistics.median(times[f"{name}{clock}"])
        out[f"a{clock}"] = median_ratio(times, f"engine{clock}", f"raw{clock}")
        out[f"b{clock}"] = median_ratio(times, f"loop{clock}", f"engine{clock}")
        if peer is not None:
            out[f"monai_ratio{clock}"] = median_ratio(times, f"monai{clock}", f"engine{clock}")
    if peer is not None:
        engine_labels = [p.label() for p in engine.run(items)]
        agree = [
            float((peer(im).argmax(0) == lab).float().mean())
            for im, lab in zip(images, engine_labels, strict=True)
        ]
        out["monai_agreement"] = min(agree)
    return out


def monai_peer(model, cfg: InferenceConfig):
    """MONAI's ``sliding_window_inference`` on the same backend, crop, stride and batch (None without MONAI):
    one image in, C×H×W averaged logits out."""
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        return None
    overlap = tuple(1 - s / c for s, c in zip(cfg.slide_stride, cfg.crop, strict=True))

    @torch.inference_mode()
    def run(image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        return sliding_window_inference(
            x, tuple(cfg.crop), cfg.batch_size, model, overlap=overlap, mode="constant"
        )[0]

    return run


def auto_vs_fixed(quick: bool, model_name: str, sizes: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, object]:
    """(e): run time of ``batch_size: auto`` (after its probe, which the first run pays and is reported
    apart) and of each fixed size, on the same images; interleaved rounds, medians."""
    h, w = (256, 512) if quick else (512, 1024)
    images = [(str(i), im) for i, im in enumerate(make_images(2 if quick else 4, h, w))]
    model = backend(model_name)
    engines = {
        f"fixed {n}": SlidingWindow(
            model, InferenceConfig(mode="slide", crop=(256, 256), stride=(171, 171), batch_size=n, workers=1)
        )
        for n in sizes
    }
    auto = SlidingWindow(
        model,
        InferenceConfig(
            mode="slide",
            crop=(256, 256),
            stride=(171, 171),
            batch_size="auto",
            auto_batch={"max_size": max(sizes)},
            workers=1,
        ),
    )
    for p in auto.run(images):  # the probe (a run settles on the best size it could time)
        p.release()
    engines["auto"] = auto

    def runner(engine):
        return lambda: [p.release() for p in engine.run(images)]

    fns = {name: runner(engine) for name, engine in engines.items()}
    times = interleaved_runs(fns, rounds=3 if quick else 7)
    medians = {name: statistics.median(times[f"{name}_cpu"]) for name in fns}
    best = min((n for n in medians if n != "auto"), key=medians.get)
    return {
        "medians": medians,
        "best": best,
        "ratio": medians["auto"] / medians[best],
        "choice": auto.batch_probe.choice,
        "probe": auto.batch_probe.probe_seconds,
    }


# -------------------------------------------------------------------------------------------- memory
def memory_probe(kind: str, h: int, w: int) -> None:
    """Child process: run one h×w image through ``kind`` (raw forwards or engine); print peak RSS (bytes)."""
    torch.set_num_threads(2)
    cfg = InferenceConfig(mode="slide", crop=(512, 512), stride=(341, 341), batch_size=4, workers=1)
    model = backend()
    image = make_images(1, h, w)[0]
    engine = SlidingWindow(model, cfg)
    if kind == "raw":
        with torch.inference_mode():
            for batch in crop_batches([image], cfg, engine.pad_value):
                model(batch)
                del batch
        extra = {}
    else:
        (pred,) = engine.run([("x", image)])
        label = pred.label()
        extra = {"engine_buffers": engine.stats.peak_buffer_bytes, "shape": list(pred.output.shape)}
        del pred, label
    print(json.dumps({"peak": peak_rss(), **extra}))


def peak_rss() -> int:
    """This process's resident-set high-water mark in bytes: ``VmHWM`` of the current address space.

    Not ``getrusage().ru_maxrss``: Linux folds the parent's high-water mark into it across fork + exec,
    so a probe started by a parent that had grown larger than the probe reports the parent's peak (both
    probes then read the same figure, and their difference is 0)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )  # other systems: KiB (Linux) or bytes (macOS)


def memory(quick: bool) -> dict[str, float]:
    """Peak RSS of the raw and the engine probes, each run ``repeats`` times in fresh processes; the
    median peaks count (glibc's reuse of freed pages moves a single probe's peak by tens of MiB)."""
    h, w = (1024, 2048)
    peaks: dict[str, list[int]] = {"raw": [], "engine": []}
    for _ in range(1 if quick else 3):
        for kind in peaks:
            res = subprocess.run(
                [sys.executable, __file__, "--memory-probe", kind, "--size", f"{h}x{w}"],
                check=True,
                capture_output=True,
                text=True,
            )
            probe = json.loads(res.stdout.strip().splitlines()[-1])
            peaks[kind].append(probe.pop("peak"))
            if kind == "engine":
                engine = probe
    classes = engine["shape"][0]
    return {
        "classes": classes,
        "chw_bytes": classes * h * w * 4,
        "raw_peak": statistics.median(peaks["raw"]),
        "engine_peak": statistics.median(peaks["engine"]),
        "engine_buffers": engine["engine_buffers"],
        "repeats": len(peaks["raw"]),
    }


# --------------------------------------------------------------------------------------------- store
def store_size(quick: bool) -> dict[str, float]:
    """Bytes per pixel of the store for MiniCity labels turned into soft predictions (blurred one-hot)."""
    import cv2

    from adaptseg.data import build_dataset
    from adaptseg.data.minicity import generate
    from adaptseg.infer.store import PseudoLabelStore

    n = 4 if quick else 16
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "mc", images=n, size=(256, 512), domains=["cityscapes"], progress=False)
        ds = build_dataset("cityscapes", root["cityscapes"], "val")
        stores = {
            "label+conf": PseudoLabelStore(Path(tmp) / "a"),
            "+top3": PseudoLabelStore(Path(tmp) / "b", topk=3),
            "+top3/4": PseudoLabelStore(Path(tmp) / "c", topk=3, topk_stride=4),
        }
        pixels = 0
        for i in range(len(ds)):
            label = ds.read_label(i)
            label[label == 255] = 0
            onehot = np.eye(19, dtype=np.float32)[label]  # H×W×19
            soft = np.stack([cv2.GaussianBlur(onehot[..., c], (0, 0), 2.0) for c in range(19)])
            probs = torch.from_numpy(soft * 8.0).softmax(0)
            pixels += label.size
            for store in stores.values():
                store.write(ds.entries[i].id, probs)
        sizes = {}
        for name, store in stores.items():
            by_kind = {
                k: sum(p.stat().st_size for p in (store.root / k).rglob("*.*"))
                for k in ("label", "conf", "topk")
            }
            sizes[name] = {k: v / pixels for k, v in by_kind.items()}
        return {"images": f"{len(ds)} x 512x256", "sizes": sizes}


# --------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-probe", choices=("raw", "engine"))
    parser.add_argument("--size", default="1024x2048")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for the timings")
    parser.add_argument(
        "--models",
        default=",".join(TIMING_MODELS),
        help="comma-separated model presets of the timings (a) and (b)",
    )
    parser.add_argument("--timing-only", action="store_true", help="only (a) and (b) (and (e) with --auto)")
    parser.add_argument("--auto", action="store_true", help="(e): batch_size auto against fixed sizes")
    args = parser.parse_args()
    tune_host_allocator()  # as the adaptseg command does
    if args.memory_probe:
        h, w = (int(v) for v in args.size.split("x"))
        memory_probe(args.memory_probe, h, w)
        return

    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    timings = {name: timing(args.quick, name) for name in models}
    first = timings[models[0]]
    table = Table(
        title=f"adaptseg inference engine — (a) and (b) on {first['images']} ({first['crops']} crops of 256², "
        f"slide stride 171, batch 8), CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}; "
        f"medians of {first['rounds']} interleaved rounds; ratios are medians of per-round ratios; CPU time (wall clock)",
    )
    columns = [
        "model",
        "raw batched forward",
        "engine",
        "(a) engine / raw, target <= 1.05",
        "per-window loop (mmseg)",
        "(b) loop / engine, target >= 2x",
    ]
    with_monai = "monai_ratio" in first
    if with_monai:
        columns += ["MONAI sliding_window_inference", "MONAI / engine, target >= 1", "MONAI label agreement"]
    for col in columns:
        table.add_column(col)
    for name, t in timings.items():
        cells = [
            name, f"{t['raw_cpu']:.3f} s", f"{t['engine_cpu']:.3f} s", f"{t['a_cpu']:.3f} ({t['a']:.3f})",
            f"{t['loop_cpu']:.3f} s", f"{t['b_cpu']:.2f}x ({t['b']:.2f}x)",
        ]  # fmt: skip
        if with_monai:
            cells += [
                f"{t['monai_cpu']:.3f} s",
                f"{t['monai_ratio_cpu']:.2f}x ({t['monai_ratio']:.2f}x)",
                f"{t['monai_agreement']:.4%}",
            ]
        table.add_row(*cells)
    Console().print(table)
    if not with_monai:
        print("(MONAI is not installed: pip install -e .[bench] adds it as the peer of (a)/(b))")
    if args.auto:
        table = Table(
            title="(e) batch_size: auto vs fixed sizes — CPU seconds per run (medians), probe excluded"
        )
        for col in ("model", "fixed sizes", "auto", "auto / best fixed, target <= 1.05", "chose", "probe"):
            table.add_column(col)
        for name in models:
            e = auto_vs_fixed(args.quick, name)
            fixed = ", ".join(f"{k.split()[1]}: {v:.3f}" for k, v in e["medians"].items() if k != "auto")
            table.add_row(
                name,
                fixed,
                f"{e['medians']['auto']:.3f}",
                f"{e['ratio']:.3f} (best: {e['best']})",
                str(e["choice"]),
                f"{e['probe']:.2f} s",
            )
        Console().print(table)
    if args.timing_only:
        return
    mib = 2**20
    table = Table(title=f"adaptseg inference engine — memory and pseudo-label store ({MODEL})")
    for col in ("figure", "measured", "target"):
        table.add_column(col)
    m, s = memory(args.quick), store_size(args.quick)
    above = m["engine_peak"] - m["raw_peak"]
    table.add_row(
        f"(c) peak RSS above the model's own, 2048x1024, {m['classes']} classes (slide 512², batch 4; "
        f"medians of {m['repeats']} probe processes each)",
        f"{above / mib:.0f} MiB = {above / m['chw_bytes']:.2f} x CHW fp32 ({m['chw_bytes'] / mib:.0f} MiB); "
        f"engine buffers {m['engine_buffers'] / mib:.0f} MiB",
        "<= 2 x CHW",
    )
    for name, sz in s["sizes"].items():
        total = sum(sz.values())
        parts = ", ".join(f"{k} {v:.3f}" for k, v in sz.items() if v)
        table.add_row(f"(d) store bytes/pixel, {name} ({s['images']} MiniCity)", f"{total:.3f} ({parts})", "")
    Console().print(table)


if __name__ == "__main__":
    main()
