"""Training the crop segmenter (``--refine crops``, the ``hands`` preset).

The run is :func:`handseg.train.run.train`'s (run folder, split, Lightning trainer,
checkpoints, resume, history, model card, test evaluation); this module supplies what
differs: the training crops (the hand detector on every training and validation photo,
then :class:`~handseg.synth.hand_crops.HandCropDataset`), the network (MediaPipe's
landmark model converted to PyTorch as the encoder, :class:`~handseg.model.crop_net.CropSegNet`)
and its Lightning module (pixel cross-entropy + soft Dice on the crop; the encoder frozen
unless ``--encoder-lr-factor`` > 0).

What dominates the time on a CPU (profiled, eighth session, batch of 8): the decoder's
forward and backward pass, ~70 % of a step (most of it the convolutions' backward pass at
112 and 224 px, then bilinear upsampling and batch norm at those sizes); the frozen
encoder's forward pass ~11 %; making the crops (decode, warp, composite, colour, blur)
~19 %. Fine-tuning adds the encoder's backward pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from handseg.core.config import TrainConfig
from handseg.core.constants import IGNORE_INDEX
from handseg.core.errors import HandsegError
from handseg.core.imaging import fit_mask_to_image, read_image, read_mask
from handseg.infer.detect import DETECTOR_MODES, HandDetector
from handseg.infer.hand_models import LANDMARK_MODEL, MEDIAPIPE_VERSION, SHA256, find_hand_models
from handseg.model.crop_net import CropNetConfig, CropSegNet
from handseg.model.tflite_net import TFLiteNet, read_tflite
from handseg.synth.compositing import augment_options, build_transform
from handseg.synth.hand_crops import Anchor, HandCropDataset, anchors_for
from handseg.train.module import NonFiniteLossError, build_scheduler

__all__ = ["CropData", "CropModule", "build_crop_net", "crop_datasets", "encoder_weights_name"]

log = logging.getLogger(__name__)


def encoder_weights_name(cfg: TrainConfig) -> str:
    """What initialised the encoder (the model card's ``backbone_weights``)."""
    if cfg.encoder_init == "random":
        return "none (random init, MediaPipe hand-landmark shape)"
    return f"MediaPipe {LANDMARK_MODEL} ({MEDIAPIPE_VERSION})"


def build_crop_net(cfg: TrainConfig) -> CropSegNet:
    """The crop segmenter, its encoder read from MediaPipe's landmark model (SHA-256
    checked) or randomly initialised in that model's shape."""
    _, landmark = find_hand_models()
    program = read_tflite(landmark, SHA256[LANDMARK_MODEL])
    arch = CropNetConfig(
        program=program.to_dict(),
        crop_size=cfg.crop_size,
        crop_margin=cfg.crop_margin,
        decoder_channels=tuple(cfg.crop_decoder[:5]),
        head_channels=cfg.crop_decoder[5],
        prior=cfg.crop_prior,
        grow=cfg.crop_grow,
    )
    net = CropSegNet(arch, TFLiteNet(program))
    if cfg.encoder_init == "random":
        net.reset_encoder(cfg.seed)
    return net


@dataclass
class CropData:
    train: HandCropDataset
    val: HandCropDataset
    found: int
    """Training hands found by the detector (the rest train from their masks' boxes)."""


def _anchors(pairs, detector: HandDetector, cfg: TrainConfig, desc: str, progress: bool):
    anchors: list[Anchor] = []
    for k, (img_path, mask_path) in enumerate(
        tqdm(pairs, desc=desc, unit="photo", leave=False, disable=not progress)
    ):
        rgb = read_image(img_path)
        mask = fit_mask_to_image(
            read_mask(mask_path, hand_value=cfg.hand_value), rgb.shape[:2], name=str(mask_path)
        )
        anchors += anchors_for(k, mask, detector(rgb, **DETECTOR_MODES[cfg.detector_mode]))
    return anchors


def crop_datasets(cfg: TrainConfig, split: dict[str, list], progress: bool = True) -> CropData:
    """The training and validation crops of ``split``: hands found by the detector (as
    prediction will crop them), hands it missed (their masks' boxes), photos without a hand
    (negative crops)."""
    detector = HandDetector()
    train_anchors = _anchors(split["train"], detector, cfg, "find training hands", progress)
    val_anchors = _anchors(split["val"], detector, cfg, "find validation hands", progress)
    found = sum(a.landmarks is not None for a in train_anchors)
    boxes = sum(a.box is not None for a in train_anchors)
    log.info(
        "training crops: %d hands found by the detector, %d from masks it missed, %d "
        "photos without a hand",
        found, boxes, sum(a.negative for a in train_anchors),
    )  # fmt: skip
    # the crop's own jitter (shift, scale, rotation, mirroring) replaces the geometric ones
    names = [a for a in cfg.augment if a not in ("seed", "flip", "translate", "scale-rotate")]
    transform = build_transform(names or ["none"], **augment_options(cfg))
    margin = cfg.crop_margin
    train = HandCropDataset(split["train"], train_anchors, cfg.crops_per_epoch, cfg.crop_size,
                            margin, transform, zoom_prob=cfg.crop_zoom, paste_prob=cfg.crop_paste,
                            tone_prob=cfg.crop_tone, synthetic_prob=cfg.synthetic_fraction,
                            hand_value=cfg.hand_value, seed=cfg.seed)  # fmt: skip
    val = HandCropDataset(split["val"], val_anchors, len(val_anchors), cfg.crop_size, margin,
                          None, jitter=None, hand_value=cfg.hand_value)  # fmt: skip
    return CropData(train, val, found)


def crop_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy (binary) + soft Dice over the batch; ignore pixels left out.
    logits (B, 1, S, S), target (B, S, S) in {0, 1, 255}."""
    valid = target != IGNORE_INDEX
    z = logits[:, 0][valid]
    t = (target[valid] == 1).float()
    bce = F.binary_cross_entropy_with_logits(z, t)
    p = torch.sigmoid(z)
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    return bce + dice


class CropModule(pl.LightningModule):
    """The crop segmenter's training step, optimiser and schedule."""

    def __init__(self, cfg: TrainConfig, net: CropSegNet, steps_per_epoch: int) -> None:
        super().__init__()
        self.cfg, self.net, self.steps_per_epoch = cfg, net, steps_per_epoch
        self.frozen = cfg.encoder_lr_factor == 0
        if self.frozen and cfg.encoder_init == "random":
            raise HandsegError("a random encoder must learn: set --encoder-lr-factor above 0")
        for p in net.encoder.parameters():
            p.requires_grad_(not self.frozen)
        # channels-last tensors: oneDNN's convolutions and their backward pass, most of a
        # step, run ~1.3x faster on the CPU (BENCHMARKS.md); the weights' values are
        # unchanged, and a state dict loads into a model of either layout
        net.to(memory_format=torch.channels_last)

    def forward(self, crop: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        crop = crop.contiguous(memory_format=torch.channels_last)
        if prior is not None:
            prior = prior.contiguous(memory_format=torch.channels_last)
        if self.frozen:  # no graph through the encoder: its forward pass only
            with torch.no_grad():
                feats = self.net.features(crop)
            return self.net.decode(feats, crop, prior)
        return self.net.decode(self.net.features(crop), crop, prior)

    def _step(self, batch, name: str) -> torch.Tensor:
        x, p, y = batch
        logits = self(x, p if self.net.cfg.prior else None)
        loss = crop_loss(logits, y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"the {name} loss is {loss.item()}")
        valid = y != IGNORE_INDEX
        acc = ((logits[:, 0] > 0) == (y == 1))[valid].float().mean()
        on_step = name == "train"
        self.log(f"{name}_loss", loss, on_step=on_step, on_epoch=not on_step, batch_size=len(x))
        self.log(f"{name}_acc", acc, on_step=on_step, on_epoch=not on_step, batch_size=len(x))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        cfg = self.cfg
        decoder = [p for n, p in self.net.named_parameters() if not n.startswith("encoder.")]
        groups = [{"params": decoder, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
        if not self.frozen:
            groups.append({"params": list(self.net.encoder.parameters()),
                           "lr": cfg.lr * cfg.encoder_lr_factor, "weight_decay": 0.0})  # fmt: skip
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
        sched = build_scheduler(opt, cfg, self.steps_per_epoch)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
