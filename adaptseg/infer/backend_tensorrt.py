"""TensorRT engines (``model.engine`` + ``model.json``) as an engine backend (needs ``tensorrt`` and CUDA).

Crops and logits live in CUDA memory (torch tensors as the device buffers, bound by name with
``set_tensor_address``); a batch larger than the engine's optimisation profile runs in chunks, and one
smaller than its minimum is padded. ``tensorrt`` is imported when an engine is loaded, so this module
registers the backend kind on any machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adaptseg.errors import UserError
from adaptseg.export.artifact import Artifact, check_classes, check_crop, check_input, open_artifact
from adaptseg.export.tensorrt import import_tensorrt, require_cuda
from adaptseg.infer.backends import register_backend
from adaptseg.infer.config import BackendOptions


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
        self.device = torch.device(device) if device is not None and str(device) != "auto" else torch.device("cuda")
        if self.device.type != "cuda":
            raise UserError("TensorRT engines run on CUDA devices only", path=artifact.folder,
                            fix="use --device cuda, or export to ONNX/TorchScript for the CPU")
        torch.cuda.set_device(self.device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(artifact.model_path.read_bytes())
        if self.engine is None:
            raise UserError("TensorRT cannot load this engine (built by another TensorRT version or for another GPU)",
                            path=artifact.model_path, fix="rebuild it on this machine with `adaptseg export --format trt`")
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
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.out_dtype, device=self.device)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        # on torch's current stream: ordered with the copies before and the reads after, no extra syncs
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise UserError("TensorRT failed to run the engine", path=self.artifact.model_path)
        return out[:n]

    def __repr__(self) -> str:
        return f"TensorRTBackend({self.artifact.folder}, device={self.device})"


@register_backend("trt", suffixes=(".engine", ".plan"))
def load_tensorrt(
    path: Path, *, device: torch.device, options: BackendOptions | None = None, arch: str | None = None
) -> TensorRTBackend:
    """An artifact folder or its ``model.engine`` (needs tensorrt and a CUDA device)."""
    return TensorRTBackend(open_artifact(path, "trt"), device)
