"""Export the deploy module to TorchScript, ONNX or TensorRT artifacts with a ``model.json`` sidecar and
a parity check against eager PyTorch (DESIGN.md: ``models/<name>/model.{pt,onnx,engine}`` + ``model.json``).

==================  ===========================================================================
``exporter``        :func:`export_model` — the whole job, atomic and parity-checked
``formats``         the registry of export formats (:func:`register_format`), one writer per format
``staging``         the artifact folder built beside its destination, renamed into place
``source``          the eager model to export (run folder, weights, preset name)
``torchscript``     scripted when exact, traced otherwise
``onnx``            one file, dynamic batch, fixed crop, ``onnx.checker``
``tensorrt``        engines from the ONNX export (lazy ``tensorrt`` import)
``verify``          parity figures and the per-precision bar
``profile``         export profiles (``export/*.yaml``)
``calibration``     real crops for parity and int8 calibration
``precision``       half-precision wrapping for formats that carry their arithmetic
==================  ===========================================================================

The artifact format itself (``model.json``, opening and checking an artifact, the runtimes that run
it) is :mod:`adaptseg.artifact`, below this package and :mod:`adaptseg.infer`; neither imports the other.

Names are imported lazily so that ``import adaptseg.export`` stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptseg._lazy import lazy_getattr

_EXPORTS = {
    "export_model": "adaptseg.export.exporter",
    "open_artifact": "adaptseg.artifact.folder",
    "Artifact": "adaptseg.artifact.folder",
    "ArtifactMeta": "adaptseg.artifact.meta",
    "register_format": "adaptseg.export.formats",
    "load_profile": "adaptseg.export.profile",
    "ExportProfile": "adaptseg.export.profile",
}

__all__ = [
    "Artifact",
    "ArtifactMeta",
    "ExportProfile",
    "export_model",
    "load_profile",
    "open_artifact",
    "register_format",
]

if TYPE_CHECKING:
    from adaptseg.artifact.folder import Artifact, open_artifact
    from adaptseg.artifact.meta import ArtifactMeta
    from adaptseg.export.exporter import export_model
    from adaptseg.export.formats import register_format
    from adaptseg.export.profile import ExportProfile, load_profile


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
