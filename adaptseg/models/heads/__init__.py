"""Decode heads: each returns ``(logits, feature)``.

Each module of this package registers its builders (``@register_head``) on import.
"""

from adaptseg.plugins import import_submodules

import_submodules(__name__)
