"""Backbones, heads, the segmentor, presets, checkpoint import and the deploy module.

Names are imported lazily so that ``import adaptseg.models`` stays quick (no torch until first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptseg._lazy import lazy_getattr

_EXPORTS = {
    "Segmentor": "adaptseg.models.segmentor",
    "build_model": "adaptseg.models.presets",
    "load_preset": "adaptseg.models.presets",
    "list_presets": "adaptseg.models.presets",
    "ModelPreset": "adaptseg.models.presets",
    "DeployModule": "adaptseg.models.deploy",
    "load_checkpoint": "adaptseg.models.checkpoint",
    "LoadReport": "adaptseg.models.checkpoint",
    "save_weights": "adaptseg.models.weights",
    "load_weights": "adaptseg.models.weights",
}

__all__ = [
    "DeployModule",
    "LoadReport",
    "ModelPreset",
    "Segmentor",
    "build_model",
    "list_presets",
    "load_checkpoint",
    "load_preset",
    "load_weights",
    "save_weights",
]

if TYPE_CHECKING:
    from adaptseg.models.checkpoint import LoadReport, load_checkpoint
    from adaptseg.models.deploy import DeployModule
    from adaptseg.models.presets import ModelPreset, build_model, list_presets, load_preset
    from adaptseg.models.segmentor import Segmentor
    from adaptseg.models.weights import load_weights, save_weights


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
