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

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from handseg.core.config import TrainConfig, save_config
from handseg.core.constants import IMAGENET_MEAN, IMAGENET_STD
from handseg.core.device import accelerator, training_precision
from handseg.core.errors import HandsegError
from handseg.core.imaging import fit_mask_to_image, read_mask
from handseg.core.io import write_error
from handseg.data.dataset import SegDataset
from handseg.data.pairs import find_pairs
from handseg.data.split import load_split, make_split, save_split
from handseg.eval.evaluate import evaluate_model, headline, write_evaluation
from handseg.eval.metrics import format_metrics_tables
from handseg.infer.predictor import load_model
from handseg.model.checkpoint import save_model_file
from handseg.model.network import HandSegNet, resolve_backbone_weights
from handseg.synth.compositing import build_transform
from handseg.synth.hands import SyntheticDataset
from handseg.train.callbacks import EpochSampler, History, check_resume_checkpoint, checkpoint_io
from handseg.train.module import NonFiniteLossError, SegModule, class_weights_for, model_config_for

log = logging.getLogger(__name__)


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

    train_ds = with_synthetic(train_ds, cfg)

    workers = _workers(cfg)
    loader_kw = {
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": torch.cuda.is_available() and cfg.device != "cpu",
    }
    train_dl = torch.utils.data.DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        sampler=EpochSampler(len(train_ds), cfg.seed),  # shuffled every epoch, resumable
        drop_last=False,
        **loader_kw,
    )
    val_dl = torch.utils.data.DataLoader(val_ds, batch_size=cfg.batch_size, **loader_kw)
    steps_per_epoch = max(
        1, math.ceil(len(train_ds) / (cfg.batch_size * cfg.devices * cfg.num_nodes))
    )

    net = HandSegNet(model_config_for(cfg))
    used = resolve_backbone_weights(net, cfg.backbone_weights) if not resume else None
    if resume:
        used = _previous_backbone(out)
    module = SegModule(cfg, weights, net, steps_per_epoch)
    if cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)

    run_info = cfg.to_dict() | {"backbone_weights_used": used, "class_weights": weights}
    if not resume and is_rank_zero():
        save_config(run_info, out / "config.yaml")

    history = History(out)
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
        plugins=[checkpoint_io()],
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        deterministic=False,
        check_val_every_n_epoch=1,
    )
    if resume:
        check_resume_checkpoint(last_ckpt)
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


def augment_options(cfg: TrainConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if "background" in cfg.augment:
        opts["backgrounds"] = cfg.backgrounds
        opts["background_prob"] = cfg.background_prob
        opts["camouflage_prob"] = cfg.camouflage_prob
        opts["background_families"] = cfg.background_families or None
    return opts


SYNTHETIC_SEED_OFFSET = 1_000_003
"""Added to the training seed for the synthetic hands of ``--synthetic-fraction``."""


def with_synthetic(ds, cfg: TrainConfig):
    """``ds`` plus synthetic hands (a share ``cfg.synthetic_fraction`` of the whole), drawn
    on the allowed background families and augmented like the real photos."""
    if cfg.synthetic_fraction <= 0:
        return ds

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
