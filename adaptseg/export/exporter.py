"""``adaptseg export``: eager student → artifact folder (model file + ``model.json``), parity-checked.

:func:`export_model` runs the whole job:

1. resolve the model (:mod:`~adaptseg.export.source`) and the export profile; refuse an existing
   destination unless ``force``;
2. cut real crops of the artifact's size from target images (MiniCity, or ``calib``);
3. in a temporary folder beside the destination: write the model file with the format's registered
   writer (:mod:`~adaptseg.export.formats`), write the sidecar, run the artifact through its runtime
   (:mod:`adaptseg.artifact.runtime`, the code the inference engine runs too) and compare it with eager
   fp32 PyTorch (:mod:`~adaptseg.export.verify`) — below the bar the folder is deleted and export fails;
4. record the parity figures in the sidecar and rename the folder into place.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

from adaptseg.artifact.folder import Artifact, class_table, file_sha256
from adaptseg.artifact.meta import SIDECAR, ArtifactMeta, Precision, SourceInfo
from adaptseg.artifact.runtime import runtime_for
from adaptseg.errors import UserError
from adaptseg.export.calibration import calibration_sources, calibration_split, parity_crops
from adaptseg.export.formats import ExportFormat, WriteJob, Written, get_format
from adaptseg.export.profile import ExportProfile, calibration_count, load_profile
from adaptseg.export.source import EagerSource, load_source
from adaptseg.export.staging import check_writable, staged_folder
from adaptseg.export.verify import verify_artifact
from adaptseg.io import write_json_atomic


def default_destination(name: str, fmt: str, precision: str) -> Path:
    """``models/<name>-<format>[-<precision>]`` beside the presets (``./models`` for an installed adaptseg)."""
    from adaptseg.models.presets import exports_dir

    root = exports_dir()
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
    fmt: str,
    *,
    out: str | Path | None = None,
    profile: str | Path | ExportProfile | None = None,
    crop: tuple[int, int] | None = None,
    fp16: bool = False,
    force: bool = False,
    calib: str | Path | None = None,
    arch: str | None = None,
) -> Artifact:
    """Export ``model`` to ``fmt`` (a registered export format: ``torchscript``, ``onnx``, ``trt``) and
    return the checked artifact.

    Args:
        model: a run folder, a weights file (with ``arch`` when its header does not name the preset),
            or a model preset name (random weights: for tests and benchmarks).
        out: the artifact folder (default :func:`default_destination`).
        profile: an export profile name/path (``export/*.yaml``) or object; default ``export/default.yaml``.
        crop: the artifact's fixed (h, w) input; default the preset's crop.
        fp16: half precision (overrides the profile's precision).
        force: replace an existing artifact folder (only an artifact: anything else is refused).
        calib: a folder of target images for the parity check and int8 calibration (default MiniCity).
    """
    export_format = get_format(fmt)
    model_file = runtime_for(fmt).model_file
    prof = load_profile(profile)
    precision: Precision = "fp16" if fp16 else prof.precision
    if precision not in export_format.precisions:
        raise UserError(
            f"{fmt} exports {'/'.join(export_format.precisions)}, not {precision}",
            fix="use a format that has it (int8: --format onnx or trt), or another export profile",
        )
    if export_format.preflight is not None:  # fail in a second, before loading anything
        export_format.preflight()
    if out is not None and Path(out).suffix.lower() in {".pt", ".onnx", ".engine", ".plan", ".json"}:
        raise UserError(
            "--out names the artifact folder, not a file",
            path=out,
            fix=f"pass a folder; it will hold {model_file} and {SIDECAR}",
        )
    if out is not None:
        check_writable(Path(out), force)  # before the slow part
    source = load_source(model, arch)
    crop = tuple(int(v) for v in (crop or source.preset.crop))  # type: ignore[assignment]
    if len(crop) != 2 or min(crop) < 1:
        raise UserError(f"bad crop {crop}", fix="pass --crop HxW with positive sizes, e.g. 512x1024")
    dest = Path(out) if out is not None else default_destination(source.name, fmt, precision)
    check_writable(dest, force)

    parity = prof.parity
    calibrating = calibration_count(prof, fmt, precision)
    if calibrating:  # int8 is checked on images that did not calibrate it
        images, checked = calibration_split(calib, calibrating, parity.images)
    else:
        images = checked = calibration_sources(calib, parity.images)
    crops = parity_crops(checked, crop)  # type: ignore[arg-type]
    example = crops[:2] if crops.shape[0] >= 2 else torch.cat([crops, crops.flip(-1)])

    with staged_folder(dest, force=force) as stage:
        model_path = stage / model_file
        job = WriteJob(source, prof, precision, example, model_path, images, crop)  # type: ignore[arg-type]
        written = export_format.write(job)
        meta = _meta(source, export_format, precision, prof, crop, model_path, written)  # type: ignore[arg-type]
        write_json_atomic(stage / SIDECAR, meta.model_dump(mode="json"))
        meta.parity = verify_artifact(
            stage,
            source.module,
            crops,
            parity.bar(precision),
            images=parity.images,
            batch_size=parity.batch_size,
            device=export_format.parity_device,
        )
        write_json_atomic(stage / SIDECAR, meta.model_dump(mode="json"))
    return Artifact(dest, meta)


def _meta(
    source: EagerSource,
    export_format: ExportFormat,
    precision: Precision,
    prof: ExportProfile,
    crop: tuple[int, int],
    model_path: Path,
    written: Written,
) -> ArtifactMeta:
    classes, palette = class_table(source.num_classes)
    stride = prof.stride or (max(crop[0] // 2, 1), max(crop[1] // 2, 1))
    preset = source.preset
    return ArtifactMeta(
        name=source.name,
        format=export_format.name,
        file=model_path.name,
        file_bytes=model_path.stat().st_size,
        file_sha256=file_sha256(model_path),
        precision=precision,
        exporter=written.exporter,
        exporter_note=written.note,
        opset=written.opset,
        crop=crop,
        stride=stride,
        batch=written.batch,
        output_stride=source.output_stride,
        num_classes=source.num_classes,
        classes=classes,
        palette=palette,
        mean=preset.mean,
        std=preset.std,
        source=SourceInfo(model=source.given, preset=preset.name, weights_sha256=source.weights_sha256),
        versions=_versions(written.versions),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
