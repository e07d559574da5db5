"""Configs are frozen dataclasses; this module is the one mapping between them, the command line and JSON.

* :func:`add_arguments` turns a config class into argparse flags: one ``--field-name`` per
  field (nested dataclass fields are flattened), the type from the annotation, the help
  text from the class docstring's ``Attributes:`` section, and the default shown.
* :func:`from_args` builds the config back from the parsed namespace.
* :func:`to_dict` / :func:`from_dict` give and take plain JSON data (Enums by value,
  tuples as lists), which is what checkpoints and ``metrics.json`` store.

Supported field types: ``bool`` (``--x`` / ``--no-x``), ``int``, ``float``, ``str``,
``Path``, an ``Enum`` (its values are the choices), ``X | None`` of those, ``tuple[X, ...]``
(``nargs``), and a nested config dataclass. A field's ``metadata`` may hold ``"aliases"``
(older flag names that keep working), ``"help"`` (overrides the docstring) and
``"cli": False`` (not a flag).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

__all__ = ["add_arguments", "from_args", "to_dict", "from_dict", "field_help", "shared_fields"]

C = TypeVar("C")


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """Each field's description from a Google-style ``Attributes:`` section of ``cls``'s docstring."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = klass.__doc__ or ""
        match = re.search(r"^\s*Attributes:\s*$(.*)", doc, re.MULTILINE | re.DOTALL)
        if not match:
            continue
        current = None
        for line in match.group(1).splitlines():
            entry = re.match(r"^\s{4,8}(\w+)(?: \([^)]*\))?:\s*(.*)$", line)
            if entry and not line.startswith(" " * 12):
                current = entry.group(1)
                found[current] = entry.group(2).strip()
            elif current and line.strip():
                found[current] += " " + line.strip()
            elif not line.strip() and current and found.get(current):
                continue
    return found


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Evaluating the annotations is the slow part of building a parser: once per class.
    return typing.get_type_hints(cls)


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _is_config(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _enum_type(kind: type[enum.Enum], optional: bool = False):
    names = [str(m.value) for m in kind] + (["none"] if optional else [])

    def parse(text: str) -> enum.Enum | None:
        for member in kind:
            if text == str(member.value) or text.lower() == member.name.lower():
                return member
        if optional and text.lower() == "none":
            return None
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(names)}")

    parse.__name__ = kind.__name__
    return parse


def _number_or_none(kind: type):
    """``int`` or ``float`` of the text, or None for ``none``: the flag of an ``X | None`` field."""

    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _shown(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return " ".join(_shown(v) for v in value) or "none"
    return "none" if value is None else str(value)


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    defaults: Any | None = None,
    exclude: typing.Collection[str] = (),
    _prefix_help: dict[str, str] | None = None,
) -> None:
    """Adds one flag per field of the config dataclass ``cls`` (nested configs flattened).

    Args:
        parser: where the flags go.
        cls: the config class.
        defaults: an instance whose values are the flags' defaults (``cls()`` when None), so
            that a task can give a shared config (the engine's) its own defaults.
        exclude: field names that get no flag.
    """
    defaults = cls() if defaults is None else defaults
    described = field_help(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude or not field.metadata.get("cli", True) or not field.init:
            continue
        annotation, optional = _unwrap_optional(_hints(cls)[field.name])
        default = getattr(defaults, field.name)
        if _is_config(annotation):
            add_arguments(parser, annotation, defaults=default, exclude=exclude)
            continue
        text = field.metadata.get("help") or described.get(field.name) or field.name.replace("_", " ")
        text = text.rstrip(".").replace("%", "%%")
        flags = [_flag(field.name), *field.metadata.get("aliases", ())]
        kwargs: dict[str, Any] = {"dest": field.name, "default": default}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            parser.add_argument(*flags, help=f"{text} (default: {'on' if default else 'off'})", **kwargs)
            continue
        origin = typing.get_origin(annotation)
        if origin in (tuple, list):
            element = typing.get_args(annotation)[0]
            kwargs["nargs"] = "+" if not optional else "*"
            kwargs["type"] = (
                _enum_type(element) if isinstance(element, type) and issubclass(element, enum.Enum) else element
            )
            kwargs["metavar"] = field.name.upper().rstrip("S") or None
        elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            kwargs["type"] = _enum_type(annotation, optional)
            kwargs["metavar"] = "{" + ",".join([str(m.value) for m in annotation] + ["none"] * optional) + "}"
        elif annotation in (int, float) and optional:
            kwargs["type"] = _number_or_none(annotation)
        elif annotation in (int, float, str, Path):
            kwargs["type"] = annotation
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no command-line form for {annotation!r}")
        parser.add_argument(*flags, help=f"{text} (default: {_shown(default)})", **kwargs)


def from_args(cls: type[C], args: argparse.Namespace, *, defaults: Any | None = None, **overrides: Any) -> C:
    """Builds ``cls`` from a namespace filled by :func:`add_arguments`.

    Fields without a flag (excluded, or ``"cli": False``) take their value from ``defaults``
    (the instance given to :func:`add_arguments`), else the class default; ``overrides`` win.
    """
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        annotation, _ = _unwrap_optional(_hints(cls)[field.name])
        if field.name in overrides:
            values[field.name] = overrides[field.name]
        elif _is_config(annotation):
            nested = getattr(defaults, field.name, None) if defaults is not None else None
            values[field.name] = from_args(annotation, args, defaults=nested)
        elif not field.metadata.get("cli", True) or not hasattr(args, field.name):
            if defaults is not None and hasattr(defaults, field.name):
                values[field.name] = getattr(defaults, field.name)
        elif hasattr(args, field.name):
            value = getattr(args, field.name)
            if typing.get_origin(annotation) in (tuple, list) and value is not None:
                value = tuple(value)
            values[field.name] = value
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON data of a config dataclass: Enums by value, tuples as lists, Paths as strings."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def _revive(annotation: Any, value: Any) -> Any:
    annotation, _ = _unwrap_optional(annotation)
    if value is None:
        return None
    if _is_config(annotation):
        return from_dict(annotation, value)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation(value)
    if annotation is Path:
        return Path(value)
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        args = typing.get_args(annotation)
        element = args[0] if args else Any
        items = tuple(_revive(element, v) for v in value)
        return items if origin is tuple else list(items)
    return value


def from_dict(cls: type[C], data: typing.Mapping[str, Any]) -> C:
    """Rebuilds ``cls`` from :func:`to_dict` output; an unknown key is an error that names it."""
    names = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    hints = _hints(cls)
    return cls(**{key: _revive(hints[key], value) for key, value in data.items()})


def shared_fields(target: type[C], source: Any, **given: Any) -> C:
    """``target`` built from the fields of ``source`` that it shares by name, and ``given``.

    A task's config carries its model's sizes as its own flags (``--hidden-size``); this
    builds the model's config from them without listing each field a second time. A shared
    name must mean the same thing in both; ``given`` overrides where it does not.
    """
    names = [f.name for f in dataclasses.fields(target) if f.init and f.name not in given]
    return target(**{name: getattr(source, name) for name in names if hasattr(source, name)}, **given)
