"""TensorRT engines (``model.engine`` + ``model.json``) run on a CUDA device (needs ``tensorrt``).

Crops and logits live in CUDA memory (torch tensors as the device buffers, bound by name with
``set_tensor_address``); a batch larger than the engine's optimisation profile runs in chunks, and one
smaller than its minimum is padded. ``tensorrt`` is imported when an engine is loaded or built, so this
module registers the runtime on any machine; without it, :func:`import_tensorrt` raises a one-line
:class:`TensorRTMissing` (exit status 2) saying what to install.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptseg.artifact.folder import Artifact, check_classes, check_crop, check_input
from adaptseg.artifact.runtime import missing_dependency, register_runtime
from adaptseg.errors import UserError

MIN_VERSION = 10
INSTALL_HINT = (
    "pip install 'tensorrt>=10' (or `pip install -e .[gpu]`) on a machine with an NVIDIA GPU and CUDA; "
    "without TensorRT, export --format onnx and run it with onnxruntime-gpu"
)


class TensorRTMissing(UserError):
    """The ``tensorrt`` package (or a CUDA device) is not available."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a one-line :class:`TensorRTMissing` naming what to install."""
    try:
        import tensorrt as trt
    except ModuleNotFoundError as exc:
        if not missing_dependency(exc, "tensorrt"):
            raise
        raise TensorRTMissing("TensorRT is not installed", fix=INSTALL_HINT) from None
    except ImportError as exc:  # installed, but its libraries do not load
        raise TensorRTMissing(f"TensorRT is installed but does not load ({exc})", fix=INSTALL_HINT) from None
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < MIN_VERSION:
        raise TensorRTMissing(
            f"TensorRT {trt.__version__} is too old (need >= {MIN_VERSION})", fix=INSTALL_HINT
        )
    return trt


def require_cuda() -> None:
    """TensorRT builds and runs engines on an NVIDIA GPU only."""
    if not torch.cuda.is_available():
        raise TensorRTMissing(
            "TensorRT needs a CUDA device and none is available",
            fix="build the engine on the GPU machine that will run it (engines are GPU-specific)",
        )


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if dtype not in table:
        raise UserError(f"unsupported engine I/O type {dtype}", fix="re-export the model (float32 I/O)")
    return table[dtype]


class TensorRTBackend:
    """Runs a serialised TensorRT engine on one CUDA device."""

    def __init__(self, artifact: Artifact, device: str | torch.device | None = None):
        trt = import_tensorrt()
        require_cuda()
        self.artifact = artifact
        meta = artifact.meta
        self.device = (
            torch.device(device) if device is not None and str(device) != "auto" else torch.device("cuda")
        )
        if self.device.type != "cuda":
            raise UserError(
                "TensorRT engines run on CUDA devices only",
                path=artifact.folder,
                fix="use --device cuda, or export to ONNX/TorchScript for the CPU",
            )
        torch.cuda.set_device(self.device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(artifact.model_path.read_bytes())
        if self.engine is None:
            raise UserError(
                "TensorRT cannot load this engine (built by another TensorRT version or for another GPU)",
                path=artifact.model_path,
                fix="rebuild it on this machine with `adaptseg export --format trt`",
            )
        self.context = self.engine.create_execution_context()
        self.input_name, self.output_name = meta.input_name, meta.output_name
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        check_crop(artifact, (int(shape[2]), int(shape[3])), "TensorRT engine")
        check_classes(artifact, int(self.engine.get_tensor_shape(self.output_name)[1]), "TensorRT engine")
        low, _, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        self.in_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self.out_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
        self.crop: tuple[int, int] | None = (int(meta.crop[0]), int(meta.crop[1]))
        self.num_classes = meta.num_classes
        self.mean = tuple(float(v) for v in meta.mean)

    def __call__(self, crops: Tensor) -> Tensor:
        check_input(self.artifact, crops)
        x = crops.to(self.device, dtype=self.in_dtype).contiguous()
        parts = [self._run(x[i : i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)]
        return torch.cat(parts).float() if len(parts) > 1 else parts[0].float()

    def _run(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if n < self.min_batch:  # pad up to the profile's minimum with copies of the last crop
            x = torch.cat([x, x[-1:].expand(self.min_batch - n, -1, -1, -1)]).contiguous()
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out = torch.empty(
            tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.out_dtype, device=self.device
        )
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        # on torch's current stream: ordered with the copies before and the reads after, no extra syncs
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise UserError("TensorRT failed to run the engine", path=self.artifact.model_path)
        return out[:n]

    def __repr__(self) -> str:
        return f"TensorRTBackend({self.artifact.folder}, device={self.device})"


@register_runtime("trt", model_file="model.engine", suffixes=(".engine", ".plan"))
def open_tensorrt(artifact: Artifact, device: str | torch.device | None = None) -> TensorRTBackend:
    """The engine on a CUDA device (needs tensorrt)."""
    return TensorRTBackend(artifact, device)
