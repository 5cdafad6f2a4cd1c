"""The one-way layers around exported artifacts (DESIGN.md; issue 14, item 4).

``infer`` and ``export`` both sit on the artifact layer (``adaptseg.artifact``) and never import each
other; the artifact layer imports neither (nor anything above them). Imports by name count too: a
module path in a string (a plugin list for ``importlib``) is an import all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import adaptseg

PACKAGE_ROOT = Path(adaptseg.__file__).parent

#: package → packages it must never reach
FORBIDDEN = {
    "adaptseg.infer": ("adaptseg.export",),
    "adaptseg.export": ("adaptseg.infer",),
    "adaptseg.artifact": (
        "adaptseg.infer",
        "adaptseg.export",
        "adaptseg.cli",
        "adaptseg.demo",
        "adaptseg.train",
        "adaptseg.methods",
    ),
}


def imported_names(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports (relative imports resolved) or names in a string constant."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.update({base, *(f"{base}.{alias.name}" for alias in node.names)})
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("adaptseg.")
        ):
            names.add(node.value)
    return names


def modules_of(package: str) -> list[Path]:
    return sorted((PACKAGE_ROOT.parent / package.replace(".", "/")).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_point_one_way(package):
    offending = []
    for path in modules_of(package):
        for name in imported_names(path, package):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package]):
                offending.append(f"{path.relative_to(PACKAGE_ROOT.parent)} imports {name}")
    assert not offending, "\n".join(offending)


def test_the_check_sees_relative_and_by_name_imports(tmp_path):
    """The checker itself: a relative import and a module path in a string are both caught."""
    module = tmp_path / "m.py"
    module.write_text("from ..export import exporter\nPLUGINS = ('adaptseg.export.onnx',)\n")
    names = imported_names(module, "adaptseg.infer")
    assert {"adaptseg.export.exporter", "adaptseg.export.onnx"} <= names
