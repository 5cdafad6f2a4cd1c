"""The common shape of every dataset reader: a list of entries, each an image and maybe a label.

A reader only knows where its dataset keeps images and labels (``_find_images``/``_find_labels``);
pairing by id, unpaired-file bookkeeping, empty-split errors, label decoding and size checks live here
once. Readers yield :class:`Sample` — uint8 RGB image, uint8 trainId label (255 = ignore) or ``None``,
and a stable id (DESIGN.md "Contracts"; shared/datasets.md for every layout).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import cv2
import numpy as np

from adaptseg.data.datasets.encodings import ENCODINGS, LabelEncoding
from adaptseg.errors import UserError
from adaptseg.io import read_image

log = logging.getLogger(__name__)

#: How many unknown values a warning or error lists before "…".
SHOWN_VALUES = 10

_STRICT_LABELS: ContextVar[bool] = ContextVar("adaptseg_strict_labels", default=False)


@contextlib.contextmanager
def strict_labels(enabled: bool = True) -> Iterator[None]:
    """Readers opened inside the block stop on label values outside their label map instead of warning.

    The setting is taken when a reader is opened and travels with it (into DataLoader worker processes,
    evaluation threads); ``reader.strict_labels = True`` sets it on one reader.
    """
    token = _STRICT_LABELS.set(enabled)
    try:
        yield
    finally:
        _STRICT_LABELS.reset(token)


class MissingFolder(UserError):
    """An expected folder of the layout is absent; ``role`` says whether it holds images or labels."""

    def __init__(self, message: str, *, role: str, path: Path, fix: str):
        super().__init__(message, path=path, fix=fix)
        self.role = role


class Sample(NamedTuple):
    """One item of a dataset."""

    image: np.ndarray  # uint8 RGB H×W×3
    label: np.ndarray | None  # uint8 trainIds H×W, 255 = ignore; None for unlabelled splits
    id: str  # stable, unique within the dataset, e.g. "aachen/aachen_000000_000019"


@dataclass(frozen=True)
class Entry:
    """Where one sample lives on disk. ``meta`` holds per-sample facts (ACDC condition, label encoding)."""

    id: str
    image_path: Path
    label_path: Path | None
    meta: dict = field(default_factory=dict, compare=False)


#: Label files found for a split: id → (path, how the file is encoded).
LabelFiles = dict[str, tuple[Path, LabelEncoding]]


def nearest_hint(value: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def choose(kind: str, value: str, choices: Iterable[str], *, dataset: str) -> str:
    """Validate an option value against its choices; a UserError names the nearest valid one."""
    choices = tuple(choices)
    if value not in choices:
        raise UserError(
            f"unknown {dataset} {kind} {value!r}{nearest_hint(value, choices)}",
            fix=f"choose one of: {', '.join(choices)}",
        )
    return value


def collect_suffix(folder: Path, suffix: str, *, depth: int = 1, prefix: str = "") -> dict[str, Path]:
    """Files named ``*<suffix>`` exactly ``depth`` folders below ``folder``.

    Keyed by ``prefix`` + their path relative to ``folder`` with the suffix cut off, e.g.
    ``aachen/aachen_000000_000019`` for ``aachen/aachen_000000_000019_leftImg8bit.png``. Files with
    any other suffix (colour maps, instance maps, generated outputs) are never picked up.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*/" * depth + f"*{suffix}")):
        if path.is_file():
            found[prefix + path.relative_to(folder).as_posix()[: -len(suffix)]] = path
    return found


def collect_numbered(folder: Path, suffix: str = ".png") -> dict[str, Path]:
    """Files named ``<number><suffix>`` (``00001.png``, ``0000000.png``, ``17.png``), keyed by the number.

    Generated files beside them (``00001_labelTrainIds.png``, ``17_gt_color.png``) do not match.
    Sorted numerically, so that unpadded names (Synscapes) are in dataset order, not ``10 < 2``.
    """
    pattern = re.compile(r"(\d+)" + re.escape(suffix))
    found = []
    for path in folder.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), match.group(1), path))
    return {key: path for _, key, path in sorted(found)}


def with_encoding(files: dict[str, Path], encoding: LabelEncoding) -> LabelFiles:
    return {key: (path, encoding) for key, path in files.items()}


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its header only (Pillow opens lazily)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
    except FileNotFoundError:
        raise UserError("file not found", path=path, fix="check the dataset root and layout") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise UserError(f"unreadable image ({exc})", path=path, fix="re-extract or delete the file") from None
    return height, width


class SegDataset(ABC):
    """Base of the dataset readers: entries of one split, read as :class:`Sample`.

    Subclasses set the class attributes and implement :meth:`_find_images` (id → image path and
    per-sample meta) and :meth:`_find_labels` (id → label path and encoding); everything else is shared.

    ``labels=False`` skips the label folder (e.g. Cityscapes train used as an unlabelled target).
    ``strict=False`` (used by ``data check``) keeps images without a label instead of raising.

    A label holding raw values that its encoding does not define (what ``data check`` reports as unknown
    values) is read with those pixels ignored and a warning naming the file and the values, once per file
    and reader; with ``strict_labels`` (see :func:`strict_labels`) reading it is an error instead.
    """

    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    default_split: ClassVar[str]
    unlabelled_splits: ClassVar[frozenset[str]] = frozenset()
    #: splits ``data check`` reads when none is named (None: all of ``splits``).
    check_splits: ClassVar[tuple[str, ...] | None] = None
    label_encoding: ClassVar[LabelEncoding]  # the official encoding (the default of known_raw_values)
    #: GTA5 ships labels whose size disagrees with the image: resize them (nearest) instead of failing.
    resize_mismatched_labels: ClassVar[bool] = False

    root: Path
    split: str
    has_labels: (
        bool  # False for unlabelled splits (Cityscapes/ACDC test, Dark Zurich train/test) or labels=False
    )
    entries: list[Entry]
    unpaired_images: list[Path]  # images of a labelled split without a label (kept only with strict=False)
    unpaired_labels: list[Path]  # label files whose image is missing (never read; data check reports them)
    missing_images: list[str]  # ids a split list names whose image is missing (GTA5 split.mat)

    def __init__(
        self, root: str | Path, split: str | None = None, *, labels: bool = True, strict: bool = True
    ):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise UserError(
                f"{self.name} root not found (expected {self.layout_hint(split or self.default_split)})",
                path=self.root,
                fix=f"pass the folder that holds the official {self.name} layout",
            )
        self.split = choose("split", split or self.default_split, self.splits, dataset=self.name)
        self.has_labels = labels and self.split not in self.unlabelled_splits
        self.missing_images = []
        images = self._find_images()
        if not images:
            raise UserError(
                f"no images in the {self.name} {self.split!r} split (expected {self.layout_hint(self.split)})",
                path=self.root,
                fix="check that the archive was extracted completely into this root",
            )
        self.entries, self.unpaired_images, self.unpaired_labels = self._pair(
            images, self._find_labels() if self.has_labels else {}
        )
        self._warned_resize: set[str] = set()
        self._warned_values: set[Path] = set()
        self.strict_labels = _STRICT_LABELS.get()
        if strict and self.unpaired_images:
            raise UserError(
                f"{len(self.unpaired_images)} image(s) of the {self.name} {self.split!r} split have no label, "
                f"e.g. {self.unpaired_images[0]}",
                path=self.root,
                fix=f"run `adaptseg data check {self.name} {self.root} --split {self.split}`, "
                "or read images only with labels=False",
            )
        if strict and self.missing_images:
            raise UserError(
                f"{len(self.missing_images)} image(s) listed in the {self.split!r} split are missing, "
                f"e.g. {self.missing_images[0]}",
                path=self.root,
                fix=f"run `adaptseg data check {self.name} {self.root} --split {self.split}`",
            )

    def _pair(
        self, images: dict[str, tuple[Path, dict]], labels: LabelFiles
    ) -> tuple[list[Entry], list[Path], list[Path]]:
        """Entries (images paired with labels by id), images without a label, label files without an image."""
        entries, unpaired_images = [], []
        labels = dict(labels)
        for key, (image_path, meta) in images.items():
            label = labels.pop(key, None)
            if label is not None:
                meta = {**meta, "label_encoding": label[1].name}
            elif self.has_labels:
                unpaired_images.append(image_path)
            entries.append(Entry(key, image_path, label[0] if label else None, meta))
        return entries, unpaired_images, sorted(path for path, _ in labels.values())

    # --- what a subclass provides -------------------------------------------------------------

    @abstractmethod
    def layout_hint(self, split: str) -> str:
        """Where this split's images live, e.g. ``leftImg8bit/train/<city>/*_leftImg8bit.png``."""

    @abstractmethod
    def _find_images(self) -> dict[str, tuple[Path, dict]]:
        """id → (image path, meta) for the split, in dataset order."""

    @abstractmethod
    def _find_labels(self) -> LabelFiles:
        """id → (label path, encoding) for the split (only called for labelled splits)."""

    def _require_dir(self, relative: str, expected: str, *, role: str = "images") -> Path:
        """``root/relative`` or a :class:`MissingFolder` naming it and the layout expected there."""
        folder = self.root / relative
        if not folder.is_dir():
            raise self._missing_folder(relative, expected, role=role)
        return folder

    def _missing_folder(self, relative: str, expected: str, *, role: str = "images") -> MissingFolder:
        return MissingFolder(
            f"missing folder {relative}/ (expected {expected} under this root, the official {self.name} layout)",
            role=role,
            path=self.root,
            fix=f"point ROOT at the folder that holds {relative.split('/')[0]}/"
            + (", or read images only with labels=False" if role == "labels" else ""),
        )

    # --- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Sample:
        entry = self.entries[i]
        image = self.read_image(i)
        label = self._read_trainids(entry, image.shape[:2]) if entry.label_path is not None else None
        return Sample(image, label, entry.id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"

    def read_image(self, i: int) -> np.ndarray:
        """The image of entry ``i`` as uint8 RGB H×W×3."""
        return read_image(self.entries[i].image_path)

    def read_label(self, i: int) -> np.ndarray | None:
        """The label of entry ``i`` as uint8 trainIds (255 = ignore), or None for unlabelled entries."""
        entry = self.entries[i]
        if entry.label_path is None:
            return None
        image_hw = image_size(entry.image_path) if self.resize_mismatched_labels else None
        return self._read_trainids(entry, image_hw)

    def raw_label_values(self, i: int) -> np.ndarray:
        """The label of entry ``i`` as stored, before mapping (labelIds, palette indices, SYNTHIA R, …)."""
        entry = self.entries[i]
        if entry.label_path is None:
            raise UserError(f"{self.name} sample {entry.id!r} has no label", path=entry.image_path)
        return self.encoding_of(entry).read(entry.label_path)

    def encoding_of(self, entry: Entry) -> LabelEncoding:
        """How the label file of ``entry`` is encoded (a reader may accept a fallback encoding)."""
        return ENCODINGS[entry.meta.get("label_encoding", self.label_encoding.name)]

    @property
    def known_raw_values(self) -> np.ndarray:
        """Raw label values that are legitimate (mapped to a class or deliberately ignored)."""
        used = {e.meta["label_encoding"] for e in self.entries if "label_encoding" in e.meta}
        if not used:
            return self.label_encoding.known_raw_values
        return np.unique(np.concatenate([ENCODINGS[name].known_raw_values for name in sorted(used)]))

    def _read_trainids(self, entry: Entry, image_hw: tuple[int, int] | None) -> np.ndarray:
        assert entry.label_path is not None
        encoding = self.encoding_of(entry)
        raw = encoding.read(entry.label_path)
        self._check_values(entry.label_path, encoding, raw)
        label = encoding.to_trainids(raw)
        if image_hw is None or label.shape[:2] == tuple(image_hw):
            return label
        if not self.resize_mismatched_labels:
            raise UserError(
                f"label is {label.shape[1]}x{label.shape[0]} but its image is {image_hw[1]}x{image_hw[0]}",
                path=entry.label_path,
                fix=f"run `adaptseg data check {self.name} {self.root}` and replace the broken pair",
            )
        if entry.id not in self._warned_resize:
            self._warned_resize.add(entry.id)
            log.warning(
                "%s: label %dx%d resized (nearest) to its image %dx%d",
                entry.label_path,
                label.shape[1],
                label.shape[0],
                image_hw[1],
                image_hw[0],
            )
        return cv2.resize(label, (image_hw[1], image_hw[0]), interpolation=cv2.INTER_NEAREST)

    def _check_values(self, path: Path, encoding: LabelEncoding, raw: np.ndarray) -> None:
        """Warn (once per file) or, with ``strict_labels``, stop on raw values the encoding does not define."""
        unknown = encoding.unknown_values(raw)
        if not unknown:
            return
        values = ", ".join(map(str, unknown[:SHOWN_VALUES])) + (", …" if len(unknown) > SHOWN_VALUES else "")
        what = f"label value(s) {values} are not in the {encoding.name} label map"
        check = f"`adaptseg data check {self.name} {self.root} --split {self.split}`"
        if self.strict_labels:
            raise UserError(
                what,
                path=path,
                fix=f"repair or remove the file ({check} lists every such file), "
                "or drop --strict to read these pixels as ignore",
            )
        if path not in self._warned_values:
            self._warned_values.add(path)
            log.warning(
                "%s: %s; these pixels are read as ignore (255) — %s lists every such file, "
                "--strict stops on them",
                path,
                what,
                check,
            )
