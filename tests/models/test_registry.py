"""The backbone and head registries import their packages' modules; a module that fails to import is
reported as the import error it is, never as an unknown name."""

from __future__ import annotations

import sys

import pytest

from adaptseg.models.registry import BACKBONES, HEADS, load_builtin_parts
from adaptseg.plugins import import_submodules


def test_every_builtin_module_registers_its_parts():
    load_builtin_parts()
    assert {"resnet101_v1c", "resnet18_v1c", "drn_d_54", "mit_b5"} <= set(BACKBONES)
    assert {"deeplabv2", "dlv2red_adapter", "deeplabv3plus", "daformer", "segformer"} <= set(HEADS)


def test_a_broken_module_raises_its_import_error(tmp_path, monkeypatch):
    package = tmp_path / "parts_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text("LOADED = True\n")
    (package / "renamed.py").write_text("from adaptseg.models import no_such_module  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "parts_pkg", raising=False)
    with pytest.raises(ImportError, match="no_such_module"):
        import_submodules("parts_pkg")
    (package / "renamed.py").write_text("import adaptseg.no_such_module  # noqa\n")
    with pytest.raises(ModuleNotFoundError, match="adaptseg.no_such_module"):
        import_submodules("parts_pkg")
    assert import_submodules("parts_pkg", skip=frozenset({"renamed"})) is None
    assert sys.modules["parts_pkg.good"].LOADED
