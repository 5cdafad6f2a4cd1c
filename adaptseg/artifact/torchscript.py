"""TorchScript artifacts (``model.pt`` + ``model.json``) run by ``torch.jit``.

TorchScript is deprecated in torch 2.x and warns on every call; :func:`quiet_torchscript` silences
those warnings (they are about the API's future, not about this artifact) for export and loading alike.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from adaptseg.artifact.folder import Artifact, check_input
from adaptseg.artifact.runtime import register_runtime, resolve_device
from adaptseg.errors import UserError


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch's "TorchScript is deprecated" warnings (and tracer chatter) inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.\w+` is deprecated.*", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


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
            raise UserError(
                f"not a loadable TorchScript file ({first})"[:300],
                path=artifact.model_path,
                fix="re-export the model",
            ) from None

    def __call__(self, crops: Tensor) -> Tensor:
        check_input(self.artifact, crops)
        x = crops.to(self.device, dtype=torch.float32, non_blocking=True)
        with torch.inference_mode(), torch.jit.optimized_execution(False):  # see adaptseg.export.torchscript
            return self.module(x).float()

    def __repr__(self) -> str:
        return f"TorchScriptBackend({self.artifact.folder}, device={self.device})"


@register_runtime("torchscript", model_file="model.pt", suffixes=(".pt",))
def open_torchscript(artifact: Artifact, device: str | torch.device | None = None) -> TorchScriptBackend:
    """The scripted/traced deploy module on ``device`` (the artifact fixes its own precision)."""
    return TorchScriptBackend(artifact, device)
