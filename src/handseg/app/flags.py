"""Command-line flags generated from the fields of :class:`TrainConfig`.

Each training option is declared once, on its field of :class:`TrainConfig` (the default;
help, choices and spelling in the field's metadata); ``handseg train`` gets one flag per field from
:func:`add_config_options`, and every command that runs a network gets the same ``--device``
from :func:`add_device_option`. Every command that reads photos, masks or annotation files
gets ``--max-megapixels`` (:func:`add_pixel_limit_option`, applied by :func:`pixel_limit`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Iterator
from typing import Any

from handseg.core.config import TrainConfig
from handseg.core.constants import MAX_MEGAPIXELS, MAX_MEGAPIXELS_ENV
from handseg.core.device import INFERENCE_PRECISIONS, RUNTIMES
from handseg.core.errors import HandsegError
from handseg.data.split import training_images

__all__ = [
    "OPTION_FIELDS",
    "add_config_options",
    "add_device_option",
    "add_pixel_limit_option",
    "add_runtime_options",
    "config_options",
    "pixel_limit",
    "runtime_kwargs",
]

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


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference speed (see handseg.runtime)")
    g.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="PyTorch or onnxruntime (default auto: the measured fastest)")  # fmt: skip
    g.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="auto",
                   help="bf16 needs a CPU with avx512_bf16/AMX, int8 runs on onnxruntime; "
                   "unsupported choices fall back to fp32 with a warning (default auto)")  # fmt: skip
    g.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the network (default: the library's choice)")  # fmt: skip
    g.add_argument("--scale", type=float, default=1.0, metavar="F",
                   help="run the network at F x the model's input size (e.g. 0.5: about 4x "
                   "faster, coarser edges; default 1)")  # fmt: skip


def runtime_kwargs(args: argparse.Namespace) -> dict:
    return {
        "runtime": args.runtime,
        "precision": args.precision,
        "threads": args.threads,
        "scale": args.scale,
        "calibration": training_images,  # int8 calibrates on the model's training photos
    }


def add_pixel_limit_option(p: argparse.ArgumentParser) -> None:
    """``--max-megapixels``: the pixel budget of every image, mask and annotation read."""
    p.add_argument("--max-megapixels", type=float, metavar="MP",
                   help="refuse photos, masks and annotations whose declared size is above MP "
                   "megapixels, before decoding them (default "
                   f"${MAX_MEGAPIXELS_ENV}, else {MAX_MEGAPIXELS:g})")  # fmt: skip


@contextlib.contextmanager
def pixel_limit(args: argparse.Namespace) -> Iterator[None]:
    """Run one command under its ``--max-megapixels`` (when given): the value goes into
    ``$HANDSEG_MAX_MEGAPIXELS``, where every reader and the processes the command starts
    (DataLoader workers) read it, and the old value comes back afterwards."""
    mp = getattr(args, "max_megapixels", None)
    if mp is None:
        yield
        return
    if not (math.isfinite(mp) and mp > 0):
        raise HandsegError(f"--max-megapixels {mp:g} must be a positive number of megapixels")
    old = os.environ.get(MAX_MEGAPIXELS_ENV)
    os.environ[MAX_MEGAPIXELS_ENV] = repr(float(mp))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(MAX_MEGAPIXELS_ENV, None)
        else:
            os.environ[MAX_MEGAPIXELS_ENV] = old
