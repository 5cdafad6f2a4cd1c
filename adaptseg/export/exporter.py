"""``adaptseg export``: eager student → artifact folder (model file + ``model.json``), parity-checked.

:func:`export_model` runs the whole job:

1. resolve the model (:mod:`~adaptseg.export.source`) and the export profile; refuse an existing
   destination unless ``force``;
2. cut real crops of the artifact's size from target images (MiniCity, or ``calib``);
3. in a temporary folder beside the destination: write the model file in its format, write the
   sidecar, load the artifact through the engine's backend and compare it with eager fp32 PyTorch
   (:mod:`~adaptseg.export.verify`) — below the bar the folder is deleted and export fails;
4. record the parity figures in the sidecar and rename the folder into place.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch
from torch import Tensor, nn

from adaptseg.errors import UserError
from adaptseg.export.artifact import (
    MODEL_FILES,
    SIDECAR,
    Artifact,
    ArtifactMeta,
    Format,
    SourceInfo,
    class_table,
    file_sha256,
)
from adaptseg.export.calibration import CropBatches, calibration_sources, parity_crops
from adaptseg.export.profile import ExportProfile, Precision, load_profile
from adaptseg.export.source import EagerSource, load_source
from adaptseg.export.staging import check_writable, staged_folder
from adaptseg.export.verify import verify_artifact
from adaptseg.io import write_json_atomic

FORMATS: tuple[str, ...] = tuple(MODEL_FILES)


class HalfPrecision(nn.Module):
    """float32 crops in and logits out, float16 weights and arithmetic inside (``--fp16`` for
    TorchScript/ONNX; TensorRT chooses its kernels' precision itself)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.half()

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.half()).float()


def default_destination(name: str, fmt: str, precision: str) -> Path:
    """``models/<name>-<format>[-<precision>]`` in the repository's models folder (``./models`` outside one)."""
    from adaptseg.models.presets import models_dir

    try:
        root = models_dir()
    except UserError:
        root = Path("models")
    suffix = "" if precision == "fp32" else f"-{precision}"
    return root / f"{name}-{fmt}{suffix}"


def _versions(extra: dict[str, str]) -> dict[str, str]:
    import onnx
    import onnxruntime

    import adaptseg

    return {
        "adaptseg": getattr(adaptseg, "__version__", "0"),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        **extra,
    }


def export_model(
    model: str | Path,
    fmt: Format,
    *,
    out: str | Path | None = None,
    profile: str | Path | ExportProfile | None = None,
    crop: tuple[int, int] | None = None,
    fp16: bool = False,
    force: bool = False,
    calib: str | Path | None = None,
    arch: str | None = None,
) -> Artifact:
    """Export ``model`` to ``fmt`` (``torchscript``, ``onnx`` or ``trt``) and return the checked artifact.

    Args:
        model: a run folder, a weights file (with ``arch`` when its header does not name the preset),
            or a model preset name (random weights: for tests and benchmarks).
        out: the artifact folder (default :func:`default_destination`).
        profile: an export profile name/path (``export/*.yaml``) or object; default ``export/default.yaml``.
        crop: the artifact's fixed (h, w) input; default the preset's crop.
        fp16: half precision (overrides the profile's precision).
        force: replace an existing artifact folder.
        calib: a folder of target images for the parity check and int8 calibration (default MiniCity).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'", fix=f"use one of: {', '.join(FORMATS)}")
    prof = load_profile(profile)
    precision: Precision = "fp16" if fp16 else prof.precision
    if precision == "int8" and fmt != "trt":
        raise UserError(f"int8 is a TensorRT precision; {fmt} exports fp32 or fp16",
                        fix="use --format trt, or an fp32/fp16 export profile")
    if fmt == "trt":  # fail in a second, before loading anything, when TensorRT cannot run here
        from adaptseg.export.tensorrt import import_tensorrt, require_cuda

        import_tensorrt()
        require_cuda()
    if out is not None and Path(out).suffix.lower() in {".pt", ".onnx", ".engine", ".plan", ".json"}:
        raise UserError("--out names the artifact folder, not a file", path=out,
                        fix=f"pass a folder; it will hold {MODEL_FILES[fmt]} and {SIDECAR}")
    if out is not None:
        check_writable(Path(out), force)  # before the slow part
    source = load_source(model, arch)
    crop = tuple(int(v) for v in (crop or source.preset.crop))  # type: ignore[assignment]
    if len(crop) != 2 or min(crop) < 1:
        raise UserError(f"bad crop {crop}", fix="pass --crop HxW with positive sizes, e.g. 512x1024")
    dest = Path(out) if out is not None else default_destination(source.name, fmt, precision)
    check_writable(dest, force)

    parity = prof.parity
    wanted = max(parity.images, prof.tensorrt.calibration.images if precision == "int8" else 0)
    images = calibration_sources(calib, wanted)
    crops = parity_crops(images[: parity.images], crop)  # type: ignore[arg-type]
    example = crops[:2] if crops.shape[0] >= 2 else torch.cat([crops, crops.flip(-1)])

    with staged_folder(dest, force=force) as stage:
        model_path = stage / MODEL_FILES[fmt]
        written = _write(fmt, source, prof, precision, example, model_path, images, crop)  # type: ignore[arg-type]
        meta = _meta(source, fmt, precision, prof, crop, model_path, written)  # type: ignore[arg-type]
        write_json_atomic(stage / SIDECAR, meta.model_dump(mode="json"))
        figures = verify_artifact(
            stage,
            source.module,
            crops,
            parity.bar(precision),
            images=parity.images,
            batch_size=parity.batch_size,
            device="cuda" if fmt == "trt" else "cpu",
        )
        meta.parity = figures
        write_json_atomic(stage / SIDECAR, meta.model_dump(mode="json"))
    return Artifact(dest, meta)


def _write(
    fmt: str,
    source: EagerSource,
    prof: ExportProfile,
    precision: Precision,
    example: Tensor,
    model_path: Path,
    images: list,
    crop: tuple[int, int],
) -> dict:
    """Write the model file; returns the sidecar fields that depend on how it was written."""
    if fmt == "torchscript":
        from adaptseg.export.torchscript import export_torchscript

        module = HalfPrecision(_copy(source.module)) if precision == "fp16" else source.module
        result = export_torchscript(module, example, model_path, mode=prof.torchscript.mode,
                                    tolerance=1e-4 if precision == "fp32" else 5e-2)
        return {"exporter": result.exporter, "exporter_note": result.note, "opset": None}
    from adaptseg.export.onnx import export_onnx

    if fmt == "onnx":
        module = HalfPrecision(_copy(source.module)) if precision == "fp16" else source.module
        result = export_onnx(module, example, model_path, num_classes=source.num_classes, opset=prof.onnx.opset,
                             exporter=prof.onnx.exporter)
        note = "weights in an external data file (over 2 GB)" if result.external_data else "single file"
        return {"exporter": result.exporter, "exporter_note": note, "opset": result.opset}
    from adaptseg.export.tensorrt import build_engine, builder_settings

    onnx_path = model_path.with_name(".model.onnx")
    onnx = export_onnx(source.module, example, onnx_path, num_classes=source.num_classes, opset=prof.onnx.opset,
                       exporter=prof.onnx.exporter)
    settings = builder_settings(prof.tensorrt, precision, crop, weights_sha256=source.weights_sha256)
    calibration = None
    if precision == "int8":
        calibration = CropBatches(images, crop, prof.tensorrt.calibration.batch_size)
    version = build_engine(onnx_path, model_path, settings, calibration=calibration)
    for leftover in model_path.parent.glob(".model.onnx*"):
        leftover.unlink()
    b = prof.tensorrt.batch
    return {
        "exporter": f"tensorrt-{version}",
        "exporter_note": f"built from {onnx.exporter} ONNX (opset {onnx.opset}); batch profile {b.min}/{b.opt}/{b.max}",
        "opset": onnx.opset,
        "batch": b,
        "versions": {"tensorrt": version},
    }


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


def _meta(
    source: EagerSource,
    fmt: str,
    precision: Precision,
    prof: ExportProfile,
    crop: tuple[int, int],
    model_path: Path,
    written: dict,
) -> ArtifactMeta:
    classes, palette = class_table(source.num_classes)
    stride = prof.stride or (max(crop[0] // 2, 1), max(crop[1] // 2, 1))
    preset = source.preset
    return ArtifactMeta(
        name=source.name,
        format=fmt,  # type: ignore[arg-type]
        file=model_path.name,
        file_bytes=model_path.stat().st_size,
        file_sha256=file_sha256(model_path),
        precision=precision,
        exporter=written["exporter"],
        exporter_note=written["exporter_note"],
        opset=written["opset"],
        crop=crop,
        stride=stride,
        batch=written.get("batch"),
        output_stride=source.output_stride,
        num_classes=source.num_classes,
        classes=classes,
        palette=palette,
        mean=preset.mean,
        std=preset.std,
        source=SourceInfo(model=source.given, preset=preset.name, weights_sha256=source.weights_sha256),
        versions=_versions(written.get("versions", {})),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
