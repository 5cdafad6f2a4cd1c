"""ONNX artifacts (``model.onnx`` + ``model.json``) run by ONNX Runtime.

Execution providers are chosen from what the installed ONNX Runtime offers, best first: TensorRT →
CUDA → CPU on a CUDA device, CPU on a CPU device (:func:`choose_providers`). ``providers=`` or the
``ADAPTSEG_ORT_PROVIDERS`` environment variable (comma-separated names) override the choice. On a GPU
provider crops and logits stay on the device (I/O binding); on the CPU they go through NumPy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from adaptseg.artifact.folder import Artifact, check_classes, check_crop, check_input
from adaptseg.artifact.runtime import missing_dependency, register_runtime, resolve_device
from adaptseg.errors import UserError

#: preference order of the execution providers adaptseg uses
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset(PROVIDER_ORDER[:2])
PROVIDERS_ENV = "ADAPTSEG_ORT_PROVIDERS"


def choose_providers(
    available: Sequence[str], device_type: str = "cpu", requested: Sequence[str] | None = None
) -> list[str]:
    """The execution providers to open a session with, best first.

    ``requested`` (names, in order) wins when given, each checked against ``available``; otherwise
    the providers of :data:`PROVIDER_ORDER` that are available — all of them for a CUDA device, only
    the CPU for a CPU device.
    """
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise UserError(
                f"ONNX Runtime provider {', '.join(missing)} is not available here (available: {', '.join(available)})",
                fix="install onnxruntime-gpu (in place of onnxruntime) for CUDA/TensorRT, or request other providers",
            )
        return list(dict.fromkeys(requested))
    wanted = PROVIDER_ORDER if device_type == "cuda" else ("CPUExecutionProvider",)
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise UserError(
            f"ONNX Runtime offers none of {', '.join(wanted)} (available: {', '.join(available)})",
            fix="install onnxruntime (CPU) or onnxruntime-gpu",
        )
    return chosen


def requested_providers(providers: Sequence[str] | str | None = None) -> list[str] | None:
    """Providers asked for by argument, else by ``$ADAPTSEG_ORT_PROVIDERS``; ``None`` = choose automatically."""
    value = providers if providers is not None else os.environ.get(PROVIDERS_ENV)
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    return [n.strip() for n in names if n.strip()] or None


def import_onnxruntime():  # noqa: ANN201 - the onnxruntime module
    """The ``onnxruntime`` module, or a one-line error saying to install it (only when it is itself absent)."""
    try:
        import onnxruntime
    except ModuleNotFoundError as exc:
        if not missing_dependency(exc, "onnxruntime"):
            raise
        raise UserError(
            "ONNX Runtime is not installed", fix="pip install onnxruntime (or onnxruntime-gpu)"
        ) from None
    return onnxruntime


class OnnxRuntimeBackend:
    """Runs an ONNX artifact with ONNX Runtime."""

    def __init__(
        self,
        artifact: Artifact,
        device: str | torch.device | None = None,
        providers: Sequence[str] | str | None = None,
        threads: int | None = None,
    ):
        ort = import_onnxruntime()
        self.artifact = artifact
        meta = artifact.meta
        wanted = resolve_device(device)
        chosen = choose_providers(ort.get_available_providers(), wanted.type, requested_providers(providers))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(artifact.model_path), sess_options=options, providers=chosen
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"ONNX Runtime cannot load the model ({first})"[:300],
                path=artifact.model_path,
                fix="re-export the model",
            ) from None
        self.providers = self.session.get_providers()
        on_gpu = self.providers[0] in GPU_PROVIDERS
        self.device = wanted if on_gpu and wanted.type == "cuda" else torch.device("cpu")
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        static = inp.shape[2:] if all(isinstance(d, int) for d in inp.shape[2:]) else None
        check_crop(artifact, tuple(static) if static is not None else None, "ONNX graph")
        channels = out.shape[1] if len(out.shape) == 4 and isinstance(out.shape[1], int) else None
        check_classes(artifact, channels, "ONNX graph")
        self.crop: tuple[int, int] | None = (int(meta.crop[0]), int(meta.crop[1]))
        self.num_classes = meta.num_classes
        self.mean = tuple(float(v) for v in meta.mean)

    def __call__(self, crops: Tensor) -> Tensor:
        check_input(self.artifact, crops)
        if self.device.type == "cuda":
            return self._run_bound(crops)
        x = crops.detach().to("cpu", dtype=torch.float32).contiguous().numpy()
        (out,) = self.session.run([self.output_name], {self.input_name: x})
        return torch.from_numpy(out)

    def _run_bound(self, crops: Tensor) -> Tensor:
        """Device-resident run: crops and logits stay in CUDA memory (ONNX Runtime I/O binding)."""
        x = crops.to(self.device, dtype=torch.float32).contiguous()
        h, w = self.crop or x.shape[2:]
        out = torch.empty((x.shape[0], self.num_classes, h, w), dtype=torch.float32, device=self.device)
        index = self.device.index or 0
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(self.output_name, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        return out

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.artifact.folder}, providers={self.providers})"


@register_runtime("onnx", model_file="model.onnx", suffixes=(".onnx",))
def open_onnx(artifact: Artifact, device: str | torch.device | None = None) -> OnnxRuntimeBackend:
    """ONNX Runtime with providers from ``$ADAPTSEG_ORT_PROVIDERS`` or chosen for ``device``."""
    return OnnxRuntimeBackend(artifact, device)
