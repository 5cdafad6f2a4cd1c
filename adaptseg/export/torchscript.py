"""TorchScript export of the deploy module: scripted when exact, traced otherwise.

Scripting is tried first because it compiles the code as written: the deploy module's upsampling reads
the input size at run time and any branch in a head stays a branch, so one file serves every batch size
exactly. Tracing records the operations of one example run; for the deploy contract (fixed crop,
dynamic batch) that is also exact as long as no Python control flow depends on the input, which export
checks by running the trace on batch sizes other than the example's. ``mode: auto`` scripts, and
traces only when scripting fails (e.g. a module using Python features TorchScript lacks) or does not
reproduce eager outputs; ``model.json`` records which one was used and why.

TorchScript is deprecated in torch 2.x and warns on every call; the warnings are silenced here
(:func:`~adaptseg.artifact.torchscript.quiet_torchscript`), and the files load on torch 2.11 and 2.13.
Artifacts run without the profiling executor's optimisation passes (``torch.jit.optimized_execution
(False)``): they re-specialise the graph for every new batch size and cost seconds per shape, while a
convolutional network's time is in its kernels, which are the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from adaptseg.artifact.torchscript import quiet_torchscript
from adaptseg.errors import UserError
from adaptseg.export.formats import WriteJob, Written, register_format
from adaptseg.export.precision import at_precision

Mode = Literal["auto", "script", "trace"]


@dataclass(frozen=True)
class TorchScriptResult:
    exporter: str  # "torch.jit.script" or "torch.jit.trace"
    note: str  # why that one


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.shape == b.shape else float("inf")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


@torch.inference_mode()
def _reproduces(compiled: torch.jit.ScriptModule, module: nn.Module, examples: list[Tensor]) -> float:
    """The largest |Δ| between ``compiled`` and eager ``module`` over ``examples``."""
    with torch.jit.optimized_execution(
        False
    ):  # numerics only: skip the profiling executor's re-optimisations
        return max(_max_diff(compiled(x), module(x)) for x in examples)


def _other_batches(example: Tensor) -> list[Tensor]:
    """Batches of other sizes than the example's (1 and N+1), cut or grown from it."""
    return [example[:1], torch.cat([example, example[:1].flip(-1)], dim=0)]


def export_torchscript(
    module: nn.Module, example: Tensor, path: str | Path, *, mode: Mode = "auto", tolerance: float = 1e-4
) -> TorchScriptResult:
    """Write ``module`` (eval mode, deploy contract) to ``path`` with ``torch.jit.save``.

    ``example`` is one float32 N×3×h×w crop batch at the artifact's crop. ``tolerance`` is the largest
    |Δ| against eager for a compiled module to count as exact here: a scripted module is checked on one
    crop (it keeps the code's shape logic), a trace on batch sizes 1 and N+1 besides the N it recorded.
    The parity check on target images follows in :mod:`adaptseg.export.verify`.
    """
    module = module.eval()
    why_not_script = ""
    with quiet_torchscript():
        if mode in ("auto", "script"):
            try:
                scripted = torch.jit.script(module)
                diff = _reproduces(scripted, module, [example[:1]])
            except Exception as exc:  # TorchScript's frontend raises many error types
                if mode == "script":
                    raise UserError(
                        f"torch.jit.script cannot compile this model ({_first_line(exc)})",
                        fix="use torchscript.mode: trace (or auto) in the export profile",
                    ) from None
                why_not_script = f"torch.jit.script failed ({_first_line(exc)})"
            else:
                if diff <= tolerance:
                    torch.jit.save(scripted, str(path))
                    return TorchScriptResult(
                        "torch.jit.script",
                        "scripted: compiles the code as written (shape logic and branches kept), so it is exact at any batch",
                    )
                if mode == "script":
                    raise UserError(
                        f"the scripted model differs from eager by {diff:.3g}",
                        fix="use torchscript.mode: trace (or auto) in the export profile",
                    )
                why_not_script = f"the scripted model differs from eager by {diff:.3g}"
        try:
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(module, example, check_trace=False)
            diff = _reproduces(traced, module, _other_batches(example))
        except Exception as exc:
            raise UserError(
                f"torch.jit.trace cannot record this model ({_first_line(exc)})",
                fix="this preset cannot be exported to TorchScript; export to ONNX instead",
            ) from None
        if diff > tolerance:
            raise UserError(
                f"the traced model differs from eager by {diff:.3g} on other batch sizes "
                "(Python control flow depends on the input)",
                fix="export to ONNX instead, or make the model scriptable",
            )
        torch.jit.save(traced, str(path))
    note = "traced: the deploy contract has a fixed crop and a dynamic batch, checked on batch 1..N+1"
    return TorchScriptResult(
        "torch.jit.trace", f"{note}; not scripted because {why_not_script}" if why_not_script else note
    )


@register_format("torchscript")
def write_torchscript_artifact(job: WriteJob) -> Written:
    """``model.pt`` at the job's precision (``torchscript.mode`` of the profile)."""
    result = export_torchscript(
        at_precision(job.source.module, job.precision),
        job.example,
        job.model_path,
        mode=job.profile.torchscript.mode,
        tolerance=1e-4 if job.precision == "fp32" else 5e-2,
    )
    return Written(result.exporter, result.note)
