"""Backbones in plain PyTorch with the public checkpoints' parameter names."""

import importlib

# Each module registers its builders on import; a module still being written is skipped.
for _name in ("resnet", "drn", "mit"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_name}":
            raise
