"""The run folder: one type that knows every file a training run writes.

Layout (``handseg train --out RUN``)::

    config.yaml            resolved options (defaults < preset < --config < flags)
    split.json             which files went to train / val / test
    checkpoints/last.ckpt  the last epoch, for --resume
    checkpoints/best.ckpt  the best validation loss so far
    metrics.csv            training loss/accuracy per iteration, validation per epoch
    training-progress.png  MATLAB-style training-progress plot
    model.pt               self-describing best-validation network (weights_only loadable)
    MODEL_CARD.md          what was trained, on what, and how well
    test/                  metrics.json, per-image.csv, confusion.png on the test split
    report.html            written by ``handseg report RUN``

Every stage names these files through :class:`RunDir`, never by string, so the layout has
one home.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from handseg.core.errors import HandsegError

__all__ = ["RunDir"]


@dataclass(frozen=True)
class RunDir:
    """A training run's folder. Paths only: nothing is created or read on construction."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    # --- the files ---------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def split(self) -> Path:
        return self.path / "split.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def history(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def progress_plot(self) -> Path:
        return self.path / "training-progress.png"

    @property
    def model(self) -> Path:
        return self.path / "model.pt"

    @property
    def model_card(self) -> Path:
        return self.path / "MODEL_CARD.md"

    @property
    def test(self) -> Path:
        return self.path / "test"

    @property
    def test_metrics(self) -> Path:
        return self.test / "metrics.json"

    @property
    def test_confusion(self) -> Path:
        return self.test / "confusion.png"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    # --- questions about the folder ---------------------------------------------------
    def is_run(self) -> bool:
        """True when the folder holds at least one file that only a training run writes."""
        return self.path.is_dir() and any(
            p.is_file() for p in (self.config, self.model, self.history, self.split)
        )

    def read_config(self) -> dict[str, Any]:
        """``config.yaml`` as a plain dict ({} when absent); a clear error when unreadable."""
        if not self.config.is_file():
            return {}
        try:
            data = yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise HandsegError(f"cannot read {self.config}: {reason}") from None
        if not isinstance(data, dict):
            raise HandsegError(f"{self.config} is not a mapping of option: value")
        return data

    def hand_value(self) -> str | None:
        """The mask value the run was told means hand, as text; None when unset, or when
        ``config.yaml`` is missing or unreadable (an untrusted file is ignored, not run)."""
        try:
            value = self.read_config().get("hand_value")
        except HandsegError:
            return None
        return None if value is None else str(value)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)
