"""``handseg train``: the seed workflow's training run on Lightning.

:func:`train` runs named steps: prepare the run folder, the data, the model and the trainer;
fit; save the model; evaluate the test split. The run folder's files are those of
:class:`handseg.core.rundir.RunDir` (config.yaml, split.json, checkpoints/, metrics.csv,
training-progress.png, model.pt, test/).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    EMAWeightAveraging,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm.auto import tqdm

from handseg.core.config import TrainConfig, resolve_config, save_config
from handseg.core.constants import IMAGENET_MEAN, IMAGENET_STD
from handseg.core.device import accelerator, training_precision
from handseg.core.errors import HandsegError, check_pixels
from handseg.core.imaging import fit_mask_to_image, read_mask
from handseg.core.io import write_error
from handseg.core.rundir import RunDir
from handseg.data.dataset import SegDataset
from handseg.data.pairs import find_pairs
from handseg.data.split import load_split, make_split, save_split
from handseg.eval.evaluate import evaluate_model, headline, write_evaluation
from handseg.eval.metrics import format_metrics_tables
from handseg.infer.pipeline import load_segmenter
from handseg.infer.predictor import load_model
from handseg.model.checkpoint import save_model_file
from handseg.model.crop_net import CropSegNet
from handseg.model.network import HandSegNet, resolve_backbone_weights
from handseg.synth.compositing import augment_options, build_transform
from handseg.synth.hands import SyntheticDataset
from handseg.train.callbacks import EpochSampler, History, check_resume_checkpoint, checkpoint_io
from handseg.train.crops import CropModule, build_crop_net, crop_datasets, encoder_weights_name
from handseg.train.model_card import hardware, write_model_card
from handseg.train.module import NonFiniteLossError, SegModule, class_weights_for, model_config_for

__all__ = [
    "RECORDED_FACTS",
    "SYNTHETIC_SEED_OFFSET",
    "augment_options",
    "is_rank_zero",
    "resume_options",
    "train",
    "train_from_options",
    "with_synthetic",
]

log = logging.getLogger(__name__)

RECORDED_FACTS = ("backbone_weights_used", "class_weights")
"""Keys that config.yaml holds beside the options: facts of the run, recorded after the
options were resolved (not options, so a resumed run does not read them back)."""
SYNTHETIC_SEED_OFFSET = 1_000_003
"""Added to the training seed for the synthetic hands of ``--synthetic-fraction``."""


def train_from_options(
    options: dict[str, Any],
    *,
    config_file: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """``handseg train``: resolve ``options`` (None values are unset) over the preset and
    ``config_file``, and train. ``resume=RUN`` continues RUN with its own options from
    RUN/config.yaml, the options given now on top."""
    if resume is not None:
        given = {k: v for k, v in options.items() if v is not None}
        options = resume_options(resume) | given | {"out": str(resume)}
    return train(resolve_config(options, config_file), resume=resume is not None, progress=progress)


def resume_options(run: str | Path) -> dict[str, Any]:
    """The options RUN was trained with (its config.yaml without :data:`RECORDED_FACTS`)."""
    run = RunDir(run)
    if not run.config.is_file():
        raise HandsegError(f"cannot resume: {run.config} does not exist")
    options = run.read_config()
    for key in RECORDED_FACTS:
        options.pop(key, None)
    return options


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Run one training; return the run folder (its files: :class:`RunDir`)."""
    _quiet_lightning()
    new_folder = not Path(cfg.out).exists()
    run, resume = _prepare_run_folder(cfg, resume)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        split = _prepare_data(cfg, run, resume, progress)
    except HandsegError:  # bad data: leave no trace of the run
        if new_folder and run.path.is_dir() and not any(run.path.iterdir()):
            run.path.rmdir()
        raise
    data = _build_loaders(cfg, split, progress)
    module, run_info = _build_model(cfg, run, resume, data)
    fitting = _build_trainer(cfg, run, progress)
    train_time = _fit(fitting, module, data, run, resume)
    if not fitting.trainer.is_global_zero:
        return run.path
    fitting.history.write()
    model = _save_model(cfg, run, module, fitting, run_info, train_time)
    if cfg.evaluate_test and split.get("test"):
        _evaluate_test(cfg, run, split["test"], model, progress)
    try:  # a card that cannot be written must not cost the trained model
        log.info("wrote %s", write_model_card(run))
    except (HandsegError, OSError, ValueError, KeyError) as exc:
        log.warning("could not write %s: %s; run handseg card %s", run.model_card, exc, run)
    return run.path


# --- step 1: the run folder --------------------------------------------------------------


def _prepare_run_folder(cfg: TrainConfig, resume: bool) -> tuple[RunDir, bool]:
    """A writable run folder; whether there is a checkpoint to resume from."""
    run = RunDir(cfg.out)
    _check_writable(run.path)
    if resume and not run.last_checkpoint.exists():
        if not run.config.exists():
            raise HandsegError(
                f"cannot resume: {run} holds no run (no config.yaml); start a new run"
            )
        log.warning(
            "%s does not exist (killed in the first epoch?): starting the run afresh",
            run.last_checkpoint,
        )
        resume = False
    if resume:
        for stale in run.checkpoints.glob(".*.tmp*"):  # left by a kill during a checkpoint write
            stale.unlink(missing_ok=True)
    return run, resume


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


# --- step 2: the data --------------------------------------------------------------------


def _prepare_data(
    cfg: TrainConfig, run: RunDir, resume: bool, progress: bool = True
) -> dict[str, list]:
    """The split: the run's own when resuming, else ``--split`` or a new one, saved once
    its training and validation files have been checked (bad data writes nothing)."""
    if resume and run.split.exists():
        split = load_split(run.split)
    else:
        if cfg.split:
            split = load_split(cfg.split, cfg.images, cfg.masks)
        elif cfg.images and cfg.masks:
            pairs = find_pairs(cfg.images, cfg.masks)
            log.info("found %d image/mask pairs (paired by %s)", len(pairs), pairs.rule)
            split = make_split(pairs, cfg.split_fractions, cfg.seed)
        else:
            raise HandsegError("say where the data is: --images DIR --masks DIR (or --config FILE)")
    for name in ("train", "val"):
        if not split.get(name):
            raise HandsegError(
                f"the {name} subset is empty: with fractions {cfg.split_fractions} at least "
                f"{math.ceil(1 / max(min(cfg.split_fractions[:2]), 1e-9))} images are needed"
            )
    _validate_files(split["train"] + split["val"], cfg, progress)
    if not (resume and run.split.exists()) and is_rank_zero():
        # every process draws the same split; one writes it
        save_split(split, run.split, images_dir=cfg.images, masks_dir=cfg.masks,
                   seed=cfg.seed, fractions=cfg.split_fractions)  # fmt: skip
    return split


def _validate_files(pairs, cfg: TrainConfig, progress: bool = True) -> None:
    """Decode every mask (and the header of every image) before any training starts,
    so bad data is reported at once rather than in epoch 7."""
    for img_path, mask_path in tqdm(
        pairs, desc="check data", unit="pair", leave=False, disable=not progress
    ):
        try:
            with Image.open(img_path) as im:
                w, h = im.size
                check_pixels(w, h, f"image {img_path}")
                if cfg.hand_value is None:
                    im.verify()
        except HandsegError:
            raise
        except Exception as exc:
            raise HandsegError(f"cannot read image {img_path}: {exc}".splitlines()[0]) from None
        mask = read_mask(mask_path, hand_value=cfg.hand_value)
        fit_mask_to_image(mask, (h, w), name=str(mask_path))


@dataclass
class _Data:
    """The loaders, and what the model and optimiser need to know about the data."""

    train: DataLoader
    val: DataLoader
    steps_per_epoch: int
    class_weights: list[float] | None


def _build_loaders(cfg: TrainConfig, split: dict[str, list], progress: bool = True) -> _Data:
    if cfg.refine == "crops":
        crops = crop_datasets(cfg, split, progress)
        train_ds, val_ds = crops.train, crops.val
        weights = None
    else:
        train_ds, val_ds, weights = _image_datasets(cfg, split)
    workers = _workers(cfg)
    loader_kw = {
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": torch.cuda.is_available() and cfg.device != "cpu",
    }
    sampler = EpochSampler(len(train_ds), cfg.seed)  # shuffled every epoch, resumable
    return _Data(
        train=DataLoader(
            train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=False, **loader_kw
        ),
        val=DataLoader(val_ds, batch_size=cfg.batch_size, **loader_kw),
        steps_per_epoch=max(
            1, math.ceil(len(train_ds) / (cfg.batch_size * cfg.devices * cfg.num_nodes))
        ),
        class_weights=weights,
    )


def _image_datasets(cfg: TrainConfig, split: dict[str, list]):
    """The whole-image network's training and validation sets and class weights."""
    size = tuple(cfg.image_size)
    transform = build_transform(list(cfg.augment), **augment_options(cfg))
    train_ds = SegDataset(
        split["train"], size, transform, hand_value=cfg.hand_value, cache=cfg.cache
    )
    val_ds = SegDataset(split["val"], size, None, hand_value=cfg.hand_value, cache=cfg.cache)
    weights = None
    if cfg.class_weighting == "median-frequency":
        masks = (train_ds.load_resized(i)[1] for i in range(len(split["train"])))
        weights = [float(w) for w in class_weights_for(masks, len(cfg.classes))]
        log.info("median-frequency class weights: %s", dict(zip(cfg.classes, weights)))
    return with_synthetic(train_ds, cfg), val_ds, weights


def _workers(cfg: TrainConfig) -> int:
    if cfg.workers >= 0:
        return cfg.workers
    n = os.cpu_count() or 1
    return 0 if n <= 2 else min(8, n // 2)


def with_synthetic(ds: Dataset, cfg: TrainConfig) -> Dataset:
    """``ds`` plus synthetic hands (a share ``cfg.synthetic_fraction`` of the whole), drawn
    on the allowed background families and augmented like the real photos."""
    if cfg.synthetic_fraction <= 0:
        return ds

    n = max(1, round(len(ds) * cfg.synthetic_fraction / (1 - cfg.synthetic_fraction)))
    # a seed of its own: with cfg.seed the hands would repeat the first images of a data set
    # that `handseg synth` wrote with the same seed, test images included
    seed = cfg.seed + SYNTHETIC_SEED_OFFSET
    synthetic = SyntheticDataset(
        n,
        tuple(cfg.image_size),
        seed,
        getattr(ds, "transform", None),
        families=cfg.background_families or None,
    )
    return ConcatDataset([ds, synthetic])


# --- step 3: the model -------------------------------------------------------------------


def _build_model(
    cfg: TrainConfig, run: RunDir, resume: bool, data: _Data
) -> tuple[SegModule, dict[str, Any]]:
    """The network in its Lightning module, and the run's config.yaml (written on a new run):
    the options plus the facts :data:`RECORDED_FACTS`."""
    if cfg.refine == "crops":
        module = CropModule(cfg, build_crop_net(cfg), data.steps_per_epoch)
        used = encoder_weights_name(cfg)
    else:
        net = HandSegNet(model_config_for(cfg))
        if resume:  # the weights come from the checkpoint
            used = _previous_backbone(run)
        else:
            used = resolve_backbone_weights(net, cfg.backbone_weights)
        module = SegModule(cfg, data.class_weights, net, data.steps_per_epoch)
    if cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)
    run_info = cfg.to_dict() | {"backbone_weights_used": used, "class_weights": data.class_weights}
    if not resume and is_rank_zero():
        save_config(run_info, run.config)
    return module, run_info


def _previous_backbone(run: RunDir) -> str:
    try:
        return str(run.read_config()["backbone_weights_used"])
    except (HandsegError, KeyError):
        return "unknown"


# --- step 4: the trainer -----------------------------------------------------------------


@dataclass
class _Fitting:
    """The Lightning trainer and the callbacks whose results :func:`train` reads."""

    trainer: pl.Trainer
    best: ModelCheckpoint
    history: History


def _build_trainer(cfg: TrainConfig, run: RunDir, progress: bool) -> _Fitting:
    history = History(run)
    best = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename=run.best_checkpoint.stem,
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    # written every epoch (save_last=True only writes in epochs that improved val_loss);
    # after the best one, whose state must update first
    last = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename=run.last_checkpoint.stem,
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[pl.Callback] = [best, last, history]
    if cfg.patience > 0:
        callbacks.append(
            EarlyStopping(
                monitor="val_loss",
                mode="min",
                patience=cfg.patience,
                min_delta=0.0,
                check_finite=True,
            )  # fmt: skip
        )
    if cfg.ema_decay > 0:  # validated and checkpointed (so saved) in place of the weights
        callbacks.append(EMAWeightAveraging(decay=cfg.ema_decay))
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    acc = accelerator(cfg.device)
    trainer = pl.Trainer(
        default_root_dir=run.path,
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        accelerator=acc,
        devices=cfg.devices if acc != "cpu" or cfg.devices > 1 else 1,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=training_precision(cfg.device, cfg.precision),
        callbacks=callbacks,
        plugins=[checkpoint_io()],
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        deterministic=False,
        check_val_every_n_epoch=1,
    )
    return _Fitting(trainer, best, history)


# --- step 5: fit -------------------------------------------------------------------------


def _fit(fitting: _Fitting, module: SegModule, data: _Data, run: RunDir, resume: bool) -> float:
    """Train (from the last checkpoint when resuming); returns the seconds it took. A
    non-finite loss or a full disk stops with one line that says what to do."""
    if resume:
        check_resume_checkpoint(run.last_checkpoint)
    t0 = time.perf_counter()
    try:
        fitting.trainer.fit(
            module,
            data.train,
            data.val,
            ckpt_path=str(run.last_checkpoint) if resume else None,
            weights_only=True,  # a checkpoint never runs code
        )
    except NonFiniteLossError as exc:
        fitting.history.write()
        raise HandsegError(
            f"training stopped: {exc}. The last good checkpoint is kept in {run.checkpoints}; "
            "lower the learning rate (--lr) or check the data"
        ) from None
    except (HandsegError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        if isinstance(exc, OSError):
            exc = write_error(run.checkpoints, exc)
        raise HandsegError(
            f"training stopped: {exc}. The last complete checkpoint is kept in "
            f"{run.checkpoints}; free some space and run 'handseg train --resume {run}'"
        ) from None
    return time.perf_counter() - t0


# --- steps 6 and 7: save the model, evaluate the test split -------------------------------


@dataclass
class _SavedModel:
    """What model.pt holds: the network, its description and its metrics (updated by the
    test evaluation, then saved again)."""

    net: HandSegNet | CropSegNet
    meta: dict[str, Any]
    metrics: dict[str, Any]

    def save(self, run: RunDir) -> None:
        save_model_file(run.model, self.net, metrics=self.metrics, **self.meta)


def _save_model(
    cfg: TrainConfig,
    run: RunDir,
    module: SegModule,
    fitting: _Fitting,
    run_info: dict[str, Any],
    train_time: float,
) -> _SavedModel:
    """The best-validation weights (the last epoch's without a best checkpoint) -> model.pt."""
    best = fitting.best.best_model_path or str(run.last_checkpoint)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state, strict=False)
    net = module.net.to(memory_format=torch.contiguous_format).cpu().eval()
    score = fitting.best.best_model_score
    trainer = fitting.trainer
    metrics: dict[str, Any] = {
        "best_val_loss": float(score) if score is not None else None,
        "epochs_run": trainer.current_epoch,
        "stopped_early": bool(trainer.should_stop and trainer.current_epoch < cfg.epochs),
        "train_time_s": round(train_time, 1),
        "hardware": hardware(cfg.device),
    }
    crops = cfg.refine == "crops"  # the crop segmenter takes RGB in [0, 1], square crops
    meta = {
        "classes": cfg.classes,
        "mean": (0.0, 0.0, 0.0) if crops else IMAGENET_MEAN,
        "std": (1.0, 1.0, 1.0) if crops else IMAGENET_STD,
        "input_size": (cfg.crop_size, cfg.crop_size) if crops else tuple(cfg.image_size),
        "train_config": run_info,
        "backbone_weights": str(run_info["backbone_weights_used"]),
    }
    model = _SavedModel(net, meta, metrics)
    model.save(run)
    return model


def _evaluate_test(
    cfg: TrainConfig, run: RunDir, pairs: list, model: _SavedModel, progress: bool
) -> None:
    """Test-split metrics -> test/ and into model.pt."""
    # the reference metrics of the exact network (no quantisation): fp32 eager PyTorch
    if cfg.refine == "crops":  # the whole pipeline: detector + crop segmenter
        predictor = load_segmenter(run.model)
    else:
        predictor = load_model(run.model, runtime="torch", precision="fp32")
    test = evaluate_model(
        predictor, pairs, hand_value=cfg.hand_value, progress=progress, desc="test split"
    )
    write_evaluation(test, run.test)
    model.metrics["test"] = test["dataset"] | {"hand_IoU": test["classes"][cfg.classes[1]]["IoU"]}
    model.save(run)
    log.info("test split (%d images):\n%s", len(pairs), format_metrics_tables(test))
    log.info("test split: %s", headline(test))


# --- helpers -----------------------------------------------------------------------------


def is_rank_zero() -> bool:
    """Before the Trainer exists: is this the global rank 0 process (DDP, torchrun, SLURM)?"""
    return getattr(rank_zero_only, "rank", 0) == 0


def _quiet_lightning() -> None:
    """Lightning sets its loggers to INFO when imported; its start-up chatter (GPU/TPU
    availability, tips) is noise unless handseg itself is verbose."""
    if logging.getLogger("handseg").getEffectiveLevel() > logging.DEBUG:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
