"""A registry of things picked by name, filled by the modules that define them (DESIGN.md "register themselves").

The modules that register entries are listed by name and imported on first lookup, so importing the
registry stays cheap. A listed module that does not exist is an error like any other import error:
only a genuinely missing optional third-party package may be reported as "not installed", and that is
the entry's own business when it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name; :meth:`entries` imports :attr:`modules` (once) so that they register theirs."""

    def __init__(self, what: str, modules: Sequence[str]):
        self.what = what
        self.modules = tuple(modules)
        self._entries: dict[str, T] = {}
        self._loaded = False

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def entries(self) -> dict[str, T]:
        if not self._loaded:
            for module in self.modules:
                importlib.import_module(module)
            self._loaded = True
        return dict(self._entries)
