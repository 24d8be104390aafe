"""Command-line flags generated from the fields of :class:`TrainConfig`.

Each training option is declared once, on its field of :class:`TrainConfig` (the default;
help, choices and spelling in the field's metadata); ``handseg train`` gets one flag per field from
:func:`add_config_options`, and every command that runs a network gets the same ``--device``
from :func:`add_device_option`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from typing import Any

from handseg.core.config import TrainConfig

__all__ = ["OPTION_FIELDS", "add_config_options", "add_device_option", "config_options"]

OPTION_FIELDS = tuple(f for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli", True))
"""The training options that have a flag (``handseg train``); the rest are config-file only."""


def add_config_options(p: argparse.ArgumentParser) -> None:
    """One flag per field of :data:`OPTION_FIELDS`, in --help sections by ``group``.

    Every default is None, so that a flag not given leaves the option to the preset and
    the config file."""
    groups: dict[str | None, list[dataclasses.Field]] = {}
    for f in OPTION_FIELDS:
        groups.setdefault(f.metadata.get("group"), []).append(f)
    for title, fields in groups.items():
        target = p if title is None else p.add_argument_group(title)
        for f in fields:
            _add_option(target, f, default=None)


def _add_option(p: argparse._ActionsContainer, f: dataclasses.Field, default: Any) -> None:
    """The flag of one :class:`TrainConfig` field, from its type and ``metadata``."""
    meta = f.metadata
    names = [meta.get("flag", "--" + f.name.replace("_", "-")), *meta.get("aliases", ())]
    kw: dict[str, Any] = {"dest": f.name, "default": default, "help": _option_help(f) or None}
    value_type = _field_types()[f.name]
    if value_type is bool:
        kw["action"] = meta.get("action", argparse.BooleanOptionalAction)
    else:
        item, nargs = _item_type(value_type)
        kw["type"] = item
        if nargs is not None:
            kw["nargs"] = nargs
        elif "choices" in meta:
            kw["choices"] = list(meta["choices"])
        if "metavar" in meta:
            kw["metavar"] = meta["metavar"]
    p.add_argument(*names, **kw)


@functools.cache
def _field_types() -> dict[str, Any]:
    """Field name -> its type, with ``X | None`` read as ``X``."""
    hints = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        if isinstance(hint, types.UnionType):
            (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        hints[name] = hint
    return hints


def _item_type(hint: Any) -> tuple[type, int | str | None]:
    """``tuple[int, int]`` -> (int, 2); ``tuple[str, ...]`` -> (str, "+"); ``float`` ->
    (float, None)."""
    if typing.get_origin(hint) is not tuple:
        return hint, None
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return args[0], "+"
    return args[0], len(args)


def _option_help(f: dataclasses.Field) -> str:
    """The field's help with ``{default}`` filled in (argparse's ``%`` escaped)."""
    return f.metadata.get("help", "").replace("{default}", _shown(f.default)).replace("%", "%%")


def _shown(value: Any) -> str:
    """A default as the command line spells it: ``(720, 960)`` -> ``720 960``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


_DEVICE = next(f for f in OPTION_FIELDS if f.name == "device")


def add_device_option(p: argparse.ArgumentParser) -> None:
    """``--device`` of every command that runs a network: TrainConfig's, default auto."""
    _add_option(p, _DEVICE, default=_DEVICE.default)


def config_options(args: argparse.Namespace) -> dict[str, Any]:
    """The training options parsed by :func:`add_config_options` (None: not given)."""
    return {f.name: getattr(args, f.name) for f in OPTION_FIELDS}
