"""Reading a training run's folder for the report: every piece it holds, and for every
piece it lacks, what it is and which command adds it.

A run folder that lacks pieces (no ``test/`` because of ``--no-test``, no ``model.pt``
because training was interrupted) still gets a report; :class:`RunData` carries ``None``
for each missing piece and a line in ``missing``.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handseg.core.errors import HandsegError
from handseg.core.rundir import RunDir
from handseg.data.split import load_split, split_sizes
from handseg.eval.evaluate import read_metrics
from handseg.model.card import ModelCard
from handseg.model.checkpoint import read_model_file

__all__ = ["History", "RunData", "number", "read_run", "summarize_history"]

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """Everything the report reads from a run folder; ``None`` where a piece is missing."""

    dir: RunDir
    config: dict[str, Any] | None = None
    card: ModelCard | None = None
    history: list[dict[str, str]] | None = None  # metrics.csv rows
    split_sizes: dict[str, int] | None = None  # pairs per subset
    test_pairs: list[tuple[Path, Path]] = field(default_factory=list)  # (image, mask)
    test: dict[str, Any] | None = None  # test/metrics.json
    missing: list[tuple[str, str]] = field(default_factory=list)  # (what, how to add it)


def number(value: Any) -> float:
    """``value`` as a float; NaN when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_run(run_dir: RunDir) -> RunData:
    """Read every piece of ``run_dir`` the report shows (nothing is written)."""
    run = RunData(run_dir)
    _read_config(run)
    _read_model(run)
    _read_history(run)
    _read_split(run)
    _read_test(run)
    return run


def _report_command(run: RunData) -> str:
    return f"handseg report {run.dir}"


def _read_config(run: RunData) -> None:
    if run.dir.config.is_file():
        try:
            run.config = run.dir.read_config() or None
        except HandsegError as exc:
            log.warning("%s", exc)
    if run.config is None:
        run.missing.append(
            ("config.yaml (the training options)", "it is written when training starts")
        )


def _read_model(run: RunData) -> None:
    if not run.dir.model.is_file():
        run.missing.append(
            (
                "model.pt (the trained network)",
                f"training did not finish; continue it with `handseg train --resume {run.dir}`, "
                f"then run `{_report_command(run)}` again",
            )
        )
        return
    try:
        _, run.card = read_model_file(run.dir.model)
    except HandsegError as exc:
        run.missing.append(("a readable model.pt", str(exc)))


def _read_history(run: RunData) -> None:
    if not run.dir.history.is_file():
        run.missing.append(
            ("metrics.csv (the training history)", "it is written after every epoch")
        )
        return
    with open(run.dir.history, newline="", encoding="utf-8") as f:
        run.history = list(csv.DictReader(f))


def _read_split(run: RunData) -> None:
    if not run.dir.split.is_file():
        run.missing.append(
            (
                "split.json (which images went to train / val / test)",
                "it is written when training starts",
            )
        )
        return
    try:
        # the sizes first: they stay known when the images have moved since training
        run.split_sizes = split_sizes(run.dir.split)
        run.test_pairs = load_split(run.dir.split)["test"]
    except HandsegError as exc:
        run.missing.append(("the test images listed in split.json", str(exc)))


def _read_test(run: RunData) -> None:
    path = run.dir.test_metrics
    if not path.is_file():
        run.missing.append(
            (
                "test/metrics.json (the test-split evaluation)",
                "the run was trained with --no-test or stopped before the end; add it with "
                f"`handseg evaluate --run {run.dir} --split test --out {run.dir.test}`, then run "
                f"`{_report_command(run)}` again",
            )
        )
        return
    try:
        run.test = read_metrics(path)
    except (OSError, ValueError) as exc:
        run.missing.append((str(path), f"cannot read it: {exc}"))


@dataclass(frozen=True)
class History:
    """What ``metrics.csv`` says about the training: its length, and the best epoch."""

    epochs: int | None = None
    iterations: int | None = None
    time_s: float = math.nan
    best_epoch: int | None = None  # lowest validation loss; None without validation rows
    best_val_loss: float = math.nan


def summarize_history(rows: list[dict[str, str]] | None) -> History:
    """Epochs, iterations, time and the best validation epoch from ``metrics.csv`` rows."""
    if not rows:
        return History()
    epochs = [number(r.get("epoch")) for r in rows]
    history = History(
        epochs=int(max((e for e in epochs if not math.isnan(e)), default=0)),
        iterations=int(max((number(r.get("step")) for r in rows), default=0) or 0),
        time_s=max((number(r.get("time_s")) for r in rows), default=math.nan),
    )
    val = [r for r in rows if str(r.get("val_loss", "")).strip()]
    if not val:
        return history
    losses = [number(r["val_loss"]) for r in val]
    best = min(range(len(val)), key=lambda i: (math.isnan(losses[i]), losses[i]))
    return History(
        history.epochs,
        history.iterations,
        history.time_s,
        best_epoch=int(number(val[best].get("epoch"))),
        best_val_loss=losses[best],
    )
