"""Decode heads: each returns ``(logits, feature)``."""

import importlib

for _name in ("deeplabv2", "deeplabv3plus", "daformer", "segformer", "projection"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_name}":
            raise
