"""Declarative recipes: YAML with ``extends:``, ``--set`` overrides, validated by pydantic.

* ``extends: ../base.yaml`` (or a list) names parents relative to the file; the child's mappings are
  merged into the parents' recursively, the child winning; lists and scalars are replaced.
* ``--set a.b=c`` overrides any key after merging; the value is parsed as YAML (``3``, ``true``,
  ``[1, 2]``, ``null``).
* Validation forbids unknown keys everywhere; the error is one line that names the file, the key and
  the nearest valid key.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from adaptseg.errors import UserError

M = TypeVar("M", bound=BaseModel)


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``6e-5`` as a float (YAML 1.1 needs ``6.0e-5``; every recipe writes the former)."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


class StrictModel(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge; everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a YAML recipe and resolve its ``extends:`` chain (paths relative to the file)."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise UserError(f"circular 'extends' chain: {chain}", path=path)
    if not path.is_file():
        raise UserError(
            "recipe file not found",
            path=path,
            fix="check the path (recipes live in train/, models/, export/, infer/)",
        )
    try:
        data = _yaml_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"invalid YAML{where}: {getattr(exc, 'problem', exc)}", path=path) from None
    if not isinstance(data, dict):
        raise UserError("a recipe must be a mapping of keys to values", path=path)
    parents = data.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    merged: dict[str, Any] = {}
    for parent in parents:
        parent_path = path.parent / parent
        if not parent_path.is_file():
            raise UserError(
                f"'extends: {parent}' names a file that does not exist ({parent_path.resolve()})",
                path=path,
                fix="correct the path in 'extends:' (it is relative to this recipe's folder)",
            )
        merged = deep_merge(merged, load_yaml(parent_path, (*_seen, path)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``a.b.c=value`` override into its key path and YAML-typed value."""
    if "=" not in text:
        raise UserError(f"override {text!r} is not KEY=VALUE", fix="write e.g. --set optim.lr=1e-4")
    key, raw = text.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise UserError(f"override {text!r} has an empty key", fix="write e.g. --set optim.lr=1e-4")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return keys, value


def _unshared_copy(value: Any) -> Any:
    """A deep copy of plain YAML data in which no two places share an object.

    ``copy.deepcopy`` keeps YAML anchors' sharing (``options: *switches`` in two stages is one dict), so an
    override of one stage's options would change the other's too.
    """
    if isinstance(value, dict):
        return {k: _unshared_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared_copy(v) for v in value]
    return copy.deepcopy(value)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a merged recipe dict (returns a new dict).

    A key that is a number indexes a list (``stages.0.iters=500``); an index outside the list is an error.
    """
    out = _unshared_copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = out
        for depth, k in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not (k.isdigit() and int(k) < len(node)):
                    where = ".".join(keys[:depth]) or "the recipe"
                    raise UserError(
                        f"--set {text}: '{k}' is not an index of {where} (a list of {len(node)})",
                        fix=f"use an index from 0 to {len(node) - 1}",
                    )
                k = int(k)
            elif not last and not isinstance(node.get(k), dict | list):
                node[k] = {}
            if last:
                node[k] = value
            else:
                node = node[k]
    return out


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at ``loc`` (the location of the offending key) inside ``model``'s schema."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            # a discriminated union member name or a dict key: look one level deeper next time
            continue
        current = _model_of(fields[part].annotation)
    fields = getattr(current, "model_fields", None) or {}
    return list(fields)


def _model_of(annotation: Any) -> Any:
    """The BaseModel class inside an annotation (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def override_at(overrides: Iterable[str], loc: Sequence[Any]) -> str | None:
    """The last ``--set`` override that wrote ``loc`` or a key above or below it (None: the file did)."""
    where = [str(part) for part in loc]
    for text in reversed(list(overrides)):
        keys, _ = parse_override(text)
        n = min(len(keys), len(where))
        if keys[:n] == where[:n]:
            return text
    return None


def validate(
    model: type[M],
    data: Mapping[str, Any],
    *,
    source: str | Path | None = None,
    overrides: Iterable[str] = (),
    at: Sequence[Any] = (),
) -> M:
    """Validate ``data`` against ``model``; turn the first error into a one-line :class:`UserError`.

    The error names ``source`` (the file), or the ``--set`` override among ``overrides`` that wrote the
    offending key; ``at`` is where ``data`` sits inside the overridden recipe (e.g. a stage's options).
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "<root>"
        culprit = override_at(overrides, (*at, *loc))
        if culprit is not None:
            source = f"--set {culprit} (overriding {source})" if source is not None else f"--set {culprit}"
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = (
                f"did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?"
                if close
                else (f"valid keys here: {', '.join(valid)}" if valid else None)
            )
            raise UserError(f"unknown key '{dotted}'", path=source, fix=hint) from None
        if err["type"] == "missing":
            raise UserError(f"missing required key '{dotted}'", path=source) from None
        raise UserError(f"bad value for '{dotted}': {err['msg']}", path=source) from None


def load_recipe(model: type[M], path: str | Path, overrides: Iterable[str] = ()) -> M:
    """Load, merge, override and validate a recipe file in one call."""
    data = apply_overrides(load_yaml(path), overrides)
    return validate(model, data, source=path, overrides=overrides)


def dump_recipe(recipe: BaseModel) -> str:
    """The resolved recipe as YAML, for writing next to a run's outputs."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
