"""Model weights as safetensors (training state stays a torch checkpoint, owned by the Trainer)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import nn

from adaptseg.errors import UserError
from adaptseg.io import atomic_path
from adaptseg.models.checkpoint import LoadReport, load_checkpoint


def save_weights(model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model.state_dict()`` (parameters and BN buffers) to a ``.safetensors`` file, atomically.

    ``metadata`` (string → string) is stored in the file header, e.g. ``{"preset": "tiny-deeplabv2"}``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(
            "model weights are written as safetensors", path=path, fix="name the file *.safetensors"
        )
    # clone: safetensors refuses tensors that share storage (tied or sliced parameters)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    # a model that needs more than its preset to be rebuilt (models/union.py) adds its own header entries
    own = model.weights_metadata() if hasattr(model, "weights_metadata") else {}
    meta = {"format": "adaptseg", **own, **{str(k): str(v) for k, v in (metadata or {}).items()}}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load weights written by :func:`save_weights` (or any file in our own key layout) into ``model``."""
    return load_checkpoint(model, path, format="adaptseg", strict=strict)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
