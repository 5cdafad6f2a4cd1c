"""Export the deploy module to TorchScript, ONNX or TensorRT artifacts with a ``model.json`` sidecar and
a parity check against eager PyTorch (DESIGN.md: ``models/<name>/model.{pt,onnx,engine}`` + ``model.json``).

==================  ===========================================================================
``exporter``        :func:`export_model` — the whole job, atomic and parity-checked
``artifact``        the sidecar schema (:class:`ArtifactMeta`), hashing, :func:`open_artifact`
``torchscript``     scripted when exact, traced otherwise
``onnx``            one file, dynamic batch, fixed crop, ``onnx.checker``
``tensorrt``        engines from the ONNX export (lazy ``tensorrt`` import)
``verify``          parity figures and the per-precision bar
``profile``         export profiles (``export/*.yaml``)
``calibration``     real crops for parity and int8 calibration
``backends``        registers the artifact backends with the inference engine
==================  ===========================================================================

Names are imported lazily so that ``import adaptseg.export`` stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptseg._lazy import lazy_getattr

_EXPORTS = {
    "export_model": "adaptseg.export.exporter",
    "open_artifact": "adaptseg.export.artifact",
    "Artifact": "adaptseg.export.artifact",
    "ArtifactMeta": "adaptseg.export.artifact",
    "load_profile": "adaptseg.export.profile",
    "ExportProfile": "adaptseg.export.profile",
}

__all__ = ["Artifact", "ArtifactMeta", "ExportProfile", "export_model", "load_profile", "open_artifact"]

if TYPE_CHECKING:
    from adaptseg.export.artifact import Artifact, ArtifactMeta, open_artifact
    from adaptseg.export.exporter import export_model
    from adaptseg.export.profile import ExportProfile, load_profile


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
