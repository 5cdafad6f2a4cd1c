"""Presets, profiles and recipes: the YAML files users pick by name, found by one lookup.

The repository's top-level folders are the source of truth: ``models/`` (architecture presets),
``infer/`` (inference presets), ``export/`` (export profiles) and ``train/`` (training recipes). A name
(``tiny-deeplabv2``, ``minicity``, ``source_only/minicity-gta5``) is looked up in, in this order:

1. an explicit path: an existing file is used as it is (``extends:`` inside it stays relative to it);
2. ``$ADAPTSEG_HOME/<folder>`` when ``ADAPTSEG_HOME`` is set (another checkout, or the user's own tree);
3. the packaged copy, through :mod:`importlib.resources`: ``adaptseg/_packaged/<folder>`` in an installed
   wheel (the build copies the folders there, see ``setup.py``), or the folder beside the package in a
   source checkout or editable install.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from adaptseg.errors import UserError

#: where the build puts the top-level folders inside the package (``setup.py`` writes it)
PACKAGED = "_packaged"
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ResourceKind:
    """One top-level folder of named YAML files, and how errors talk about them."""

    folder: str
    what: str  # "model preset": the word in messages
    listing: str | None = None  # how a user finds the names; None: the error lists them
    recursive: bool = False  # names may have folders (``source_only/minicity-gta5``)

    def names(self, pattern: str = "*") -> list[str]:
        """Names (paths relative to the folder, without ``.yaml``) matching a glob, sorted.

        Bases that only exist to be extended (``_base.yaml``, ``_base/``) are not names.
        """
        root = resource_dir(self)
        files = root.rglob("*.yaml") if self.recursive else root.glob("*.yaml")
        found = (p.relative_to(root).with_suffix("").as_posix() for p in files)
        return sorted(n for n in found if not _is_base(n) and fnmatch.fnmatchcase(n, pattern))

    def find(self, name_or_path: str | Path) -> Path:
        """The file a name or a path refers to; a one-line :class:`UserError` otherwise."""
        path = Path(name_or_path)
        if path.is_file():
            return path
        if path.is_absolute() or path.suffix in SUFFIXES or not path.name:
            raise UserError(
                f"{self.what} file not found", path=path, fix=f"check the path, or {self._choices()}"
            )
        name = path.as_posix()
        named = resource_dir(self) / f"{name}.yaml"
        if named.is_file():
            return named
        close = difflib.get_close_matches(name, self.names(), n=1)
        fix = (f"did you mean '{close[0]}'? " if close else "") + self._choices()
        raise UserError(f"unknown {self.what} '{name}'", fix=fix)

    def _choices(self) -> str:
        return self.listing or f"choose one of: {', '.join(self.names())}"


MODELS = ResourceKind("models", "model preset", listing="list them with `adaptseg models list`")
INFER = ResourceKind("infer", "inference preset")
EXPORT = ResourceKind("export", "export profile")
TRAIN = ResourceKind(
    "train",
    "training recipe",
    recursive=True,
    listing="name one as <method>/<benchmark>, e.g. source_only/minicity-gta5",
)


def resource_dir(kind: ResourceKind) -> Path:
    """The folder names of ``kind`` resolve in: ``$ADAPTSEG_HOME/<folder>``, else the packaged copy."""
    home = os.environ.get("ADAPTSEG_HOME")
    if home:
        folder = Path(home) / kind.folder
        if not folder.is_dir():
            raise UserError(
                f"ADAPTSEG_HOME has no {kind.folder}/ folder",
                path=folder,
                fix="point ADAPTSEG_HOME at a tree with models/, infer/, export/ and train/, or unset it",
            )
        return folder
    return packaged_dir(kind)


def packaged_dir(kind: ResourceKind) -> Path:
    """The copy of ``kind``'s folder that came with the package (the wheel's, or the source checkout's)."""
    package = resources.files("adaptseg")
    for folder in (package / PACKAGED / kind.folder, package / ".." / kind.folder):
        if isinstance(folder, Path) and folder.is_dir():
            return folder.resolve()
    raise UserError(
        f"this adaptseg installation has no {kind.folder}/ folder",
        path=Path(str(package)),
        fix="reinstall adaptseg from a wheel or a checkout, or set ADAPTSEG_HOME to a checkout",
    )


def is_installed_copy(folder: Path) -> bool:
    """Whether ``folder`` is inside an installed package's copy, where nothing may be written."""
    return folder.resolve().is_relative_to(Path(str(resources.files("adaptseg"))).resolve() / PACKAGED)


def _is_base(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("/"))


def shipped_file(relative: str | Path) -> Path | None:
    """A file that ships beside the named folders (``models/pretrained/<weights>``), or None when there is none.

    Looked up under the same root as the presets: ``$ADAPTSEG_HOME``, else the packaged copy.
    """
    try:
        root = resource_dir(MODELS).parent
    except UserError:
        return None
    candidate = root / relative
    return candidate if candidate.is_file() else None
