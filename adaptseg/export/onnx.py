"""ONNX export of the deploy module: one file, dynamic batch, fixed crop, checked with ``onnx.checker``.

Exporter choice. torch ≥ 2.9 defaults to the dynamo exporter (``torch.export`` + onnxscript); the
TorchScript-based ``legacy`` exporter still ships (with a deprecation warning) in torch 2.11 and 2.13.
Both give ONNX Runtime outputs within 1e-6 of eager on every preset here, so the default is the one
that is robust across those versions for this contract:

* ``legacy`` records the batch as a symbolic dimension through ``dynamic_axes`` whatever the model
  does with sizes; ``dynamo`` goes through ``torch.export``'s symbolic shapes, whose 0/1 specialisation
  and guards have changed between torch releases (and it needs an example batch of ≥ 2);
* ``legacy`` writes one self-contained file by default; ``dynamo`` needs ``external_data=False``;
* ``legacy`` exports a MiT/DAFormer model ~10× faster on a CPU (0.6 s vs 9 s for the tiny preset);
* the result only depends on torch, not on the installed onnxscript's optimiser.

``exporter: dynamo`` in the export profile selects the other one (the path to take once torch drops
the legacy exporter); both are tested. After writing, export checks the file (``onnx.checker`` with
shape inference) and that the graph really takes ``batch×3×h×w`` with a symbolic batch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from adaptseg.artifact.meta import INPUT_NAME, OUTPUT_NAME
from adaptseg.errors import UserError
from adaptseg.export.formats import WriteJob, Written, register_format
from adaptseg.export.precision import at_precision

Exporter = Literal["legacy", "dynamo"]

#: protobuf's limit: larger models must keep their weights in an external data file
PROTOBUF_LIMIT = 2**31 - 1
BATCH_DIM = "batch"


@dataclass(frozen=True)
class OnnxResult:
    exporter: str  # "onnx-legacy" or "onnx-dynamo"
    opset: int
    external_data: bool


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers an export stores."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def needs_external_data(nbytes: int, limit: int = PROTOBUF_LIMIT) -> bool:
    """Whether weights of ``nbytes`` must go to an external data file (a ~1 % margin for the graph itself)."""
    return nbytes > limit * 0.99


def export_onnx(
    module: nn.Module,
    example: Tensor,
    path: str | Path,
    *,
    num_classes: int,
    opset: int = 18,
    exporter: Exporter = "legacy",
) -> OnnxResult:
    """Write ``module`` (eval mode, deploy contract) to ``path`` and check the file.

    ``example`` is one float32 N×3×h×w crop batch (N ≥ 2) at the artifact's crop; the batch dimension
    is exported as the symbolic ``batch``, height and width stay fixed. The output is declared as
    ``batch×num_classes×h×w`` (exporters leave sizes computed from the input symbolic), so runtimes and
    the backend's checks can read the class count from the graph.
    """
    path = Path(path)
    module = module.eval()
    external = needs_external_data(parameter_bytes(module))
    try:
        if exporter == "legacy":
            _export_legacy(module, example, path, opset)
        else:
            _export_dynamo(module, example, path, opset, external)
    except (UserError, OSError):  # a full disk or an unwritable folder is not the exporter's fault
        raise
    except Exception as exc:
        if isinstance(exc.__cause__ or exc.__context__, OSError):  # a write failure wrapped by the exporter
            raise (exc.__cause__ or exc.__context__) from None
        lines = str(exc).strip().splitlines()
        raise UserError(
            f"torch.onnx.export ({exporter}) failed: {type(exc).__name__}: {lines[0] if lines else ''}"[:300],
            fix=f"try onnx.exporter: {'dynamo' if exporter == 'legacy' else 'legacy'} in the export profile",
        ) from None
    crop = (int(example.shape[2]), int(example.shape[3]))
    _declare_output(path, num_classes, crop)
    check_onnx(path, crop=crop)
    return OnnxResult(f"onnx-{exporter}", opset, external)


def _export_legacy(module: nn.Module, example: Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            do_constant_folding=True,
        )


def _export_dynamo(module: nn.Module, example: Tensor, path: Path, opset: int, external: bool) -> None:
    if example.shape[0] < 2:
        raise ValueError("the dynamo exporter needs an example batch of >= 2 (it specialises size 1)")
    batch = torch.export.Dim(BATCH_DIM, min=1, max=4096)
    # the dynamo exporter prints progress to stdout and logs about absent torchvision ops; keep the
    # CLI's output to what export itself says
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                external_data=external,
                optimize=True,
                verbose=False,
            )
        finally:
            onnx_log.setLevel(level)


def _declare_output(path: Path, num_classes: int, crop: tuple[int, int]) -> None:
    """Set the output's channel and spatial sizes in the graph where the exporter left them symbolic."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # external weights stay where they are
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        return
    for dim, size in zip(list(dims)[1:], (num_classes, *crop), strict=True):
        if not dim.HasField("dim_value"):
            dim.dim_value = size
    onnx.save(model, str(path))


def _dims(value_info) -> list[int | str]:  # noqa: ANN001 - onnx.ValueInfoProto
    return [
        d.dim_param if d.HasField("dim_param") else d.dim_value for d in value_info.type.tensor_type.shape.dim
    ]


def graph_io(path: str | Path) -> tuple[list[int | str], list[int | str]]:
    """The shapes of an ONNX model's single input and first output (symbolic dims as names)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return _dims(model.graph.input[0]), _dims(model.graph.output[0])


def check_onnx(path: str | Path, crop: tuple[int, int]) -> None:
    """``onnx.checker`` (with shape inference) plus the deploy contract: ``batch×3×h×w`` in, ``batch×C×h×w`` out."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        lines = str(exc).strip().splitlines()
        raise UserError(f"onnx.checker rejects the export: {lines[0] if lines else exc}", path=path) from None
    inputs, outputs = graph_io(path)
    h, w = crop
    if len(inputs) != 4 or isinstance(inputs[0], int) or inputs[1:] != [3, h, w]:
        raise UserError(
            f"the exported graph takes {inputs}, expected [batch, 3, {h}, {w}]",
            path=path,
            fix="the exporter fixed the batch size: try the other onnx.exporter in the profile",
        )
    if len(outputs) != 4 or isinstance(outputs[0], int) or outputs[2:] != [h, w]:
        raise UserError(
            f"the exported graph returns {outputs}, expected [batch, C, {h}, {w}]",
            path=path,
            fix="the exporter fixed the batch size: try the other onnx.exporter in the profile",
        )


@register_format("onnx", precisions=("fp32", "fp16", "int8"))
def write_onnx_artifact(job: WriteJob) -> Written:
    """``model.onnx`` at the job's precision (``onnx.exporter``/``onnx.opset`` of the profile); int8 is the
    float export quantised statically on the job's calibration crops (:mod:`adaptseg.export.quantise`)."""
    int8 = job.precision == "int8"
    float_path = job.model_path.with_name(f".float-{job.model_path.name}") if int8 else job.model_path
    module = job.source.module if int8 else at_precision(job.source.module, job.precision)
    result = export_onnx(
        module,
        job.example,
        float_path,
        num_classes=job.source.num_classes,
        opset=job.profile.onnx.opset,
        exporter=job.profile.onnx.exporter,
    )
    note = "weights in an external data file (over 2 GB)" if result.external_data else "single file"
    if not int8:
        return Written(result.exporter, note, opset=result.opset)
    from adaptseg.export.calibration import CropBatches
    from adaptseg.export.quantise import quantise_onnx

    if not job.images:
        raise UserError("int8 needs calibration images", fix="pass --calib DIR or let export use MiniCity")
    settings = job.profile.onnx.int8
    try:
        note = quantise_onnx(
            float_path, job.model_path, CropBatches(job.images, job.crop, settings.batch_size), settings
        )
    finally:
        float_path.unlink(missing_ok=True)
    check_onnx(job.model_path, crop=job.crop)
    return Written(f"{result.exporter}+ort-quantize_static", note, opset=result.opset)
