"""Training step time of the Trainer for a model preset and batch: eager fp32 vs channels-last vs AMP vs compile.

Each mode builds the real :class:`~adaptseg.train.trainer.Trainer` (the same placement, autocast, grad
scaler and ``torch.compile`` as ``adaptseg train``) for a source-only stage and times
``Trainer.run_step`` — lr, forward, CE, backward, optimiser step — on a fixed synthetic batch already on
the device (data loading is not measured). Warm-up steps (and compilation) are excluded; the table shows
the median step time.

    python bench/train_step.py --preset tiny-deeplabv2 --batch 4 --size 128x256
    python bench/train_step.py --preset daformer-mitb5 --batch 2 --size 512x512 --device cuda

fp16 (with a GradScaler) runs on CUDA only; on CPU it is listed as skipped.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from adaptseg.allocator import tune_host_allocator
from adaptseg.config import validate
from adaptseg.methods.source_only import SourceOnly, SourceOnlyOptions
from adaptseg.train.config import Recipe, stage_recipe
from adaptseg.train.context import StageContext
from adaptseg.train.distributed import DistInfo, pick_device
from adaptseg.train.trainer import Trainer

MODES: dict[str, dict[str, Any]] = {
    "eager fp32": {"amp": "off", "channels_last": False, "compile": False},
    "channels-last": {"amp": "off", "channels_last": True, "compile": False},
    "bf16 AMP": {"amp": "bf16", "channels_last": False, "compile": False},
    "fp16 AMP": {"amp": "fp16", "channels_last": False, "compile": False},
    "compile": {"amp": "off", "channels_last": False, "compile": True},
    "channels-last + bf16": {"amp": "bf16", "channels_last": True, "compile": False},
    "channels-last + bf16 + compile": {"amp": "bf16", "channels_last": True, "compile": True},
}


def _recipe(preset: str, device: str, switches: dict[str, Any]) -> Recipe:
    return validate(
        Recipe,
        {
            "model": {"preset": preset},
            "optim": {
                "type": "adamw",
                "lr": 6e-5,
                "weight_decay": 0.01,
                "custom_keys": {"head": {"lr_mult": 10.0}},
            },
            "schedule": {"iters": 1000, "warmup": "linear", "warmup_iters": 10},
            "stages": [{"name": "bench", "method": "source_only"}],
            "device": device,
            **switches,
        },
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(
    preset: str,
    device: str,
    switches: dict[str, Any],
    batch: int,
    size: tuple[int, int],
    steps: int,
    warmup: int,
) -> tuple[float, float, float]:
    """(median seconds per step, seconds of the warm-up steps incl. compilation, minor page faults per
    timed step) for one mode."""
    recipe = _recipe(preset, device, switches)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(
            stage=recipe.stages[0],
            recipe=stage_recipe(recipe, recipe.stages[0]),
            run_dir=Path(tmp),
            device=pick_device(device, DistInfo()),
            dist=DistInfo(),
        )
        trainer = Trainer(ctx, SourceOnly(SourceOnlyOptions(), ctx), hooks=[])
        trainer.setup_models()
        dev = ctx.device
        generator = torch.Generator().manual_seed(0)
        image = torch.randn(batch, 3, *size, generator=generator).to(dev)
        if trainer.switches.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        label = torch.randint(0, ctx.preset.num_classes, (batch, *size), generator=generator).to(dev)
        data = {"source": {"image": image, "label": label, "id": [str(i) for i in range(batch)]}}
        start = time.perf_counter()
        for it in range(warmup):
            trainer.run_step(it, data)
        _sync(dev)
        warm = time.perf_counter() - start
        times = []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for it in range(warmup, warmup + steps):
            t0 = time.perf_counter()
            trainer.run_step(it, data)
            _sync(dev)
            times.append(time.perf_counter() - t0)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return statistics.median(times), warm, faults / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny-deeplabv2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", default="128x256", help="crop HxW")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES)
    )
    args = parser.parse_args(argv)
    tune_host_allocator()  # as the adaptseg command does
    size = tuple(int(v) for v in args.size.lower().split("x"))
    device = pick_device(args.device, DistInfo())
    console = Console()
    table = Table(
        title=f"train step: {args.preset}, batch {args.batch}, {size[0]}×{size[1]} on "
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'} "
        f"({torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    for column in ("mode", "ms / step", "img / s", "vs eager", "warm-up s"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    baseline = None
    for name in [m.strip() for m in args.modes.split(",") if m.strip()]:
        switches = MODES[name]
        if switches["amp"] == "fp16" and device.type != "cuda":
            table.add_row(name, "skipped (CUDA only)", "", "", "")
            continue
        if switches["compile"]:
            torch._dynamo.reset()
        seconds, warm, _ = time_mode(
            args.preset, device.type, switches, args.batch, size, args.steps, args.warmup
        )
        baseline = baseline or seconds
        table.add_row(
            name,
            f"{seconds * 1e3:.1f}",
            f"{args.batch / seconds:.1f}",
            f"{baseline / seconds:.2f}×",
            f"{warm:.1f}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
