"""Registers the artifact backends (TorchScript, ONNX Runtime, TensorRT) with the inference engine.

:func:`adaptseg.infer.backends.load_backend` imports this module (its ``PLUGIN_MODULES``) before
resolving ``--model``, so exported artifacts load by their file suffix or their ``model.json`` format.
"""

from __future__ import annotations

import adaptseg.infer.backend_onnx  # noqa: F401 - registers "onnx"
import adaptseg.infer.backend_tensorrt  # noqa: F401 - registers "trt" (tensorrt is imported on load only)
import adaptseg.infer.backend_torchscript  # noqa: F401 - registers "torchscript"
