"""Batched sliding-window inference: engine, presets, backends, pseudo-label store, evaluation.

Names are imported lazily so that ``import adaptseg.infer`` stays quick::

    from adaptseg.infer import SlidingWindow, load_backend, load_preset
    engine = SlidingWindow(load_backend("runs/x"), load_preset("cityscapes-slide"))
    for prediction in engine.run([("a", image)]):
        label = prediction.label()
        prediction.release()  # optional: the next image of this size reuses its buffer
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptseg._lazy import lazy_getattr

_EXPORTS = {
    "SlidingWindow": "adaptseg.infer.engine",
    "Prediction": "adaptseg.infer.engine",
    "InferenceConfig": "adaptseg.infer.config",
    "load_preset": "adaptseg.infer.config",
    "Backend": "adaptseg.infer.backends",
    "TorchBackend": "adaptseg.infer.backends",
    "load_backend": "adaptseg.infer.backends",
    "PseudoLabelStore": "adaptseg.infer.store",
    "evaluate_model": "adaptseg.infer.evaluate",
    "segment_folder": "adaptseg.infer.run",
    "pseudo_label_split": "adaptseg.infer.run",
}

__all__ = [
    "Backend", "InferenceConfig", "Prediction", "PseudoLabelStore", "SlidingWindow", "TorchBackend",
    "evaluate_model", "load_backend", "load_preset", "pseudo_label_split", "segment_folder",
]  # fmt: skip

if TYPE_CHECKING:
    from adaptseg.infer.backends import Backend, TorchBackend, load_backend
    from adaptseg.infer.config import InferenceConfig, load_preset
    from adaptseg.infer.engine import Prediction, SlidingWindow
    from adaptseg.infer.evaluate import evaluate_model
    from adaptseg.infer.run import pseudo_label_split, segment_folder
    from adaptseg.infer.store import PseudoLabelStore


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
