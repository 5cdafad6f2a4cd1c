"""``adaptseg demo``: MiniCity → source-only → adaptation → ONNX → sliding-window inference → report.

================  =========================================================================
``methods``       which methods the demo can run, their ``train/demo/`` recipes and stages
``pipeline``      the steps in order (:func:`run_demo`), the evaluation, ``results.json``
``steps``         step headers with time estimates, wall/CPU timings
``report``        overlays, the "changed most" classes, ``report.md``
================  =========================================================================
"""

from adaptseg.demo.methods import DEFAULT_METHOD, METHODS, get_method
from adaptseg.demo.pipeline import DemoOptions, run_demo

__all__ = ["DEFAULT_METHOD", "METHODS", "DemoOptions", "get_method", "run_demo"]
