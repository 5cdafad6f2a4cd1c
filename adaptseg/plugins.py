"""Import the modules of a package whose members register themselves (datasets, backbones, heads).

A registry finds its built-in entries by importing every module of its package, so adding one is adding
its module. A module that fails to import is a bug and its error is raised as it is: it must not look like
an unknown name. A part that needs an optional third-party package imports it where it is built and says
which package to install.
"""

from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package: str, skip: frozenset[str] = frozenset()) -> None:
    """Import every module of ``package`` (a dotted name) except those named in ``skip``."""
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
