"""Static int8 quantisation of an ONNX export for CPUs (``precision: int8`` with ``--format onnx``).

ONNX Runtime's tooling does it (``onnxruntime.quantization``): ``quant_pre_process`` (shape inference
and graph clean-up), then ``quantize_static`` in the QDQ format — QuantizeLinear/DequantizeLinear pairs
around the compute-heavy operators (convolutions and matrix products; per-channel int8 weights, uint8
activations), which ORT's CPU provider fuses into integer kernels (VNNI where the CPU has it). The
elementwise parts and the final upsampling of the logits stay float, so the class map loses little.

Activation ranges come from target-domain crops read through the same calibration source as TensorRT
int8 (:class:`~adaptseg.export.calibration.CropBatches`: MiniCity, or ``--calib DIR``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from adaptseg.artifact.meta import INPUT_NAME
from adaptseg.errors import UserError
from adaptseg.export.calibration import CropBatches
from adaptseg.export.profile import OnnxInt8

#: operators given int8 kernels; the rest of the graph runs in float
QUANTISED_OPS = ("Conv", "MatMul", "Gemm")


class CropReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over calibration crop batches."""

    def __init__(self, batches: CropBatches):
        self.batches = batches
        self.batches.reset()

    def get_next(self) -> dict | None:
        batch = self.batches.next_batch()
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self.batches.reset()


def quantise_onnx(fp32_path: Path, out_path: Path, batches: CropBatches, config: OnnxInt8) -> str:
    """Write a QDQ int8 copy of the float ONNX model at ``fp32_path`` to ``out_path``; returns a note
    saying how it was quantised (for ``model.json``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    work = Path(tempfile.mkdtemp(prefix=".quantise-", dir=out_path.parent))
    try:
        prepared = work / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            CropReader(batches),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTISED_OPS),
            per_channel=config.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[config.method],
            extra_options={"CalibTensorRangeSymmetric": False},
        )
    except (UserError, OSError):
        raise
    except Exception as exc:  # the quantiser raises plain exceptions with long messages
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"ONNX Runtime could not quantise the model: {first}"[:300],
            fix="export fp32 (the default profile), or try another onnx.int8.method",
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    channels = "per-channel" if config.per_channel else "per-tensor"
    return (
        f"static int8 QDQ ({', '.join(QUANTISED_OPS)}; {channels} int8 weights, uint8 activations), "
        f"{config.method} calibration on {len(batches.sources)} target crops"
    )
