"""The Lightning module: loss, optimiser parameter groups, learning-rate schedules."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from handseg.core.config import TrainConfig
from handseg.core.constants import IGNORE_INDEX
from handseg.data.dataset import label_counts, median_frequency_weights
from handseg.model.network import HandSegNet, model_config


class NonFiniteLossError(RuntimeError):
    pass


def model_config_for(cfg: TrainConfig):
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

    pix, img = label_counts(masks_loader, num_classes=num_classes)
    return median_frequency_weights(pix, img)


class SegModule(pl.LightningModule):
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
        self.net = model or HandSegNet(model_config_for(cfg))
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

    def _padding_rows(self, batch_idx: int, n: int) -> torch.Tensor | None:
        """Which of this validation batch's ``n`` samples are padding: under DDP
        Lightning's DistributedSampler (no shuffle) repeats the first photos until every
        process holds as many; rank r's k-th sample is padded position r + k * world, a
        repeat when that is past the set's end. None in one process."""
        world = self.trainer.world_size
        loader = self.trainer.val_dataloaders
        if world <= 1 or loader is None:
            return None
        total = len(loader.dataset)
        k = batch_idx * (loader.batch_size or n) + torch.arange(n, device=self.device)
        return self.trainer.global_rank + k * world >= total

    def validation_step(self, batch, batch_idx):
        x, y = batch
        padding = self._padding_rows(batch_idx, len(y))
        if padding is not None and bool(padding.any()):  # a repeated photo counts once
            y = y.clone()
            y[padding] = IGNORE_INDEX
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
