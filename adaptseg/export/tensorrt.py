"""TensorRT engines built from the ONNX export with the ``tensorrt`` Python API (TensorRT >= 10).

The build (:func:`build_engine`): parse the ONNX file into an explicit-batch network, add one
optimisation profile over the batch for the fixed crop (``tensorrt.batch`` min/opt/max of the export
profile), set the precision (fp16 kernels; int8 with an ``IInt8EntropyCalibrator2`` fed with target
crops, falling back to fp16), reuse and update a timing cache file so rebuilds skip kernel timing, and
serialise the engine.

``tensorrt`` is imported lazily: without it,
:func:`~adaptseg.artifact.tensorrt.import_tensorrt` raises a one-line ``TensorRTMissing`` (exit status
2) saying what to install, before export loads anything. What does not need the library — the
profile, the calibration batches (:class:`~adaptseg.export.calibration.CropBatches`) and the builder
settings (:func:`builder_settings`) — is plain Python, tested everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptseg.artifact.meta import INPUT_NAME, Precision
from adaptseg.artifact.tensorrt import import_tensorrt, require_cuda
from adaptseg.errors import UserError
from adaptseg.export.calibration import CropBatches
from adaptseg.export.formats import WriteJob, Written, register_format
from adaptseg.export.profile import TensorRTConfig
from adaptseg.io import write_bytes_atomic


@dataclass(frozen=True)
class BuilderSettings:
    """What :func:`build_engine` sets on the TensorRT builder config, derived from the export profile."""

    input_shapes: tuple[tuple[int, int, int, int], ...]  # min, opt, max
    fp16: bool
    int8: bool
    workspace_bytes: int
    timing_cache: Path | None
    calibration_cache: Path | None


def builder_settings(
    config: TensorRTConfig, precision: Precision, crop: tuple[int, int], *, weights_sha256: str = ""
) -> BuilderSettings:
    """The builder settings of a profile for one crop (pure Python: no TensorRT needed)."""
    h, w = crop
    b = config.batch
    shapes = tuple((n, 3, h, w) for n in (b.min, b.opt, b.max))
    timing = Path(config.timing_cache).expanduser() if config.timing_cache else None
    calib_cache = None
    if precision == "int8" and config.calibration.cache and timing is not None:
        key = hashlib.sha256(f"{weights_sha256}|{h}x{w}|{config.calibration.images}".encode()).hexdigest()[
            :16
        ]
        calib_cache = timing.parent / f"int8-{key}.calib"
    return BuilderSettings(
        input_shapes=shapes,  # type: ignore[arg-type]
        fp16=precision in ("fp16", "int8"),  # int8 layers TensorRT cannot quantise fall back to fp16
        int8=precision == "int8",
        workspace_bytes=int(config.workspace_gib * (1 << 30)),
        timing_cache=timing,
        calibration_cache=calib_cache,
    )


def make_entropy_calibrator(batches: CropBatches, cache: Path | None) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` through one CUDA buffer (needs tensorrt + CUDA)."""
    import numpy as np
    import torch

    trt = import_tensorrt()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = batches
            self.cache = cache
            self.buffer = torch.empty(batches.shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return self.batches.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = self.batches.next_batch()
            if batch is None:
                return None
            self.buffer.copy_(torch.from_numpy(np.ascontiguousarray(batch)))
            torch.cuda.synchronize()
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return self.cache.read_bytes() if self.cache is not None and self.cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            if self.cache is not None:
                write_bytes_atomic(self.cache, bytes(data))

    return EntropyCalibrator()


def build_engine(
    onnx_path: Path, engine_path: Path, settings: BuilderSettings, *, calibration: CropBatches | None = None
) -> str:
    """Build and serialise a TensorRT engine from ``onnx_path``; returns the TensorRT version used."""
    trt = import_tensorrt()
    require_cuda()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # the default (and deprecated) in TRT 10
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(
            f"TensorRT cannot parse the ONNX export: {errors}"[:400],
            path=onnx_path,
            fix="try another onnx.opset or onnx.exporter in the export profile",
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *settings.input_shapes)
    config.add_optimization_profile(profile)
    if settings.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if settings.int8:
        if calibration is None:
            raise UserError(
                "int8 needs calibration images", fix="pass --calib DIR or let export use MiniCity"
            )
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_entropy_calibrator(calibration, settings.calibration_cache)
        config.set_calibration_profile(profile)
    cache = _load_timing_cache(config, settings.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(
            "TensorRT failed to build the engine (see its log above)",
            path=onnx_path,
            fix="lower tensorrt.batch.max or raise tensorrt.workspace_gib in the export profile",
        )
    engine_path.write_bytes(bytes(serialized))
    if settings.timing_cache is not None and cache is not None:
        write_bytes_atomic(settings.timing_cache, bytes(config.get_timing_cache().serialize()))
    return str(trt.__version__)


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    """Attach the timing cache at ``path`` (empty when the file does not exist yet) to ``config``."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=True)  # a cache from another GPU/version is ignored
    return cache


def _tensorrt_available() -> None:
    import_tensorrt()
    require_cuda()


@register_format(
    "trt", precisions=("fp32", "fp16", "int8"), parity_device="cuda", preflight=_tensorrt_available
)
def write_tensorrt_artifact(job: WriteJob) -> Written:
    """``model.engine`` built from an fp32 ONNX export beside it (removed afterwards) on this GPU."""
    from adaptseg.export.onnx import export_onnx

    prof, source, model_path = job.profile, job.source, job.model_path
    onnx_path = model_path.with_name(".model.onnx")
    onnx = export_onnx(
        source.module,
        job.example,
        onnx_path,
        num_classes=source.num_classes,
        opset=prof.onnx.opset,
        exporter=prof.onnx.exporter,
    )
    settings = builder_settings(prof.tensorrt, job.precision, job.crop, weights_sha256=source.weights_sha256)
    calibration = None
    if job.precision == "int8":
        calibration = CropBatches(job.images, job.crop, prof.tensorrt.calibration.batch_size)
    version = build_engine(onnx_path, model_path, settings, calibration=calibration)
    for leftover in model_path.parent.glob(".model.onnx*"):
        leftover.unlink()
    b = prof.tensorrt.batch
    return Written(
        f"tensorrt-{version}",
        f"built from {onnx.exporter} ONNX (opset {onnx.opset}); batch profile {b.min}/{b.opt}/{b.max}",
        opset=onnx.opset,
        batch=b,
        versions={"tensorrt": version},
    )
