"""Training callbacks and checkpoint plumbing: the history (metrics.csv and its plot), the
resumable epoch sampler, atomic checkpoint writes and the check of a checkpoint to resume."""

from __future__ import annotations

import csv
import logging
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.seed import seed_everything

from handseg.core.errors import HandsegError
from handseg.core.io import atomic_torch_save, atomic_write
from handseg.core.rundir import RunDir
from handseg.core.viz import training_progress_figure

__all__ = ["EpochSampler", "History", "check_resume_checkpoint", "checkpoint_io"]

log = logging.getLogger(__name__)


class History(pl.Callback):
    """Writes ``metrics.csv`` and ``training-progress.png`` of the run folder ``out`` after
    every epoch.

    Its rows travel inside the checkpoints, so a resumed run continues the same history.
    """

    fields = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "time_s")

    def __init__(self, out: RunDir | Path, plot: bool = True):
        self.run = RunDir(out)
        self.plot = plot
        self.rows: list[dict[str, Any]] = []
        self._t0 = time.perf_counter()
        self._elapsed0 = 0.0

    def _elapsed(self) -> float:
        return round(self._elapsed0 + time.perf_counter() - self._t0, 3)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        m = trainer.callback_metrics
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append(
            {
                "epoch": trainer.current_epoch + 1,
                "step": trainer.global_step,
                "lr": lr,
                "train_loss": float(m["train_loss"]) if "train_loss" in m else "",
                "train_acc": float(m["train_acc"]) if "train_acc" in m else "",
                "time_s": self._elapsed(),
            }
        )

    def on_validation_end(self, trainer, pl_module):  # after the module logged val_*
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        self.rows.append(
            {
                "epoch": trainer.current_epoch + 1,
                "step": trainer.global_step,
                "val_loss": float(m["val_loss"]),
                "val_acc": float(m["val_acc"]),
                "time_s": self._elapsed(),
            }
        )

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        with atomic_write(self.run.history, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, restval="")
            w.writeheader()
            w.writerows(self.rows)
        if self.plot and self.rows:
            try:
                training_progress_figure(self.rows, self.run.progress_plot)
            except Exception as exc:  # a plot must never stop training
                log.warning("could not draw the training-progress plot: %s", exc)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "elapsed": self._elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
        self._elapsed0 = float(state.get("elapsed", 0.0))
        self._t0 = time.perf_counter()


class EpochSampler(torch.utils.data.Sampler):
    """Shuffle for epoch e drawn from (seed, e), reseeding the global RNGs (augmentation)
    where the epoch's iteration starts.

    Lightning calls ``set_epoch`` before every epoch, including the first after a resume,
    so a resumed run repeats exactly the epochs an uninterrupted run would have made (the
    checkpoint restores weights, optimiser, scheduler, early-stopping state and history).
    Seeding in an ``on_train_epoch_start`` hook cannot do this: Lightning skips that hook
    for the first epoch after resuming from an end-of-epoch checkpoint, and the loader's
    iterator draws its seed at a different moment in a process's first epoch. Exact with
    ``--workers 0``; with persistent workers, worker RNGs are seeded once per start.
    Under DDP Lightning wraps this sampler in a ``DistributedSamplerWrapper``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        seed = self.seed * 1000 + self.epoch
        seed_everything(seed, workers=True, verbose=False)
        g = torch.Generator().manual_seed(seed)
        return iter(torch.randperm(self.n, generator=g).tolist())


def checkpoint_io():
    """Lightning checkpoints through handseg's atomic writer: a temporary file next to the
    target, fsync, rename (a kill mid-write leaves the previous checkpoint intact, whatever
    file system ``$TMPDIR`` is on); a full disk becomes a one-line error."""
    return _AtomicCheckpointIO()


class _AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_torch_save(checkpoint, path)


def check_resume_checkpoint(path: Path) -> None:
    """Refuse a checkpoint that would run code when unpickled, before Lightning opens it."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise HandsegError(
            f"{path} was refused: it holds Python objects that would run code when loaded; "
            "it is not a checkpoint handseg wrote"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise HandsegError(
            f"cannot resume: {path} is damaged ({reason}); start a new run or restore the file"
        ) from None
