"""data.split."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from handseg.core.constants import SUBSETS
from handseg.core.errors import HandsegError
from handseg.core.imaging import list_images, natural_key, short_list
from handseg.core.io import atomic_write_json
from handseg.core.mask_sources import mask_exists
from handseg.core.rundir import RunDir


def _split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of n * fractions so the sizes sum to n (ties: in order)."""
    raw = [n * f for f in fractions]
    sizes = [int(np.floor(r + 1e-9)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - sizes[i]), i))
    for i in order[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def make_split(
    pairs: Sequence[tuple[Path, Path]],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> dict[str, list[tuple[Path, Path]]]:
    """Seeded random split into ``{"train", "val", "test"}`` (each in natural image order).

    ``fractions`` (train, val, test) must be >= 0 and sum to 1; sizes are rounded so that
    they sum to ``len(pairs)`` (30 at 0.6/0.2/0.2 -> 18/6/6). The same pairs and seed give
    the same split. A subset with a positive fraction that would be empty raises
    :class:`HandsegError` saying how many images are needed.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise HandsegError(
            f"split fractions {fractions} must be three non-negative numbers (train, val, "
            "test) that sum to 1, e.g. 0.6 0.2 0.2"
        )
    pairs = [(Path(i), Path(m)) for i, m in pairs]
    n = len(pairs)
    sizes = _split_sizes(n, fractions)
    if any(s == 0 and f > 0 for s, f in zip(sizes, fractions)):
        need = next(
            k
            for k in range(1, 10_000)
            if all(s > 0 or f == 0 for s, f in zip(_split_sizes(k, fractions), fractions))
        )
        empty = [name for name, s, f in zip(SUBSETS, sizes, fractions) if s == 0 and f > 0]
        raise HandsegError(
            f"{n} image pair(s) are too few for the split {fractions}: the {'/'.join(empty)} "
            f"set would be empty; at least {need} pairs are needed (add images or change the "
            "fractions)"
        )
    perm = np.random.default_rng(seed).permutation(n)
    out: dict[str, list[tuple[Path, Path]]] = {}
    start = 0
    for name, size in zip(SUBSETS, sizes):
        chosen = [pairs[j] for j in perm[start : start + size]]
        out[name] = sorted(chosen, key=lambda p: natural_key(p[0].name))
        start += size
    return out


def _common_parent(paths: Iterable[Path]) -> Path | None:
    parents = {Path(p).parent for p in paths}
    return parents.pop() if len(parents) == 1 else None


def save_split(
    split: dict[str, Sequence[tuple[Path, Path]]],
    path: str | Path,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    seed: int | None = None,
    fractions: Sequence[float] | None = None,
) -> None:
    """Write ``split.json``: the folders (absolute), seed, fractions and per subset a list
    of ``{"image": name, "mask": name}``. Names are relative to the folders, which default
    to the pairs' common parent folders (absolute paths are stored when there is none)."""
    every = [p for name in SUBSETS for p in split.get(name, [])]
    img_dir = Path(images_dir) if images_dir else _common_parent(i for i, _ in every)
    msk_dir = Path(masks_dir) if masks_dir else _common_parent(m for _, m in every)

    def absolute(p: Path) -> Path:  # absolute, but symlinks kept (unlike resolve())
        return Path(os.path.abspath(p))

    def rel(p: Path, base: Path | None) -> str:
        if base is not None:
            try:
                return absolute(p).relative_to(absolute(base)).as_posix()
            except ValueError:
                pass
        return str(absolute(p))

    doc = {
        "images_dir": str(absolute(img_dir)) if img_dir else None,
        "masks_dir": str(absolute(msk_dir)) if msk_dir else None,
        "seed": seed,
        "fractions": list(fractions) if fractions is not None else None,
    }
    for name in SUBSETS:
        doc[name] = [
            {"image": rel(i, img_dir), "mask": rel(m, msk_dir)} for i, m in split.get(name, [])
        ]

    atomic_write_json(path, doc)  # a run killed mid-write must not leave half a split.json


def _read_entries(path: Path) -> tuple[dict, dict[str, list]]:
    """The parsed ``split.json`` and its entries per subset (a clear error when malformed)."""
    if not path.is_file():
        raise HandsegError(f"split file {path} does not exist; check the path")
    try:
        doc = json.loads(path.read_text())
        entries = {name: list(doc.get(name, [])) for name in SUBSETS}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise HandsegError(f"split file {path} is not a valid split.json ({exc})") from None
    return doc, entries


def split_sizes(path: str | Path) -> dict[str, int]:
    """How many pairs each subset of a ``split.json`` lists (``{"train": 18, "val": 6,
    "test": 6}``), without checking that the files exist: a run whose data moved still
    says how it was split."""
    _, entries = _read_entries(Path(path))
    return {name: len(items) for name, items in entries.items()}


def load_split(
    path: str | Path,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
) -> dict[str, list[tuple[Path, Path]]]:
    """Read a ``split.json`` written by :func:`save_split`.

    ``images_dir``/``masks_dir`` override the folders stored in the file (e.g. after moving
    the data). Raises :class:`HandsegError` when the file is missing or malformed or when
    listed files do not exist.
    """
    path = Path(path)
    doc, entries = _read_entries(path)
    img_dir = images_dir if images_dir is not None else doc.get("images_dir")
    msk_dir = masks_dir if masks_dir is not None else doc.get("masks_dir")
    out: dict[str, list[tuple[Path, Path]]] = {}
    missing: list[Path] = []
    for name, items in entries.items():
        subset = []
        for item in items:
            try:
                i, m = Path(item["image"]), Path(item["mask"])
            except (KeyError, TypeError):
                raise HandsegError(
                    f"split file {path}: each {name} entry needs 'image' and 'mask'"
                ) from None
            i = i if i.is_absolute() or img_dir is None else Path(img_dir) / i
            m = m if m.is_absolute() or msk_dir is None else Path(msk_dir) / m
            missing += [i] if not i.is_file() else []
            missing += [m] if not mask_exists(m) else []  # a file or an annotation in one
            subset.append((i, m))
        out[name] = subset
    if missing:
        raise HandsegError(
            f"split file {path} lists {len(missing)} file(s) that do not exist: "
            f"{short_list([str(p) for p in missing], 3)}; pass the images and masks folders"
        )
    return out


def training_images(source: Mapping[str, Any] | Any) -> list[Path]:
    """The training photos of a model: the "train" entries of its run's ``split.json``
    (``train_config["split"]``, else ``out``/split.json), else its ``images`` folder.

    ``source`` is a model card (anything with a ``train_config``) or the ``train_config``
    mapping itself, so ``load_model(path, calibration=training_images)`` calibrates int8
    on the model's own training photos. Only files that still exist; an empty list when
    the options name none (e.g. a model trained on another machine).
    """
    train_config = getattr(source, "train_config", source)
    split = None
    if train_config.get("split"):
        split = Path(str(train_config["split"]))
    elif train_config.get("out"):
        split = RunDir(str(train_config["out"])).split
    try:
        if split is not None and split.is_file():
            doc = json.loads(split.read_text())
            base = Path(doc.get("images_dir") or "")
            paths = [Path(e["image"]) for e in doc.get("train", [])]
            return [p for p in (p if p.is_absolute() else base / p for p in paths) if p.is_file()]
        if train_config.get("images") and Path(str(train_config["images"])).is_dir():
            return list_images(train_config["images"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError, HandsegError):
        return []  # stale or foreign paths: no training images
    return []
