"""TorchScript artifacts (``model.pt`` + ``model.json``) as an engine backend."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from adaptseg.errors import UserError
from adaptseg.export.artifact import Artifact, check_input, open_artifact
from adaptseg.export.torchscript import quiet_torchscript
from adaptseg.infer.backends import register_backend, resolve_device
from adaptseg.infer.config import BackendOptions


class TorchScriptBackend:
    """Runs a TorchScript deploy module on ``device`` (the artifact fixes its own precision)."""

    def __init__(self, artifact: Artifact, device: str | torch.device | None = None):
        self.artifact = artifact
        self.device = resolve_device(device)
        meta = artifact.meta
        self.crop: tuple[int, int] | None = (int(meta.crop[0]), int(meta.crop[1]))
        self.num_classes = meta.num_classes
        self.mean = tuple(float(v) for v in meta.mean)
        try:
            with quiet_torchscript():
                self.module = torch.jit.load(str(artifact.model_path), map_location=self.device).eval()
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"not a loadable TorchScript file ({first})"[:300], path=artifact.model_path,
                            fix="re-export the model") from None

    def __call__(self, crops: Tensor) -> Tensor:
        check_input(self.artifact, crops)
        x = crops.to(self.device, dtype=torch.float32, non_blocking=True)
        with torch.inference_mode(), torch.jit.optimized_execution(False):  # see adaptseg.export.torchscript
            return self.module(x).float()

    def __repr__(self) -> str:
        return f"TorchScriptBackend({self.artifact.folder}, device={self.device})"


@register_backend("torchscript", suffixes=(".pt",))
def load_torchscript(
    path: Path, *, device: torch.device, options: BackendOptions | None = None, arch: str | None = None
) -> TorchScriptBackend:
    """An artifact folder or its ``model.pt`` (``options``/``arch`` do not apply to artifacts)."""
    return TorchScriptBackend(open_artifact(path, "torchscript"), device)
