"""Architecture presets: ``models/<name>.yaml`` → a validated :class:`ModelPreset` → a :class:`Segmentor`.

A preset names a backbone and heads by their registry names plus their options::

    size: full                      # tiny presets train in seconds on a CPU; tests parametrise over this
    num_classes: 19
    crop: [512, 512]                # default training / deploy crop (H, W)
    mean: [123.675, 116.28, 103.53] # RGB, 0-255 scale (the deploy module normalises with these)
    std: [58.395, 57.12, 57.375]
    backbone: {type: resnet101_v1c, output_stride: 8}
    decode_head: {type: dlv2red_adapter, dilations: [6, 12], channels: 256}
    auxiliary_head: null            # optional, e.g. ATP's projection head
    pretrained_format: mmseg-resnet-v1c   # the layout of the ImageNet weights this preset starts from
    capabilities: {torchscript: true, onnx: true, compile: true}

Options are checked against the builder's signature when the preset is loaded, so a typo is a one-line
error naming the file and the nearest valid option. Preset names resolve in the top-level ``models/``
folder that ships with the package (or ``$ADAPTSEG_HOME/models``, see :mod:`adaptseg.resources`); any
YAML path works too.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from adaptseg.config import StrictModel, load_yaml, validate
from adaptseg.errors import UserError
from adaptseg.resources import MODELS, is_installed_copy, resource_dir

#: arguments the framework passes itself; a preset may not set them
_RESERVED = {"backbone": set(), "head": {"in_channels", "num_classes"}}


class ComponentSpec(StrictModel):
    """``type`` (a registry name) plus that builder's keyword options."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, protected_namespaces=())

    type: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Capabilities(StrictModel):
    """What the preset supports; the test suite runs the matching checks for each claim."""

    torchscript: bool = True
    onnx: bool = True
    compile: bool = True


class ModelPreset(StrictModel):
    name: str = ""
    description: str = ""
    size: Literal["tiny", "full"] = "full"
    num_classes: int = Field(19, ge=1)
    crop: tuple[int, int] = (512, 512)
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    backbone: ComponentSpec
    decode_head: ComponentSpec
    auxiliary_head: ComponentSpec | None = None
    pretrained_format: str | None = None
    capabilities: Capabilities = Capabilities()

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) <= 0:
            raise ValueError("std values must be positive")
        return v


# ------------------------------------------------------------------------------------------------ finding
def models_dir() -> Path:
    """The presets folder (``$ADAPTSEG_HOME/models``, else the packaged copy: see :mod:`adaptseg.resources`)."""
    return resource_dir(MODELS)


def exports_dir() -> Path:
    """Where exports land by default: beside the presets in a checkout or ``$ADAPTSEG_HOME``, else ``./models``
    (never inside an installed package)."""
    folder = models_dir()
    return Path("models") if is_installed_copy(folder) else folder


def list_presets(pattern: str = "*") -> list[str]:
    """Names of the presets in ``models/*.yaml`` matching a glob (``"tiny-*"``), sorted."""
    return MODELS.names(pattern)


def load_preset(name_or_path: str | Path) -> ModelPreset:
    """Load and validate a preset by name (``models/<name>.yaml``) or by path (``extends:`` allowed)."""
    path = MODELS.find(name_or_path)
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    preset = validate(ModelPreset, data, source=path)
    check_options(preset, source=path)
    return preset


def check_options(preset: ModelPreset, source: str | Path | None = None) -> None:
    """Every component's options must be parameters of its builder (one-line error with the nearest one)."""
    from adaptseg.models import registry

    registry.load_builtin_parts()
    for section, kind, table in (
        ("backbone", "backbone", registry.BACKBONES),
        ("decode_head", "head", registry.HEADS),
        ("auxiliary_head", "head", registry.HEADS),
    ):
        spec: ComponentSpec | None = getattr(preset, section)
        if spec is None:
            continue
        if spec.type not in table:
            close = difflib.get_close_matches(spec.type, list(table), n=1)
            fix = f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(sorted(table))}"
            raise UserError(f"unknown {kind} '{spec.type}' in '{section}.type'", path=source, fix=fix)
        params = inspect.signature(table[spec.type]).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        valid = [n for n in params if n not in _RESERVED[kind] and n != "self"]
        for option in spec.options:
            if option in _RESERVED[kind]:
                raise UserError(f"'{section}.{option}' is set by the framework", path=source, fix="remove it")
            if option not in params and not takes_any:
                close = difflib.get_close_matches(option, valid, n=1, cutoff=0.5)
                fix = (
                    f"did you mean '{section}.{close[0]}'?"
                    if close
                    else f"options of {spec.type}: {', '.join(valid)}"
                )
                raise UserError(f"unknown option '{section}.{option}' for {spec.type}", path=source, fix=fix)


# ----------------------------------------------------------------------------------------------- building
def build_model(preset: str | Path | ModelPreset, num_classes: int | None = None):
    """Build the :class:`~adaptseg.models.segmentor.Segmentor` a preset describes (randomly initialised).

    ``num_classes`` overrides the preset's (e.g. 16 for SYNTHIA benchmarks). Weights come separately:
    :func:`~adaptseg.models.checkpoint.load_checkpoint` or :func:`~adaptseg.models.weights.load_weights`.
    """
    from adaptseg.models.registry import build_backbone, build_head
    from adaptseg.models.segmentor import Segmentor

    if not isinstance(preset, ModelPreset):
        preset = load_preset(preset)
    else:
        check_options(preset)
    n = num_classes if num_classes is not None else preset.num_classes
    where = f"model preset '{preset.name}'"
    try:
        backbone = build_backbone(preset.backbone.type, **preset.backbone.options)
        channels = list(backbone.out_channels)
        head = build_head(
            preset.decode_head.type, in_channels=channels, num_classes=n, **preset.decode_head.options
        )
        aux = None
        if preset.auxiliary_head is not None:
            aux = build_head(
                preset.auxiliary_head.type,
                in_channels=channels,
                num_classes=n,
                **preset.auxiliary_head.options,
            )
    except (TypeError, ValueError, IndexError) as exc:
        raise UserError(
            f"{where} does not build: {exc}", fix="check the component options in its YAML"
        ) from None
    output_stride = backbone.out_strides[getattr(head, "output_index", -1)]
    model = Segmentor(backbone, head, aux, num_classes=n, output_stride=output_stride)
    model.preset_name = preset.name
    return model


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _summary(preset: ModelPreset) -> tuple[int, int]:
    """(parameter count, output stride), built on the meta device so it costs no memory or time."""
    import torch

    try:
        with torch.device("meta"):
            model = build_model(preset)
    except (NotImplementedError, RuntimeError):
        model = build_model(preset)
    return count_parameters(model), model.output_stride


_CAPABILITY_TAGS = {"torchscript": "script", "onnx": "onnx", "compile": "compile"}


def print_presets(pattern: str = "*") -> None:
    """Print a table of the presets matching ``pattern`` (what ``adaptseg models list`` shows)."""
    from rich.console import Console
    from rich.table import Table

    names = list_presets(pattern)
    if not names:
        raise UserError(
            f"no model preset matches '{pattern}'", fix="run `adaptseg models list` to see them all"
        )
    table = Table(title=f"model presets ({models_dir()})")
    table.add_column("name", no_wrap=True, min_width=max(len(n) for n in names))
    for col in ("size", "backbone", "head", "params", "OS", "crop", "capabilities"):
        table.add_column(col, justify="right" if col in ("params", "OS") else "left")
    for name in names:
        preset = load_preset(name)
        params, stride = _summary(preset)
        head = preset.decode_head.type + (f" + {preset.auxiliary_head.type}" if preset.auxiliary_head else "")
        caps = " ".join(_CAPABILITY_TAGS[k] for k, v in preset.capabilities.model_dump().items() if v) or "-"
        table.add_row(
            name,
            preset.size,
            preset.backbone.type,
            head,
            f"{params / 1e6:.2f} M",
            str(stride),
            "×".join(map(str, preset.crop)),
            caps,
        )
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=160)
    console.print(table)
