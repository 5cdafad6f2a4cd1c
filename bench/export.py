"""Export benchmark: latency per crop batch of the eager model and its exported artifacts, on the same crops.

For each model preset (random weights: timing does not depend on them) it exports TorchScript and ONNX
artifacts with ``adaptseg.export.export_model`` (parity-checked as always), then times one forward of
the same batch of MiniCity crops in four ways:

* eager fp32 — the deploy module in plain PyTorch (the reference of every ratio);
* eager channels-last + bf16 — the engine's fastest eager CPU setting (autocast bfloat16);
* TorchScript — the exported ``model.pt`` through its backend;
* ONNX Runtime — the exported ``model.onnx`` through its backend (CPU provider here);
* ONNX Runtime int8 — ``export/onnx-int8.yaml``: static QDQ int8 calibrated on MiniCity target crops
  (issue 20 target on CPU: >= 1.5x faster than ONNX Runtime fp32; its parity bar is lowered to 0 here,
  since random weights give near-tied logits — the table shows the agreement measured).

Repeats run the four round-robin, so load changes on a shared machine hit them alike; the table gives
the median latency per batch, the ratio to eager fp32 (target on CPU: ONNX Runtime <= 0.7 for the
DeepLabV2 and DAFormer presets) and each one's max |Δlogit| / argmax agreement against eager fp32.

    python bench/export.py                                  # deeplabv2-r101-v1c, daformer-mitb5 at 512x512
    python bench/export.py --crop 256x256 --repeats 5       # smaller crops, same graphs
    python bench/export.py --presets tiny-deeplabv2,tiny-daformer --quick
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptseg.allocator import tune_host_allocator  # noqa: E402
from adaptseg.cli.export import parse_crop  # noqa: E402
from adaptseg.export.calibration import minicity_images, parity_crops  # noqa: E402
from adaptseg.export.exporter import export_model  # noqa: E402
from adaptseg.export.profile import load_profile  # noqa: E402
from adaptseg.infer.backends import TorchBackend, load_backend  # noqa: E402
from adaptseg.infer.config import BackendOptions  # noqa: E402
from adaptseg.models import build_model, load_preset  # noqa: E402

DEFAULT_PRESETS = "deeplabv2-r101-v1c,daformer-mitb5"
MODES = ("eager fp32", "eager channels-last+bf16", "TorchScript", "ONNX Runtime", "ONNX Runtime int8")


def build_runners(preset_name: str, crop: tuple[int, int], calib: Path, out: Path) -> dict[str, Callable]:
    """The four ways to run ``preset_name``: eager fp32, eager CL+bf16, TorchScript and ONNX Runtime artifacts."""
    torch.manual_seed(0)
    preset = load_preset(preset_name)
    net = build_model(preset)
    weights = out / f"{preset_name}.safetensors"
    from adaptseg.models import save_weights

    save_weights(net, weights, metadata={"preset": preset_name})
    profile = load_profile().model_copy(deep=True)
    profile.parity.images, profile.parity.batch_size = 2, 2
    artifacts = {
        fmt: export_model(
            weights, fmt, out=out / f"{preset_name}-{fmt}", profile=profile, crop=crop, calib=calib
        )
        for fmt in ("torchscript", "onnx")
    }
    int8 = load_profile("onnx-int8")
    int8.parity.images, int8.parity.batch_size = 2, 2
    int8.parity.min_agreement = int8.parity.min_miou = 0.0  # random weights: measured below, not gated
    int8.onnx.int8.images = 16
    artifacts["onnx-int8"] = export_model(
        weights, "onnx", out=out / f"{preset_name}-onnx-int8", profile=int8, crop=crop
    )
    fp32 = TorchBackend.from_model(
        net, preset.mean, preset.std, device="cpu", options=BackendOptions(channels_last=False, amp=False)
    )
    bf16 = TorchBackend.from_model(
        build_model(preset),
        preset.mean,
        preset.std,
        device="cpu",
        options=BackendOptions(channels_last=True, amp=True, amp_dtype="bfloat16"),
    )
    bf16.module.load_state_dict(fp32.module.state_dict())
    return {
        MODES[0]: fp32,
        MODES[1]: bf16,
        MODES[2]: load_backend(artifacts["torchscript"].folder, device="cpu"),
        MODES[3]: load_backend(artifacts["onnx"].folder, device="cpu"),
        MODES[4]: load_backend(artifacts["onnx-int8"].folder, device="cpu"),
    }


def time_runners(
    runners: dict[str, Callable], crops: torch.Tensor, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per forward of ``crops`` for each runner, repeats interleaved round-robin."""
    for run in runners.values():
        for _ in range(warmup):
            run(crops)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(crops)
            times[name].append(time.perf_counter() - start)
    return times


@torch.inference_mode()
def agreement(runners: dict[str, Callable], crops: torch.Tensor) -> dict[str, tuple[float, float]]:
    """(max |Δlogit|, argmax agreement) of each runner against eager fp32 on ``crops``."""
    ref = runners[MODES[0]](crops)
    out = {}
    for name, run in runners.items():
        y = run(crops).float()
        out[name] = (float((y - ref).abs().max()), float((y.argmax(1) == ref.argmax(1)).float().mean()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=DEFAULT_PRESETS, help="comma-separated model presets")
    parser.add_argument("--crop", default=None, help="HxW crop (default: each preset's own)")
    parser.add_argument("--batch", type=int, default=2, help="crops per forward")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 warm-up, 2 repeats")
    args = parser.parse_args()
    tune_host_allocator()  # as the adaptseg command does
    if args.quick:
        args.warmup, args.repeats = 1, 2
    logging.getLogger("adaptseg").setLevel(logging.ERROR)

    rows = []
    with tempfile.TemporaryDirectory(prefix="adaptseg-bench-export-") as tmp:
        tmp_path = Path(tmp)
        calib = tmp_path / "calib"
        calib.mkdir()
        images = minicity_images(max(args.batch, 2))
        from adaptseg.io import write_png

        for i, image in enumerate(images):
            write_png(calib / f"{i}.png", image)
        for name in [p.strip() for p in args.presets.split(",") if p.strip()]:
            crop = parse_crop(args.crop) or tuple(load_preset(name).crop)
            print(f"[{name}] exporting at {crop[0]}x{crop[1]} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            runners = build_runners(name, crop, calib, tmp_path)
            exported = time.perf_counter() - started
            crops = parity_crops(images[: args.batch], crop)
            print(f"[{name}] timing {len(MODES)} runners x {args.repeats} ...", file=sys.stderr, flush=True)
            times = time_runners(runners, crops, args.warmup, args.repeats)
            parity = agreement(runners, crops)
            base = statistics.median(times[MODES[0]])
            for mode in MODES:
                median = statistics.median(times[mode])
                rows.append(
                    (name, f"{crop[0]}x{crop[1]}", mode, median, median / base, *parity[mode], exported)
                )

    print(
        f"\nlatency per batch of {args.batch} crops (median of {args.repeats}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print("| preset | crop | runner | ms / batch | × eager fp32 | max abs Δlogit | argmax agreement |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, crop, mode, median, ratio, diff, agree, _ in rows:
        print(f"| {name} | {crop} | {mode} | {median * 1000:.0f} | {ratio:.2f} | {diff:.1e} | {agree:.4%} |")
    medians = {(name, mode): median for name, _, mode, median, *_ in rows}
    for name in dict.fromkeys(r[0] for r in rows):
        speedup = medians[name, MODES[3]] / medians[name, MODES[4]]
        print(f"{name}: ONNX Runtime int8 is {speedup:.2f}x ONNX Runtime fp32 (target >= 1.5)")


if __name__ == "__main__":
    main()
