"""The build step that ships the presets, profiles and recipes inside the package.

The top-level ``models/ infer/ export/ train/`` folders are the source of truth (users edit and extend
them there, and ``ADAPTSEG_HOME`` can point at such a tree). A wheel carries their YAML files as
``adaptseg/_packaged/<folder>/`` so that an installed adaptseg finds them through ``importlib.resources``
(:mod:`adaptseg.resources`). Package data cannot name files outside the package and symbolic links do not
survive sdists, so ``build_py`` copies them; ``MANIFEST.in`` puts the same files in the sdist, so a wheel
built from the sdist has them too. Editable installs need no copy: the lookup falls back to the
folders beside the package.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: (top-level folder, files of it that ship): the YAML files, and the MiniCity pre-trained encoders that
#: MiniCity recipes start from (exports under models/<name>/ never ship)
SHIPPED = [
    ("models", "*.yaml"),
    ("models", "pretrained/*.safetensors"),
    ("infer", "*.yaml"),
    ("export", "*.yaml"),
    ("train", "**/*.yaml"),
]
PACKAGED = Path("adaptseg") / "_packaged"


class BuildPyWithResources(build_py):
    """``build_py`` that also copies the shipped files (:data:`SHIPPED`) into ``adaptseg/_packaged/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, pattern in SHIPPED:
            for source in sorted(Path(folder).glob(pattern)):
                target = Path(self.build_lib) / PACKAGED / source
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildPyWithResources})
