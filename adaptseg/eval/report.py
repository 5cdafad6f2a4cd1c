"""An evaluation report: the metrics of one model on one split, as a table on screen and as JSON.

All numbers are percentages. In memory an undefined value (a class absent from both ground truth and
prediction) is NaN; in JSON it is ``null``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from adaptseg.errors import UserError
from adaptseg.eval.confusion import ConfusionMatrix
from adaptseg.io import write_text_atomic

NAN = float("nan")


def _num(value: float | None) -> float:
    return NAN if value is None else float(value)


def _json_num(value: float) -> float | None:
    return None if math.isnan(value) else value


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


@dataclass
class Report:
    """Per-class IoU, mIoU over a protocol's classes, and pixel accuracy of one evaluation (percent).

    ``extras`` holds the means of smaller protocols nested in ``protocol`` (``{"mIoU13": …}`` for a
    16-class evaluation), each computed from the per-class IoUs — never by rescaling ``miou``.
    """

    miou: float
    per_class: dict[str, float]
    aacc: float
    protocol: int
    n_images: int
    per_class_acc: dict[str, float] = field(default_factory=dict)
    macc: float = NAN
    extras: dict[str, float] = field(default_factory=dict)
    protocol_classes: tuple[str, ...] = ()
    pixels: int = 0

    @classmethod
    def from_confusion(
        cls,
        cm: ConfusionMatrix,
        protocol: int = 19,
        n_images: int = 0,
        class_names: list[str] | tuple[str, ...] | None = None,
    ) -> Report:
        """The report of a dataset-level confusion matrix under a protocol (19, 16 or 13 classes)."""
        return cls.from_dict({**cm.to_dict(protocol, class_names), "n_images": n_images})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Inverse of :meth:`to_dict` (``null`` → NaN)."""
        protocol = int(data["protocol"])
        nested = {k: _num(v) for k, v in data.items() if k.startswith("mIoU") and k != "mIoU"}
        return cls(
            miou=_num(data["mIoU"]),
            per_class={k: _num(v) for k, v in data["per_class"].items()},
            aacc=_num(data["aAcc"]),
            protocol=protocol,
            n_images=int(data.get("n_images", 0)),
            per_class_acc={k: _num(v) for k, v in data.get("per_class_acc", {}).items()},
            macc=_num(data.get("mAcc")),
            extras=nested,
            protocol_classes=tuple(data.get("protocol_classes", data["per_class"])),
            pixels=int(data.get("pixels", 0)),
        )

    @classmethod
    def read_json(cls, path: str | Path) -> Report:
        """Load a report written by :meth:`write_json` (e.g. to compare models in a bar chart)."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise UserError(
                "report not found", path=path, fix="pass a JSON written by `adaptseg eval --json`"
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"not an adaptseg evaluation report ({exc.__class__.__name__}: {exc})",
                path=path,
                fix="pass a JSON written by `adaptseg eval --json`",
            ) from None

    # -- output -------------------------------------------------------------------------------------
    @property
    def miou_name(self) -> str:
        return f"mIoU{self.protocol}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``mIoU``, ``per_class``, ``aAcc``, ``protocol``, ``n_images`` and the rest."""
        out: dict[str, Any] = {"mIoU": _json_num(self.miou)}
        out.update({k: _json_num(v) for k, v in self.extras.items()})
        out.update(
            per_class={k: _json_num(v) for k, v in self.per_class.items()},
            aAcc=_json_num(self.aacc),
            protocol=self.protocol,
            n_images=self.n_images,
            mAcc=_json_num(self.macc),
            per_class_acc={k: _json_num(v) for k, v in self.per_class_acc.items()},
            protocol_classes=list(self.protocol_classes),
            pixels=self.pixels,
        )
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path`` atomically (creating its folder)."""
        write_text_atomic(path, self.to_json())

    def summary(self) -> str:
        """One line: the protocol's mIoU, nested means, pixel accuracy, image count."""
        parts = [f"{self.miou_name} {_fmt(self.miou)}"]
        parts += [f"{k} {_fmt(v)}" for k, v in self.extras.items()]
        parts += [f"aAcc {_fmt(self.aacc)}", f"mAcc {_fmt(self.macc)}", f"{self.n_images} images"]
        return "  ".join(parts)

    def table(self) -> Table:
        """A Rich table of per-class IoU and accuracy; classes outside the protocol are dimmed and starred."""
        excluded = [name for name in self.per_class if name not in self.protocol_classes]
        caption = f"* not in {self.miou_name}" if excluded else None
        table = Table(title=f"Per-class IoU ({self.miou_name})", caption=caption, caption_justify="left")
        table.add_column("class")
        table.add_column("IoU", justify="right")
        table.add_column("Acc", justify="right")
        for name, iou in self.per_class.items():
            acc = self.per_class_acc.get(name, NAN)
            if name in excluded:
                table.add_row(f"{name} *", _fmt(iou), _fmt(acc), style="dim")
            else:
                table.add_row(name, _fmt(iou), _fmt(acc))
        return table

    def print(self, console: Console | None = None) -> None:
        """Render the per-class table and the summary line (to stdout unless a console is given)."""
        console = console or Console()
        console.print(self.table())
        console.print(self.summary(), style="bold", highlight=False)
