"""Import weights by path from the public checkpoint layouts (never downloaded).

A *format* is a small, declarative recipe: how to recognise a state dict of that layout (``detect``) and
how its keys map onto ours (a :class:`KeyMap` of renames and drops, which also gives the inverse map the
tests use to build external-layout state dicts from our own modules). Built-in formats:

=====================  =====================================================================================
``adaptseg``           our own names (``save_weights`` files, trainer checkpoints' model state)
``mmseg-segmentor``    full mmseg ``EncoderDecoder`` state (``backbone.`` / ``decode_head.`` / ``auxiliary_head.``),
                       as DDB, DAFormer and ATP release it, optionally under a wrapper (``model.``, ``ema_model.``,
                       ``stu_model.`` …) picked with ``prefix=``
``torchvision``        torchvision ResNet ImageNet weights (``conv1``/``bn1``/``layer1..4``/``fc``)
``mmseg-resnet-v1c``   open-mmlab ``resnet{50,101}_v1c`` (deep stem ``stem.0..7``)
``fyu-drn``            fyu/drn ImageNet weights (``layer0..8``/``fc``), as EnD's DRN-D-54 uses
``end-deeplabv3plus``  EnD's DeepLabV3+ (jfzhang95 layout ``backbone.``/``aspp.``/``decoder.``; BGR-trained)
``adaptsegnet``        AdaptSegNet/UMMA DeepLab-v2 (``conv1``…``layer4``, ``layer5.conv2d_list.{i}``; BGR-trained)
=====================  =====================================================================================

Other modules add formats with :func:`register_format` (the MiT/SegFormer maps live in
``checkpoint_maps_mit.py``, imported on first use).
"""

from __future__ import annotations

import importlib
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adaptseg.errors import UserError

StateDict = dict[str, Tensor]

#: modules that register more formats when imported (on first lookup: they import this module)
PLUGIN_MODULES = ("adaptseg.models.checkpoint_maps_mit",)

#: containers whose value is the state dict, tried in order (mmcv/lightning, torchvision references, …)
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")

#: wrapper prefixes stripped automatically (DataParallel/DDP, torch.compile)
AUTO_STRIP = ("module.", "_orig_mod.")


# ---------------------------------------------------------------------------------------------- key maps
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _pattern(template: str) -> re.Pattern[str]:
    """``'layer5.conv2d_list.{i}.'`` → a regex matching that prefix, capturing each ``{name}`` as digits."""
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(rf"(?P<{m.group(1)}>\d+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out))


@dataclass(frozen=True)
class KeyMap:
    """Prefix renames between an external layout and ours, usable in both directions.

    ``renames`` is an ordered list of ``(external_prefix, our_prefix)``; the first one whose external
    prefix matches a key rewrites that prefix. Prefixes may hold integer placeholders such as ``{i}``
    (``("layer5.conv2d_list.{i}.", "decode_head.aspp_modules.{i}.conv.")``). ``drop`` lists external
    prefixes with no counterpart here (an ImageNet classifier ``fc.``); a key matching no rename and no
    drop is kept as is and will show up as unexpected if the model lacks it.
    """

    renames: tuple[tuple[str, str], ...] = ()
    drop: tuple[str, ...] = ()

    def _rewrite(self, key: str, pairs: Iterable[tuple[str, str]]) -> str:
        for src, dst in pairs:
            m = _pattern(src).match(key)
            if m:
                return dst.format(**m.groupdict()) + key[m.end() :]
        return key

    def to_ours(self, state: Mapping[str, Tensor]) -> tuple[StateDict, list[str]]:
        """Rename an external state dict to our keys; returns ``(renamed, dropped_external_keys)``."""
        out: StateDict = {}
        dropped: list[str] = []
        for key, value in state.items():
            if any(key.startswith(p) for p in self.drop):
                dropped.append(key)
                continue
            out[self._rewrite(key, self.renames)] = value
        return out, dropped

    def to_external(self, state: Mapping[str, Tensor]) -> StateDict:
        """The inverse rename: our keys → the external layout (tests build external checkpoints with it)."""
        inverse = [(dst, src) for src, dst in self.renames]
        return {self._rewrite(key, inverse): value for key, value in state.items()}


# ------------------------------------------------------------------------------------------------ formats
Detect = Callable[[set[str]], bool]


@dataclass(frozen=True)
class CheckpointFormat:
    """One external checkpoint layout.

    Args:
        name: what users pass as ``format=``.
        detect: ``keys -> bool``: does a state dict with these keys (wrapper prefix already removed) have
            this layout? Detectors run in registration order; keep them specific.
        key_map: the renames and drops.
        scope: ``"backbone"`` when the layout only ever holds backbone weights (an ImageNet checkpoint):
            loading it into a segmentor needs ``partial=True``; ``"segmentor"`` for whole models.
        convert: optional tensor-level fix-up applied after renaming (reshapes, splits); ``revert`` undoes it
            for the inverse map.
        description: one line for error messages and docs.
        generic: a catch-all layout (any mmseg segmentor) that auto-detection tries only after every
            specific one, so that plugin formats registered later (e.g. SegFormer's) still win.
    """

    name: str
    detect: Detect
    key_map: KeyMap
    scope: str = "segmentor"
    convert: Callable[[StateDict], StateDict] | None = None
    revert: Callable[[StateDict], StateDict] | None = None
    description: str = ""
    generic: bool = False

    def to_ours(self, state: Mapping[str, Tensor]) -> tuple[StateDict, list[str]]:
        renamed, dropped = self.key_map.to_ours(state)
        if self.convert is not None:
            renamed = self.convert(renamed)
        return renamed, dropped

    def to_external(self, state: Mapping[str, Tensor]) -> StateDict:
        """Our state dict in this format's layout (only the keys the layout has, for backbone scopes)."""
        state = dict(state)
        if self.revert is not None:
            state = self.revert(state)
        if self.scope == "backbone":
            state = {k: v for k, v in state.items() if k.startswith("backbone.")}
        return self.key_map.to_external(state)


FORMATS: dict[str, CheckpointFormat] = {}
_plugins_loaded = False


def register_format(fmt: CheckpointFormat) -> CheckpointFormat:
    """Add a checkpoint layout (``name`` must be new). Returns it, so it can be kept in a module constant."""
    if fmt.name in FORMATS or fmt.name == "auto":
        raise ValueError(f"checkpoint format {fmt.name!r} registered twice")
    if fmt.scope not in ("backbone", "segmentor"):
        raise ValueError(f"checkpoint format {fmt.name!r}: scope must be 'backbone' or 'segmentor'")
    FORMATS[fmt.name] = fmt
    return fmt


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    for module in PLUGIN_MODULES:
        importlib.import_module(module)
    _plugins_loaded = True


def get_format(name: str) -> CheckpointFormat:
    """The registered format called ``name`` (a :class:`UserError` naming the valid ones otherwise)."""
    _load_plugins()
    if name not in FORMATS:
        raise UserError(
            f"unknown checkpoint format '{name}'", fix=f"choose auto or one of {', '.join(FORMATS)}"
        )
    return FORMATS[name]


def list_formats() -> list[str]:
    _load_plugins()
    return list(FORMATS)


def _has(keys: set[str], *required: str) -> bool:
    return all(k in keys for k in required)


def _has_prefix(keys: set[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


_BACKBONE_ONLY = KeyMap(renames=(("", "backbone."),), drop=("fc.",))

register_format(
    CheckpointFormat(
        name="adaptseg",
        # our own layout is recognised by overlap with the model's keys (in _detect), after every other format
        detect=lambda keys: False,
        key_map=KeyMap(),
        description="adaptseg's own parameter names",
    )
)
register_format(
    CheckpointFormat(
        name="mmseg-segmentor",
        detect=lambda keys: _has_prefix(keys, "backbone.") and _has_prefix(keys, "decode_head."),
        key_map=KeyMap(),
        description="mmseg EncoderDecoder state dict (backbone./decode_head./auxiliary_head.)",
        generic=True,
    )
)


def flip_input_channels(key: str) -> Callable[[StateDict], StateDict]:
    """A convert/revert pair (its own inverse) that swaps a first conv's BGR input channels to RGB.

    Caffe-lineage checkpoints (AdaptSegNet/UMMA, EnD) were trained on BGR images; our deploy contract
    feeds RGB, so the first conv's input channels are reversed on import (and back on export).
    """

    def flip(state: StateDict) -> StateDict:
        if key not in state:
            return state
        return {**state, key: state[key].flip(1)}

    return flip


_FLIP_DRN_STEM = flip_input_channels("backbone.layer0.0.weight")
_FLIP_RESNET_STEM = flip_input_channels("backbone.conv1.weight")

register_format(
    CheckpointFormat(
        name="end-deeplabv3plus",
        detect=lambda keys: _has_prefix(keys, "backbone.") and _has_prefix(keys, "aspp.aspp1."),
        key_map=KeyMap(renames=(("aspp.", "decode_head.aspp."), ("decoder.", "decode_head.decoder."))),
        convert=_FLIP_DRN_STEM,
        revert=_FLIP_DRN_STEM,
        description="EnD's DeepLabV3+ (jfzhang95 layout backbone./aspp./decoder., BGR input: stem flipped to RGB)",
    )
)
register_format(
    CheckpointFormat(
        name="adaptsegnet",
        detect=lambda keys: _has(keys, "conv1.weight") and _has_prefix(keys, "layer5.conv2d_list."),
        key_map=KeyMap(
            renames=(("layer5.conv2d_list.{i}.", "decode_head.aspp_modules.{i}.conv."), ("", "backbone."))
        ),
        convert=_FLIP_RESNET_STEM,
        revert=_FLIP_RESNET_STEM,
        description="AdaptSegNet/UMMA DeepLab-v2 (conv1..layer4 + layer5.conv2d_list, BGR input: conv1 flipped to RGB)",
    )
)
register_format(
    CheckpointFormat(
        name="mmseg-resnet-v1c",
        detect=lambda keys: _has(keys, "stem.0.weight", "layer1.0.conv1.weight"),
        key_map=_BACKBONE_ONLY,
        scope="backbone",
        description="open-mmlab resnet*_v1c ImageNet weights (deep stem)",
    )
)
register_format(
    CheckpointFormat(
        name="torchvision",
        detect=lambda keys: _has(keys, "conv1.weight", "bn1.weight", "layer1.0.conv1.weight"),
        key_map=_BACKBONE_ONLY,
        scope="backbone",
        description="torchvision ResNet ImageNet weights",
    )
)
register_format(
    CheckpointFormat(
        name="fyu-drn",
        detect=lambda keys: _has(keys, "layer0.0.weight", "layer3.0.conv1.weight"),
        key_map=_BACKBONE_ONLY,
        scope="backbone",
        description="fyu/drn ImageNet weights (layer0..layer8, fc)",
    )
)


# ------------------------------------------------------------------------------------------------ reading
def read_state_dict(path: str | Path, *, trusted: bool = False) -> StateDict:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict.

    ``.safetensors`` is read directly; ``.pth``/``.pt``/``.bin``/``.ckpt`` with ``torch.load(weights_only=True)``,
    which refuses pickled Python objects. Files that need them (old mmcv ``meta``) load only with
    ``trusted=True``. The state dict is taken from a ``state_dict``/``model_state_dict``/``model`` entry
    when the file is a training checkpoint, and ``module.``/``_orig_mod.`` prefixes are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            "checkpoint file not found", path=path, fix="check the path (weights are never downloaded)"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"not a readable safetensors file ({exc})", path=path) from None
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=not trusted)
        except pickle.UnpicklingError as exc:
            if trusted or "Unsupported global" not in str(exc):
                raise UserError("not a readable torch checkpoint (unpickling failed)", path=path) from None
            raise UserError(
                "the checkpoint holds pickled Python objects besides tensors",
                path=path,
                fix="if you trust its source, load it with trusted=True (recipe init: trusted: true)",
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise UserError(
                f"not a readable torch checkpoint ({str(exc).splitlines()[0]})", path=path
            ) from None
    state = _find_state_dict(raw)
    if state is None:
        raise UserError(
            "no state dict of tensors found in the checkpoint",
            path=path,
            fix=f"expected a mapping of names to tensors, or one under {'/'.join(STATE_DICT_KEYS)}",
        )
    for prefix in AUTO_STRIP:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _find_state_dict(raw: Any) -> StateDict | None:
    if not isinstance(raw, Mapping):
        return None
    tensors = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if tensors and len(tensors) == len(raw):
        return tensors
    for key in STATE_DICT_KEYS:
        found = _find_state_dict(raw.get(key))
        if found:
            return found
    return tensors or None


# ------------------------------------------------------------------------------------------------ loading
@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did, by parameter name."""

    path: str
    format: str
    prefix: str | None
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """external keys the format discards by design (an ImageNet classifier)"""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors from {self.path} ({self.format}"]
        parts[0] += f", prefix '{self.prefix}')" if self.prefix else ")"
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                parts.append(f"{len(names)} {label}: {_first(names)}")
        if self.mismatched:
            shown = ", ".join(f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:3])
            parts.append(f"{len(self.mismatched)} with another shape: {shown}")
        if self.dropped:
            parts.append(f"{len(self.dropped)} dropped by the format: {_first(self.dropped)}")
        return "; ".join(parts)


def _first(names: list[str], n: int = 4) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _wrapper_prefixes(keys: Iterable[str]) -> list[str]:
    """Wrapper prefixes such as ``model.``/``ema_model.``: first tokens that precede a ``backbone.`` key."""
    found = {k.split(".", 1)[0] + "." for k in keys if k.count(".") >= 2 and k.split(".", 2)[1] == "backbone"}
    return sorted(found)


def _select_prefix(
    state: StateDict, prefix: str | None, path: Path, model_keys: set[str]
) -> tuple[StateDict, str | None]:
    if prefix:
        prefix = prefix if prefix.endswith(".") else prefix + "."
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not picked:
            have = _wrapper_prefixes(state) or sorted({k.split(".", 1)[0] + "." for k in state})[:6]
            raise UserError(
                f"no key starts with '{prefix}'", path=path, fix=f"prefixes here: {', '.join(have)}"
            )
        return picked, prefix
    if set(state) & model_keys or _detect(set(state), model_keys) is not None:
        return state, None
    wrappers = _wrapper_prefixes(state)
    if len(wrappers) == 1:
        return _select_prefix(state, wrappers[0], path, model_keys)
    if len(wrappers) > 1:
        raise UserError(
            f"the checkpoint holds several models ({', '.join(wrappers)})",
            path=path,
            fix=f"pick one with prefix= (recipe init: prefix: {wrappers[0]}), e.g. prefix='{wrappers[0]}'",
        )
    return state, None


def _detect(keys: set[str], model_keys: set[str]) -> CheckpointFormat | None:
    """Our own layout when every key is the model's; else the first specific format whose detector accepts
    ``keys``, then the first generic one; else our own layout again if most keys are the model's."""
    if keys and keys <= model_keys:
        return FORMATS["adaptseg"]
    for fmt in sorted(FORMATS.values(), key=lambda f: f.generic):  # stable: registration order within each
        if fmt.detect(keys):
            return fmt
    if keys and len(keys & model_keys) >= 0.5 * len(keys):
        return FORMATS["adaptseg"]
    return None


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    format: str = "auto",
    strict: bool = True,
    partial: bool = False,
    prefix: str | None = None,
    *,
    trusted: bool = False,
) -> LoadReport:
    """Load a checkpoint file of any registered layout into ``model`` (a :class:`Segmentor`).

    Args:
        format: a registered format name, or ``"auto"`` to detect it from the keys.
        strict: every checkpoint tensor must land in the model with the same shape, and (unless
            ``partial``) every model tensor must be present. Violations raise a :class:`UserError` naming
            the first offending keys; nothing is loaded then.
        partial: allow model tensors the checkpoint lacks (backbone-only ImageNet weights into a segmentor).
        prefix: the wrapper to take the model from when a checkpoint holds several (DDB/ATP/DAFormer
            ``model.``, ``ema_model.``, ``stu_model.``…); picked automatically when there is only one.
        trusted: allow pickled Python objects in ``.pth`` files (only for files from a trusted source).

    BatchNorm ``num_batches_tracked`` counters absent from older checkpoints are never reported missing.
    """
    _load_plugins()
    path = Path(path)
    model_state = model.state_dict()
    model_keys = set(model_state)
    state = read_state_dict(path, trusted=trusted)
    state, used_prefix = _select_prefix(state, prefix, path, model_keys)

    if format == "auto":
        fmt = _detect(set(state), model_keys)
        if fmt is None:
            raise UserError(
                f"cannot tell the checkpoint layout (first keys: {_first(sorted(state), 3)})",
                path=path,
                fix=f"pass format= one of {', '.join(FORMATS)}",
            )
    else:
        fmt = get_format(format)
    mapped, dropped = fmt.to_ours(state)

    report = LoadReport(path=str(path), format=fmt.name, prefix=used_prefix, dropped=dropped)
    to_load: StateDict = {}
    for key, value in mapped.items():
        if key not in model_state:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(model_state[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(model_state[key].shape)))
        else:
            to_load[key] = value
    report.loaded = sorted(to_load)
    report.missing = [k for k in model_state if k not in mapped and not k.endswith("num_batches_tracked")]

    if strict:
        _raise_if_strict_violation(report, fmt, partial, path)
    model.load_state_dict(to_load, strict=False)
    return report


def _raise_if_strict_violation(report: LoadReport, fmt: CheckpointFormat, partial: bool, path: Path) -> None:
    if report.unexpected:
        raise UserError(
            f"{len(report.unexpected)} checkpoint tensors have no place in the model ({fmt.name} layout): "
            f"{_first(report.unexpected)}",
            path=path,
            fix="check the preset matches the checkpoint, pick another prefix=/format=, or load with strict=False",
        )
    if report.mismatched:
        key, got, want = report.mismatched[0]
        raise UserError(
            f"{len(report.mismatched)} tensors differ in shape, e.g. {key} {got} vs model {want}",
            path=path,
            fix="check num_classes and the preset; strict=False skips them (e.g. a new classifier)",
        )
    if report.missing and not partial:
        what = "a backbone-only checkpoint" if fmt.scope == "backbone" else "the checkpoint"
        raise UserError(
            f"{len(report.missing)} model tensors are missing from {what}: {_first(report.missing)}",
            path=path,
            fix="load with partial=True (recipe init: partial: true; --partial) to keep the rest as initialised",
        )
