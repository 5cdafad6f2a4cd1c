"""Methods: what each training stage computes, and the registry recipes pick them from by name.

``adaptseg.methods.base`` defines :class:`Method` (training stages) and :class:`Task` (stages that write
files); every module of this package is imported on first lookup, so a new method only needs a module
here with ``@register_method("name")`` on its class. Shared parts live in ``adaptseg.methods.parts``.
"""

from adaptseg.methods.base import (
    METHODS,
    Batch,
    Method,
    ModelHandle,
    ModelSpec,
    NoOptions,
    Task,
    get_method,
    list_methods,
    register_method,
)

__all__ = [
    "METHODS",
    "Batch",
    "Method",
    "ModelHandle",
    "ModelSpec",
    "NoOptions",
    "Task",
    "get_method",
    "list_methods",
    "register_method",
]
