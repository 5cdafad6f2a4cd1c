"""One prepared GPU run: everything only a CUDA device can show, in one go, into ``bench/RESULTS-gpu.md``.

    python bench/gpu.py                 # on a CUDA machine: ~8 minutes, writes bench/RESULTS-gpu.md
    python bench/gpu.py --budget 120    # a shorter run (sections past the budget are listed as skipped)

Sections (issue 20), each row with the peak GPU memory it took:

1. **training step** of ``daformer-mitb5`` at 640² and ``deeplabv2-r101-v1c`` at 512² (batch 2): eager
   fp32, bf16 autocast, fp16 autocast + GradScaler, channels-last + bf16 + ``torch.compile`` — ratio to
   eager fp32 (target for the last: >= 2x);
2. **engine**: the sliding-window engine (full Cityscapes slide preset, pinned-memory crop copies) against
   the raw batched forward of the same crops (ratio, target <= 1.05) and a per-window loop;
3. **ONNX Runtime CUDA** provider against eager, with parity (argmax agreement, max |Δlogit|);
4. **TensorRT** fp16 and int8 engines, when ``tensorrt`` imports;
5. **DDP**: one NCCL process, SyncBatchNorm, one training step.

Without CUDA it prints one line saying so and exits 0. The table building, timing and parity helpers
run on any machine (tests/bench/test_gpu.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).with_name("RESULTS-gpu.md")
TRAIN_PRESETS = (("daformer-mitb5", 640), ("deeplabv2-r101-v1c", 512))
MIB = 1 << 20


@dataclass
class Row:
    """One measurement: what ran, how long per unit, its ratio to the section's reference, and notes."""

    section: str
    case: str
    ms: float | None
    ratio: float | None = None
    peak_mib: float | None = None
    note: str = ""


def time_calls(
    fn: Callable[[], object],
    *,
    warmup: int,
    repeats: int,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones (``sync`` before
    each reading, so asynchronous device work is counted)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
    return times


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def with_ratios(rows: list[Row], reference: str) -> list[Row]:
    """Each row's ``ratio``: the reference case's time over its own (> 1 = faster than the reference)."""
    base = next((r.ms for r in rows if r.case == reference and r.ms), None)
    for row in rows:
        row.ratio = base / row.ms if base and row.ms else None
    return rows


@torch.inference_mode()
def parity(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    """(max |Δlogit|, argmax agreement) of N×C×H×W ``candidate`` logits against ``reference``."""
    reference, candidate = reference.float(), candidate.float().to(reference.device)
    agreement = float((reference.argmax(1) == candidate.argmax(1)).float().mean())
    return float((reference - candidate).abs().max()), agreement


def markdown_table(rows: list[Row]) -> str:
    """The results as one Markdown table (``–`` where a figure is missing)."""

    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    lines = ["| section | case | ms | × reference | peak GPU MiB | note |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r.section} | {r.case} | {fmt(r.ms, '.1f')} | {fmt(r.ratio, '.2f')} | "
            f"{fmt(r.peak_mib, '.0f')} | {r.note} |"
        )
    return "\n".join(lines)


class Budget:
    """Wall-clock seconds left for the run; sections past it are recorded as skipped."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.clock, self.deadline = clock, clock() + seconds

    def left(self) -> float:
        return self.deadline - self.clock()


def run_section(name: str, section: Callable[[], list[Row]], budget: Budget, need: float) -> list[Row]:
    """A section's rows, or one row saying why it has none (no time left, or the error it hit)."""
    if budget.left() < need:
        return [
            Row(name, "skipped", None, note=f"time budget: {budget.left():.0f} s left, needs ~{need:.0f} s")
        ]
    try:
        return section()
    except Exception as exc:  # a section's failure is a result too: the others still run
        traceback.print_exc(file=sys.stderr)
        return [
            Row(
                name,
                "failed",
                None,
                note=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:120],
            )
        ]


def write_results(path: Path, rows: list[Row], header: str) -> None:
    from adaptseg.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(f"{header}\n\n{markdown_table(rows)}\n")


# --------------------------------------------------------------------------------------------- sections
def _peak(fn: Callable[[], list[float]]) -> tuple[list[float], float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = fn()
    return times, torch.cuda.max_memory_allocated() / MIB


def train_step_rows(device: torch.device) -> list[Row]:
    from adaptseg.models import build_model

    rows: list[Row] = []
    for preset, size in TRAIN_PRESETS:
        section = f"train step {preset} {size}²"
        cases: list[Row] = []
        for case in (
            "eager fp32",
            "bf16 autocast",
            "fp16 autocast + GradScaler",
            "channels-last + bf16 + compile",
        ):
            torch.manual_seed(0)
            model = build_model(preset).to(device).train()
            if case.startswith("channels-last"):
                model = model.to(memory_format=torch.channels_last)
            step_model = torch.compile(model) if "compile" in case else model
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
            scaler = torch.amp.GradScaler("cuda", enabled="GradScaler" in case)
            dtype = torch.float16 if "fp16" in case else torch.bfloat16
            x = torch.randn(2, 3, size, size, device=device)
            if case.startswith("channels-last"):
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 19, (2, size, size), device=device)

            def step(
                step_model=step_model, optimizer=optimizer, scaler=scaler, dtype=dtype, case=case, x=x, y=y
            ):
                with torch.autocast("cuda", dtype=dtype, enabled=case != "eager fp32"):
                    logits = step_model(x)
                    loss = F.cross_entropy(
                        F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear"), y
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

            warmup = 3 if "compile" in case else 2
            times, peak = _peak(
                lambda step=step, warmup=warmup: time_calls(
                    step, warmup=warmup, repeats=10, sync=torch.cuda.synchronize
                )
            )
            cases.append(Row(section, case, median_ms(times), peak_mib=peak))
            del model, step_model, optimizer
            torch.cuda.empty_cache()
        rows += with_ratios(cases, "eager fp32")
    return rows


def _deploy(preset: str, device: torch.device):
    from adaptseg.infer.backends import TorchBackend
    from adaptseg.infer.config import BackendOptions
    from adaptseg.models import build_model, load_preset

    torch.manual_seed(0)
    spec = load_preset(preset)
    return TorchBackend.from_model(
        build_model(spec),
        spec.mean,
        spec.std,
        device=str(device),
        options=BackendOptions(channels_last=True, amp=False),
    )


def engine_rows(device: torch.device) -> list[Row]:
    from adaptseg.infer.config import load_preset as load_infer_preset
    from adaptseg.infer.engine import SlidingWindow
    from adaptseg.infer.windows import window_grid

    config = load_infer_preset("cityscapes-slide", ["resize=null", "workers=2"])
    backend = _deploy("daformer-mitb5", device)
    images = [(f"im{i}", (torch.rand(1024, 2048, 3) * 255).to(torch.uint8).numpy()) for i in range(2)]
    crop, stride = tuple(config.crop), config.slide_stride
    windows = window_grid(1024, 2048, crop, stride)
    crops = torch.stack(
        [torch.from_numpy(images[0][1][y0:y1, x0:x1]).permute(2, 0, 1).float() for y0, y1, x0, x1 in windows]
    ).to(device)
    n, batch = len(windows) * len(images), int(config.batch_size)
    section = "engine daformer-mitb5 cityscapes-slide (2 images 2048x1024)"

    def engine():
        for p in SlidingWindow(backend, config).run(images):
            p.label()

    @torch.inference_mode()
    def raw():
        for _ in images:
            for i in range(0, len(windows), batch):
                backend(crops[i : i + batch])

    @torch.inference_mode()
    def per_window():
        for _ in images:
            for i in range(len(windows)):
                backend(crops[i : i + 1])

    rows = []
    for case, fn in (("raw batched forward", raw), ("engine (a)", engine), ("per-window loop", per_window)):
        times, peak = _peak(lambda fn=fn: time_calls(fn, warmup=1, repeats=3, sync=torch.cuda.synchronize))
        rows.append(Row(section, case, median_ms(times) / n, peak_mib=peak, note="ms per crop"))
    return with_ratios(rows, "raw batched forward")


def onnx_rows(device: torch.device, out: Path) -> list[Row]:
    from adaptseg.artifact.runtime import open_runtime
    from adaptseg.export.exporter import export_model
    from adaptseg.export.profile import load_profile
    from adaptseg.models import save_weights

    section = "ONNX Runtime CUDA vs eager (deeplabv2-r101-v1c 512², batch 4)"
    eager = _deploy("deeplabv2-r101-v1c", device)
    weights = save_weights(
        eager.module.model, out / "r101.safetensors", metadata={"preset": "deeplabv2-r101-v1c"}
    )
    profile = load_profile()
    profile.parity.images = 2
    artifact = export_model(weights, "onnx", out=out / "r101-onnx", profile=profile, crop=(512, 512))
    os.environ["ADAPTSEG_ORT_PROVIDERS"] = "CUDAExecutionProvider"
    ort = open_runtime(artifact.folder, device)
    x = torch.rand(4, 3, 512, 512, device=device) * 255
    rows = []
    for case, fn in (("eager fp32", eager), ("ORT CUDA", ort)):
        times, peak = _peak(
            lambda fn=fn: time_calls(lambda: fn(x), warmup=2, repeats=10, sync=torch.cuda.synchronize)
        )
        rows.append(Row(section, case, median_ms(times), peak_mib=peak))
    max_abs, agreement = parity(eager(x), ort(x))
    rows[-1].note = f"vs eager: agreement {agreement:.4%}, max |Δlogit| {max_abs:.2e}"
    return with_ratios(rows, "eager fp32")


def tensorrt_rows(device: torch.device, out: Path) -> list[Row]:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return [Row("TensorRT", "skipped", None, note="tensorrt does not import here")]
    from adaptseg.artifact.runtime import open_runtime
    from adaptseg.export.exporter import export_model
    from adaptseg.export.profile import load_profile

    rows = []
    x = torch.rand(4, 3, 512, 512, device=device) * 255
    for precision in ("fp16", "int8"):
        profile = load_profile(f"trt-{precision}")
        profile.parity.images = 2
        artifact = export_model(
            "deeplabv2-r101-v1c", "trt", out=out / f"r101-trt-{precision}", profile=profile, crop=(512, 512)
        )
        engine = open_runtime(artifact.folder, device)
        times, peak = _peak(
            lambda engine=engine: time_calls(
                lambda: engine(x), warmup=2, repeats=10, sync=torch.cuda.synchronize
            )
        )
        p = artifact.meta.parity
        rows.append(
            Row(
                "TensorRT deeplabv2-r101-v1c 512², batch 4",
                precision,
                median_ms(times),
                peak_mib=peak,
                note=f"agreement {p.agreement:.4%}" if p else "",
            )
        )
    return rows


def ddp_rows(device: torch.device) -> list[Row]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from adaptseg.models import build_model

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build_model("deeplabv2-r101-v1c")).to(device)
        ddp = DistributedDataParallel(model, device_ids=[device.index or 0])
        optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-4)
        x = torch.randn(2, 3, 512, 512, device=device)
        y = torch.randint(0, 19, (2, 512, 512), device=device)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = ddp(x)
            loss = F.cross_entropy(F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear"), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        times, peak = _peak(lambda: time_calls(step, warmup=2, repeats=5, sync=torch.cuda.synchronize))
        return [
            Row(
                "DDP (NCCL, 1 process, SyncBatchNorm) deeplabv2-r101-v1c 512²",
                "train step bf16",
                median_ms(times),
                peak_mib=peak,
            )
        ]
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--budget", type=float, default=460, help="seconds for the whole run (default under 8 min)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here, nothing to measure; run it on a GPU machine")
        return 0
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda", 0)
    budget = Budget(args.budget)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="adaptseg-bench-gpu-") as tmp:
        out = Path(tmp)
        for name, section, need in (
            ("train step", lambda: train_step_rows(device), 60),
            ("engine", lambda: engine_rows(device), 30),
            ("ONNX Runtime CUDA", lambda: onnx_rows(device, out), 40),
            ("TensorRT", lambda: tensorrt_rows(device, out), 60),
            ("DDP", lambda: ddp_rows(device), 20),
        ):
            print(f"[gpu] {name} ({budget.left():.0f} s left)", file=sys.stderr, flush=True)
            rows += run_section(name, section, budget, need)
    header = (
        f"# GPU figures (bench/gpu.py)\n\n{torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}; ratio = reference time / this time (> 1 is faster)."
    )
    write_results(args.out, rows, header)
    print(markdown_table(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
