"""The training configuration: one dataclass, presets, YAML files and command-line overrides.

Resolution order (later wins): dataclass defaults < preset < ``--config FILE`` < flags.
The resolved configuration is written to ``RUN/config.yaml`` and stored in ``model.pt``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from handseg.core.constants import FAMILIES
from handseg.core.errors import HandsegError
from handseg.core.io import atomic_write_text


@dataclass
class TrainConfig:
    """Every training option. Field names are the YAML keys; flags use dashes."""

    # data
    images: str | None = None
    masks: str | None = None
    split: str | None = None  # an existing split.json to reuse instead of drawing one
    image_size: tuple[int, int] = (720, 960)  # (H, W) the network trains at
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    classes: tuple[str, str] = ("background", "hand")
    hand_value: int | None = None
    cache: bool = (
        False  # keep decoded, resized images in memory between epochs (memory grows with the data)
    )
    # network
    preset: str = "seed"
    backbone_weights: str = "auto"  # auto | imagenet | none | PATH
    output_stride: int = 16  # 16 = MATLAB's; 32 = no dilation, about 2x faster
    decoder_channels: int = 256  # ASPP and decoder width; 256 = MATLAB's
    # loss
    class_weighting: str = "median-frequency"  # median-frequency | none
    loss: str = "ce"  # ce = MATLAB's cross-entropy | ce+dice = plus a soft Dice term
    # optimiser
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.005
    head_lr_factor: float = 10.0
    # schedule
    schedule: str = "piecewise"  # piecewise | cosine | onecycle | constant
    lr_drop_factor: float = 0.3
    lr_drop_period: int = 10
    warmup_epochs: int = 0
    # loop
    epochs: int = 30
    batch_size: int = 8
    patience: int = 4  # validations without improvement of validation loss; 0 = off
    augment: tuple[str, ...] = ("seed",)
    backgrounds: str | None = None  # folder of background photos for --augment background
    background_prob: float = 0.5
    camouflage_prob: float = 0.0  # share of new backgrounds recoloured towards the hand's colour
    background_families: tuple[str, ...] = ()  # built-in generators to draw from; () = all
    synthetic_fraction: float = 0.0
    # hardware
    device: str = "auto"  # auto | cpu | gpu | cuda | mps
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    workers: int = -1  # -1 = choose from the number of CPU cores
    precision: str = "auto"  # auto | 32 | bf16-mixed | 16-mixed
    channels_last: bool = True
    # output
    out: str = "runs/run"
    evaluate_test: bool = True
    max_steps: int = -1  # stop after this many iterations (for quick checks); -1 = no limit

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


# Presets set optimisation defaults. `seed` is the MATLAB workflow exactly; `scratch` trains
# well from random initialisation (no ImageNet weights), chosen by measurement (BENCHMARKS.md).
PRESETS: dict[str, dict[str, Any]] = {
    "seed": {},
    "scratch": {
        "backbone_weights": "none",
        # a light network: about 3x faster int8 inference and 2x faster training; hand IoU
        # 0.985 on arsl-bg11 against 0.976 for MATLAB's 16/256 (BENCHMARKS.md, "Light network")
        "output_stride": 32,
        "decoder_channels": 64,
        "optimizer": "adamw",
        "lr": 2e-3,
        "weight_decay": 1e-4,
        "head_lr_factor": 1.0,
        "schedule": "onecycle",
        "class_weighting": "none",  # median-frequency weights over-segment the hand (measured)
        "epochs": 80,
        "patience": 0,
        "augment": ("seed", "scale-rotate", "color"),
    },
}
# `robust`: scratch + background compositing, for photos from other places than the training
# data. Measured on arsl-bg11 with the indoor and skin families held out (BENCHMARKS.md,
# "Hands on any background"); here every family is used.
PRESETS["robust"] = PRESETS["scratch"] | {
    "augment": ("seed", "scale-rotate", "background", "color"),
    "background_prob": 0.7,
    "camouflage_prob": 0.3,
    "epochs": 240,  # 160 lost 0.0052 hand IoU on the plain split, 240 lost 0.0024
}


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Turn YAML/CLI values into the field's type (lists -> tuples)."""
    default = _fields()[name].default
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, str) and name in ("augment",):
        return tuple(value.split(","))
    return value


def _check_keys(d: dict[str, Any], source: str) -> None:
    unknown = sorted(set(d) - set(_fields()))
    if unknown:
        raise HandsegError(
            f"{source}: unknown option(s) {', '.join(unknown)}; "
            f"valid keys are: {', '.join(sorted(_fields()))}"
        )


def load_config(path: str | Path, *, extra_ok: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a YAML config file with the safe loader (never constructs Python objects)."""
    path = Path(path)
    if not path.is_file():
        raise HandsegError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HandsegError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise HandsegError(f"config file {path} must hold a mapping of option: value")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    _check_keys({k: v for k, v in data.items() if k not in extra_ok}, str(path))
    return data


def resolve_config(
    overrides: dict[str, Any] | None = None, config_file: str | Path | None = None
) -> TrainConfig:
    """defaults < preset < config file < overrides (``None`` values in overrides are unset)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(overrides, "options")
    from_file = load_config(config_file) if config_file else {}
    preset = overrides.get("preset") or from_file.get("preset") or TrainConfig.preset
    if preset not in PRESETS:
        raise HandsegError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values: dict[str, Any] = {}
    for layer in (PRESETS[preset], from_file, overrides):
        for k, v in layer.items():
            values[k] = _coerce(k, v)
    values["preset"] = preset
    cfg = TrainConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: TrainConfig) -> None:
    if len(cfg.image_size) != 2 or min(cfg.image_size) < 16:
        raise HandsegError(
            f"image_size must be two integers H W of at least 16, got {cfg.image_size}"
        )
    if cfg.optimizer not in ("sgd", "adamw"):
        raise HandsegError(f"optimizer must be sgd or adamw, got {cfg.optimizer!r}")
    if cfg.schedule not in ("piecewise", "cosine", "onecycle", "constant"):
        raise HandsegError(
            f"schedule must be piecewise, cosine, onecycle or constant, got {cfg.schedule!r}"
        )
    if cfg.class_weighting not in ("median-frequency", "none"):
        raise HandsegError("class_weighting must be median-frequency or none")
    if cfg.loss not in ("ce", "ce+dice"):
        raise HandsegError(f"loss must be ce or ce+dice, got {cfg.loss!r}")

    unknown = [f for f in cfg.background_families if f not in FAMILIES]
    if unknown:
        raise HandsegError(
            f"unknown background famil{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(unknown)}; choose from {', '.join(FAMILIES)}"
        )
    if cfg.output_stride not in (8, 16, 32):
        raise HandsegError(f"output_stride must be 8, 16 or 32, got {cfg.output_stride}")
    if cfg.decoder_channels < 8:
        raise HandsegError(f"decoder_channels must be at least 8, got {cfg.decoder_channels}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise HandsegError("epochs and batch_size must be at least 1")
    if len(cfg.split_fractions) != 3 or abs(sum(cfg.split_fractions) - 1) > 1e-6:
        raise HandsegError(
            f"split_fractions must be three numbers summing to 1, got {cfg.split_fractions}"
        )


def save_config(cfg: TrainConfig | dict[str, Any], path: str | Path) -> None:

    d = cfg.to_dict() if isinstance(cfg, TrainConfig) else cfg
    atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))
