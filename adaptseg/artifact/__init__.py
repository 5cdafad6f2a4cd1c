"""The artifact format, below both :mod:`adaptseg.infer` and :mod:`adaptseg.export` (DESIGN.md layers).

==================  ===========================================================================
``meta``            the ``model.json`` schema (:class:`ArtifactMeta`) and the values it records
``folder``          :func:`open_artifact` (sidecar and model file checked against each other), hashing
``runtime``         the registry of runtimes by format, :func:`open_runtime`
``torchscript``     ``torch.jit`` runtime
``onnx``            ONNX Runtime runtime (execution providers, I/O binding)
``tensorrt``        TensorRT runtime (lazy ``tensorrt`` import)
==================  ===========================================================================

``infer`` runs artifacts through the runtimes; ``export`` writes them and checks parity through the same
runtimes. Neither package imports the other. Names are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptseg._lazy import lazy_getattr

_EXPORTS = {
    "Artifact": "adaptseg.artifact.folder",
    "open_artifact": "adaptseg.artifact.folder",
    "ArtifactMeta": "adaptseg.artifact.meta",
    "open_runtime": "adaptseg.artifact.runtime",
    "register_runtime": "adaptseg.artifact.runtime",
    "runtimes": "adaptseg.artifact.runtime",
}

__all__ = ["Artifact", "ArtifactMeta", "open_artifact", "open_runtime", "register_runtime", "runtimes"]

if TYPE_CHECKING:
    from adaptseg.artifact.folder import Artifact, open_artifact
    from adaptseg.artifact.meta import ArtifactMeta
    from adaptseg.artifact.runtime import open_runtime, register_runtime, runtimes


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
