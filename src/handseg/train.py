"""``handseg train``: the seed workflow's training run on Lightning.

Run directory (``cfg.out``)::

    config.yaml            resolved options (defaults < preset < --config < flags)
    split.json             which files went to train / val / test
    checkpoints/last.ckpt  the last epoch, for --resume
    checkpoints/best.ckpt  the best validation loss so far
    metrics.csv            training loss/accuracy per iteration, validation per epoch
    training-progress.png  MATLAB-style training-progress plot
    model.pt               self-describing best-validation network (weights_only loadable)
    test/                  metrics.json, per-image.csv, confusion.png on the test split
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from handseg.config import TrainConfig, save_config
from handseg.device import accelerator, training_precision
from handseg.errors import HandsegError
from handseg.model import HandSegNet, model_config, resolve_backbone_weights

__all__ = [
    "train",
    "is_rank_zero",
    "param_groups",
    "SegModule",
    "build_scheduler",
    "class_weights_for",
]

log = logging.getLogger(__name__)

IGNORE_INDEX = 255


class NonFiniteLossError(RuntimeError):
    pass


# --- optimisation ------------------------------------------------------------------------


def _model_config(cfg: TrainConfig):
    return model_config(len(cfg.classes), cfg.output_stride, cfg.decoder_channels)


def param_groups(model: HandSegNet, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Four groups: backbone / new layers x with / without L2.

    MATLAB's per-layer factors: L2 on conv weights and BatchNorm scale and offset, none on
    conv biases; new (decoder and classifier) layers learn ``head_lr_factor`` x faster.
    """
    new_ids = {id(p) for m in model.new_layers() for p in m.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {
        (h, d): [] for h in (False, True) for d in (True, False)
    }
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_bias = name == "bias" and not isinstance(module, nn.modules.batchnorm._NormBase)
            groups[(id(p) in new_ids, not is_bias)].append(p)
    out = []
    for (head, decay), params in groups.items():
        if params:
            out.append(
                {
                    "params": params,
                    "lr": cfg.lr * (cfg.head_lr_factor if head else 1.0),
                    "weight_decay": cfg.weight_decay if decay else 0.0,
                    "name": f"{'head' if head else 'backbone'}-{'decay' if decay else 'no_decay'}",
                }
            )
    return out


def build_optimizer(model: HandSegNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        # coupled L2 (added to the gradient), as MATLAB's sgdm does
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> dict[str, Any] | None:
    """Lightning scheduler config. ``piecewise``: x ``lr_drop_factor`` every
    ``lr_drop_period`` epochs (MATLAB's piecewise schedule)."""
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "piecewise":
        sched = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=cfg.lr_drop_period, gamma=cfg.lr_drop_factor
        )
        return {"scheduler": sched, "interval": "epoch"}
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total,
            pct_start=0.15,
            div_factor=20.0,
            final_div_factor=200.0,
        )
        return {"scheduler": sched, "interval": "step"}
    warm = cfg.warmup_epochs * steps_per_epoch

    def cosine(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    return {"scheduler": sched, "interval": "step"}


def class_weights_for(masks_loader, num_classes: int = 2) -> np.ndarray:
    """Median-frequency weights from the training masks (at training resolution)."""
    from handseg.data import label_counts, median_frequency_weights

    pix, img = label_counts(masks_loader, num_classes=num_classes)
    return median_frequency_weights(pix, img)


# --- the Lightning module ----------------------------------------------------------------


def _lightning():
    import lightning.pytorch as pl

    return pl


class SegModule(_lightning().LightningModule):
    """Weighted pixel cross-entropy (plus a soft Dice term with ``loss: ce+dice``) on
    :class:`HandSegNet`; validation loss is the pixel-weighted mean cross-entropy over the
    whole validation set (sums reduced across processes)."""

    def __init__(
        self,
        cfg: TrainConfig,
        class_weights: list[float] | None,
        model: HandSegNet | None = None,
        steps_per_epoch: int = 1,
    ):
        super().__init__()
        self.cfg = cfg
        self.net = model or HandSegNet(_model_config(cfg))
        w = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", w, persistent=False)
        self.steps_per_epoch = steps_per_epoch
        self.dice = None
        if cfg.loss == "ce+dice":
            from segmentation_models_pytorch.losses import DiceLoss

            self.dice = DiceLoss("multiclass", ignore_index=IGNORE_INDEX)
        self._val_sums = torch.zeros(4, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean"):
        return F.cross_entropy(
            logits.float(),
            y,
            weight=self.class_weights,
            ignore_index=IGNORE_INDEX,
            reduction=reduction,
        )

    def training_step(self, batch, batch_idx):
        x, y = batch  # (B, 3, H, W) float, (B, H, W) int64
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self(x)
        loss = self._loss(logits, y)
        if self.dice is not None:
            loss = loss + self.dice(logits.float(), y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} at iteration {self.global_step + 1}"
            )
        with torch.no_grad():
            valid = y != IGNORE_INDEX
            acc = (logits.argmax(1)[valid] == y[valid]).float().mean()
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train_acc", acc, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_validation_epoch_start(self):
        self._val_sums = torch.zeros(4, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self(x)
        valid = y != IGNORE_INDEX
        loss_sum = self._loss(logits, y, reduction="sum")
        # the denominator of weighted mean cross-entropy: the summed weights of valid pixels
        if self.class_weights is not None:
            wsum = self.class_weights[y[valid]].sum()
        else:
            wsum = valid.sum()
        correct = (logits.argmax(1)[valid] == y[valid]).sum()
        self._val_sums += torch.stack(
            [loss_sum.double(), wsum.double(), correct.double(), valid.sum().double()]
        )

    def on_validation_epoch_end(self):
        sums = self._val_sums
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")  # summed, not averaged
        val_loss = (sums[0] / sums[1].clamp(min=1e-12)).float()
        val_acc = (sums[2] / sums[3].clamp(min=1)).float()
        self.log("val_loss", val_loss, prog_bar=True, sync_dist=False)
        self.log("val_acc", val_acc, prog_bar=True, sync_dist=False)

    def configure_optimizers(self):
        opt = build_optimizer(self.net, self.cfg)
        sched = build_scheduler(opt, self.cfg, self.steps_per_epoch)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": sched}


class _History(_lightning().Callback):
    """Writes ``metrics.csv`` and ``training-progress.png`` after every epoch.

    Its rows travel inside the checkpoints, so a resumed run continues the same history.
    """

    fields = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "time_s")

    def __init__(self, out: Path, plot: bool = True):
        self.out = out
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
        from handseg.io_safety import atomic_write

        with atomic_write(self.out / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, restval="")
            w.writeheader()
            w.writerows(self.rows)
        if self.plot and self.rows:
            try:
                from handseg.viz import training_progress_figure

                training_progress_figure(self.rows, self.out / "training-progress.png")
            except Exception as exc:  # a plot must never stop training
                log.warning("could not draw the training-progress plot: %s", exc)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "elapsed": self._elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
        self._elapsed0 = float(state.get("elapsed", 0.0))
        self._t0 = time.perf_counter()


class _EpochSampler(torch.utils.data.Sampler):
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
        from lightning.fabric.utilities.seed import seed_everything

        seed = self.seed * 1000 + self.epoch
        seed_everything(seed, workers=True, verbose=False)
        g = torch.Generator().manual_seed(seed)
        return iter(torch.randperm(self.n, generator=g).tolist())


def _checkpoint_io():
    """Lightning checkpoints through handseg's atomic writer: a temporary file next to the
    target, fsync, rename (a kill mid-write leaves the previous checkpoint intact, whatever
    file system ``$TMPDIR`` is on); a full disk becomes a one-line error."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class _AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            from handseg.io_safety import atomic_torch_save

            atomic_torch_save(checkpoint, path)

    return _AtomicCheckpointIO()


def _check_resume_checkpoint(path: Path) -> None:
    """Refuse a checkpoint that would run code when unpickled, before Lightning opens it."""
    import pickle
    import zipfile

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


# --- the run -----------------------------------------------------------------------------


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise HandsegError(
            f"cannot write to the output folder {out}: {exc.strerror or exc}"
        ) from None


def _workers(cfg: TrainConfig) -> int:
    if cfg.workers >= 0:
        return cfg.workers
    n = os.cpu_count() or 1
    return 0 if n <= 2 else min(8, n // 2)


def _prepare_data(cfg: TrainConfig, out: Path, resume: bool):
    from handseg.data import find_pairs, load_split, make_split, save_split

    split_path = out / "split.json"
    if resume and split_path.exists():
        split = load_split(split_path)
    else:
        if cfg.split:
            split = load_split(cfg.split, cfg.images, cfg.masks)
        elif cfg.images and cfg.masks:
            pairs = find_pairs(cfg.images, cfg.masks)
            log.info("found %d image/mask pairs (paired by %s)", len(pairs), pairs.rule)
            split = make_split(pairs, cfg.split_fractions, cfg.seed)
        else:
            raise HandsegError("say where the data is: --images DIR --masks DIR (or --config FILE)")
        if is_rank_zero():  # every process draws the same split; one writes it
            save_split(split, split_path, images_dir=cfg.images, masks_dir=cfg.masks,
                       seed=cfg.seed, fractions=cfg.split_fractions)  # fmt: skip
    for name in ("train", "val"):
        if not split.get(name):
            raise HandsegError(
                f"the {name} subset is empty: with fractions {cfg.split_fractions} at least "
                f"{math.ceil(1 / max(min(cfg.split_fractions[:2]), 1e-9))} images are needed"
            )
    return split


def _validate_files(pairs, cfg: TrainConfig, progress: bool = True) -> None:
    """Decode every mask (and the header of every image) before any training starts,
    so bad data is reported at once rather than in epoch 7."""
    from PIL import Image
    from tqdm.auto import tqdm

    from handseg.data import fit_mask_to_image, read_mask

    for img_path, mask_path in tqdm(
        pairs, desc="check data", unit="pair", leave=False, disable=not progress
    ):
        try:
            with Image.open(img_path) as im:
                w, h = im.size
                if cfg.hand_value is None:
                    im.verify()
        except Exception as exc:
            raise HandsegError(f"cannot read image {img_path}: {exc}".splitlines()[0]) from None
        mask = read_mask(mask_path, hand_value=cfg.hand_value)
        fit_mask_to_image(mask, (h, w), name=str(mask_path))


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Run one training; return the run directory. See the module docstring for its files."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

    from handseg.data import IMAGENET_MEAN, IMAGENET_STD, SegDataset
    from handseg.transforms import build_transform

    _quiet_lightning()

    out = Path(cfg.out)
    _check_writable(out)
    ckpt_dir = out / "checkpoints"
    last_ckpt = ckpt_dir / "last.ckpt"
    if resume and not last_ckpt.exists():
        if not (out / "config.yaml").exists():
            raise HandsegError(
                f"cannot resume: {out} holds no run (no config.yaml); start a new run"
            )
        log.warning(
            "%s does not exist (killed in the first epoch?): starting the run afresh", last_ckpt
        )
        resume = False
    if resume:
        for stale in ckpt_dir.glob(".*.tmp*"):  # left by a kill during a checkpoint write
            stale.unlink(missing_ok=True)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    split = _prepare_data(cfg, out, resume)
    _validate_files(split["train"] + split["val"], cfg, progress)

    size = tuple(cfg.image_size)
    transform = build_transform(list(cfg.augment), **_augment_options(cfg))
    train_ds = SegDataset(
        split["train"], size, transform, hand_value=cfg.hand_value, cache=cfg.cache
    )
    val_ds = SegDataset(split["val"], size, None, hand_value=cfg.hand_value, cache=cfg.cache)
    weights = None
    if cfg.class_weighting == "median-frequency":
        masks = (train_ds.load_resized(i)[1] for i in range(len(split["train"])))
        weights = [float(w) for w in class_weights_for(masks, len(cfg.classes))]
        log.info("median-frequency class weights: %s", dict(zip(cfg.classes, weights)))

    train_ds = _with_synthetic(train_ds, cfg)

    workers = _workers(cfg)
    loader_kw = {
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": torch.cuda.is_available() and cfg.device != "cpu",
    }
    train_dl = torch.utils.data.DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        sampler=_EpochSampler(len(train_ds), cfg.seed),  # shuffled every epoch, resumable
        drop_last=False,
        **loader_kw,
    )
    val_dl = torch.utils.data.DataLoader(val_ds, batch_size=cfg.batch_size, **loader_kw)
    steps_per_epoch = max(
        1, math.ceil(len(train_ds) / (cfg.batch_size * cfg.devices * cfg.num_nodes))
    )

    net = HandSegNet(_model_config(cfg))
    used = resolve_backbone_weights(net, cfg.backbone_weights) if not resume else None
    if resume:
        used = _previous_backbone(out)
    module = SegModule(cfg, weights, net, steps_per_epoch)
    if cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)

    run_info = cfg.to_dict() | {"backbone_weights_used": used, "class_weights": weights}
    if not resume and is_rank_zero():
        save_config(run_info, out / "config.yaml")

    history = _History(out)
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    # written every epoch (save_last=True only writes in epochs that improved val_loss);
    # after the best one, whose state must update first
    last = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    callbacks = [checkpoint, last, history]
    if cfg.patience > 0:
        callbacks.append(
            EarlyStopping(
                monitor="val_loss",
                mode="min",
                patience=cfg.patience,
                min_delta=0.0,
                check_finite=True,
            )
        )
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    trainer = pl.Trainer(
        default_root_dir=out,
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        accelerator=accelerator(cfg.device),
        devices=cfg.devices if accelerator(cfg.device) != "cpu" or cfg.devices > 1 else 1,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=training_precision(cfg.device, cfg.precision),
        callbacks=callbacks,
        plugins=[_checkpoint_io()],
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        deterministic=False,
        check_val_every_n_epoch=1,
    )
    if resume:
        _check_resume_checkpoint(last_ckpt)
    t0 = time.perf_counter()
    try:
        trainer.fit(
            module,
            train_dl,
            val_dl,
            ckpt_path=str(last_ckpt) if resume else None,
            weights_only=True,  # a checkpoint never runs code
        )
    except NonFiniteLossError as exc:
        history.write()
        raise HandsegError(
            f"training stopped: {exc}. The last good checkpoint is kept in {ckpt_dir}; "
            "lower the learning rate (--lr) or check the data"
        ) from None
    except (HandsegError, OSError) as exc:
        import errno

        if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        if isinstance(exc, OSError):
            from handseg.io_safety import write_error

            exc = write_error(ckpt_dir, exc)
        raise HandsegError(
            f"training stopped: {exc}. The last complete checkpoint is kept in {ckpt_dir}; "
            f"free some space and run 'handseg train --resume {out}'"
        ) from None
    train_time = time.perf_counter() - t0
    if not trainer.is_global_zero:
        return out
    history.write()

    best = checkpoint.best_model_path or str(last_ckpt)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state, strict=False)
    net = module.net.to(memory_format=torch.contiguous_format).cpu().eval()
    result: dict[str, Any] = {
        "best_val_loss": float(checkpoint.best_model_score)
        if checkpoint.best_model_score is not None
        else None,
        "epochs_run": trainer.current_epoch,
        "stopped_early": bool(trainer.should_stop and trainer.current_epoch < cfg.epochs),
        "train_time_s": round(train_time, 1),
    }
    from handseg.checkpoint import save_model_file

    meta = {
        "classes": cfg.classes,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "input_size": size,
        "train_config": run_info,
        "backbone_weights": str(used),
    }
    save_model_file(out / "model.pt", net, metrics=result, **meta)

    if cfg.evaluate_test and split.get("test"):
        from handseg.evaluate import evaluate_model, headline, write_evaluation
        from handseg.metrics import format_metrics_tables
        from handseg.predict import load_model

        # the reference metrics of the exact network (no quantisation): fp32 eager PyTorch
        predictor = load_model(out / "model.pt", runtime="torch", precision="fp32")
        test = evaluate_model(
            predictor,
            split["test"],
            hand_value=cfg.hand_value,
            progress=progress,
            desc="test split",
        )
        write_evaluation(test, out / "test")
        result["test"] = test["dataset"] | {"hand_IoU": test["classes"][cfg.classes[1]]["IoU"]}
        save_model_file(out / "model.pt", net, metrics=result, **meta)
        log.info("test split (%d images):\n%s", len(split["test"]), format_metrics_tables(test))
        log.info("test split: %s", headline(test))
    return out


def is_rank_zero() -> bool:
    """Before the Trainer exists: is this the global rank 0 process (DDP, torchrun, SLURM)?"""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _quiet_lightning() -> None:
    """Lightning sets its loggers to INFO when imported; its start-up chatter (GPU/TPU
    availability, tips) is noise unless handseg itself is verbose."""
    if logging.getLogger("handseg").getEffectiveLevel() > logging.DEBUG:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _augment_options(cfg: TrainConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if "background" in cfg.augment:
        opts["backgrounds"] = cfg.backgrounds
        opts["background_prob"] = cfg.background_prob
        opts["camouflage_prob"] = cfg.camouflage_prob
        opts["background_families"] = cfg.background_families or None
    return opts


SYNTHETIC_SEED_OFFSET = 1_000_003
"""Added to the training seed for the synthetic hands of ``--synthetic-fraction``."""


def _with_synthetic(ds, cfg: TrainConfig):
    """``ds`` plus synthetic hands (a share ``cfg.synthetic_fraction`` of the whole), drawn
    on the allowed background families and augmented like the real photos."""
    if cfg.synthetic_fraction <= 0:
        return ds
    from handseg.synthetic import SyntheticDataset  # added with the background issue

    n = max(1, round(len(ds) * cfg.synthetic_fraction / (1 - cfg.synthetic_fraction)))
    # a seed of its own: with cfg.seed the hands would repeat the first images of a data set
    # that `handseg synth` wrote with the same seed, test images included
    seed = cfg.seed + SYNTHETIC_SEED_OFFSET
    return torch.utils.data.ConcatDataset(
        [
            ds,
            SyntheticDataset(
                n,
                tuple(cfg.image_size),
                seed,
                getattr(ds, "transform", None),
                families=cfg.background_families or None,
            ),
        ]
    )


def _previous_backbone(out: Path) -> str:
    import yaml

    try:
        return str(yaml.safe_load((out / "config.yaml").read_text())["backbone_weights_used"])
    except Exception:
        return "unknown"
