"""``adaptseg demo``: MiniCity → source-only → adaptation → ONNX → sliding-window inference → report.

================  =========================================================================
``methods``       which methods the demo can run: the ``train/demo/`` recipes with a ``demo:`` section
``pipeline``      the steps in order (:func:`run_demo`), the evaluation, ``results.json``
``steps``         step headers with time estimates, wall/CPU timings
``report``        overlays, the "changed most" classes, ``report.md``
================  =========================================================================
"""

from adaptseg.demo.methods import DEFAULT_METHOD, demo_methods, get_method
from adaptseg.demo.pipeline import DemoOptions, run_demo

__all__ = ["DEFAULT_METHOD", "DemoOptions", "demo_methods", "get_method", "run_demo"]
