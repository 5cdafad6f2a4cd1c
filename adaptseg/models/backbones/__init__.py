"""Backbones in plain PyTorch with the public checkpoints' parameter names.

Each module of this package registers its builders (``@register_backbone``) on import.
"""

from adaptseg.plugins import import_submodules

import_submodules(__name__)
