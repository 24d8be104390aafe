"""The training configuration: one dataclass, presets, YAML files and command-line overrides.

Resolution order (later wins): dataclass defaults < preset < ``--config FILE`` < flags.
The resolved configuration is written to ``RUN/config.yaml`` and stored in ``model.pt``.

Each option is declared once, on its field: the default, and in the field's ``metadata``
the help text, the choices (checked by :func:`resolve_config`, offered by the command line)
and, where it is not ``--field-name``, the flag's spelling. ``handseg train`` generates its
flags from these fields, so a new option is one new field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from handseg.core.constants import CLASS_NAMES, DETECTOR_MODES, DETECTORS, FAMILIES, REFINERS
from handseg.core.device import (
    DEVICES,
    PRECISION_ALIASES,
    TRAIN_PRECISIONS,
    canonical_precision,
)
from handseg.core.errors import HandsegError
from handseg.core.io import atomic_write_text

__all__ = ["PRESETS", "TrainConfig", "load_config", "resolve_config", "save_config"]


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
# `robust`: scratch + background compositing. Measured on arsl-bg11 hands composited onto
# held-out background families (BENCHMARKS.md, "Hands on any background"), which share the
# compositing's cues; on real photos from other places it does not generalise (hands-wild
# 0.262 against 0.370 for scratch, issue 16): the `hands` preset is the one for those.
PRESETS["robust"] = PRESETS["scratch"] | {
    "augment": ("seed", "scale-rotate", "background", "color"),
    "background_prob": 0.7,
    "camouflage_prob": 0.3,
    "epochs": 240,  # 160 lost 0.0052 hand IoU on the plain split, 240 lost 0.0024
}
# `demo`: scratch for `handseg demo`'s few minutes of CPU time on small synthetic photos.
# Output stride 16 (the preset's 32 leaves a 4 x 5 feature map at 128 x 160; 16 gave hand
# IoU 0.816 against 0.759 on a fixed evaluation set, 0.784 against 0.783 with another seed),
# twice the optimiser steps per epoch (batch 4), flip/translate only (scale-rotate and colour
# augmentation slow fitting more than they help at 1500 steps), plain cross-entropy (class
# weights lowered the hand IoU at this budget) and decoded photos kept in memory.
# `hands`: the one pipeline for photos from anywhere (issue 24): the hand detector finds the
# hands, and a crop segmenter (MediaPipe's landmark network as the encoder, frozen; a light
# decoder) trained on canonical crops of the user's hands segments each one. Chosen on
# hands-wild (BENCHMARKS.md, "One learned pipeline"): a frozen encoder beat fine-tuning
# (0.794 against 0.784 at 6 epochs), bare forearms up to a sleeve cuff labelled hand
# (cuff_prob 0.7) beat none (0.794 against 0.775), the landmark prior as a decoder input
# helped a little (0.801), a 0.5 crop margin did not help. Ninth session (BENCHMARKS.md,
# "Ninth session"): a quarter of the crops' hands recoloured to other skin tones, a quarter
# of the crops synthetic hands and an EMA of the weights: 0.787 -> 0.804 (luthaihoc 0.461 ->
# 0.498, BF 0.860 -> 0.882); another hand pasted into the crop hurt (0.763).
PRESETS["hands"] = {
    "detector": "mediapipe",
    "refine": "crops",
    "detector_mode": "accurate",
    "optimizer": "adamw",
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "head_lr_factor": 1.0,
    "schedule": "onecycle",
    "class_weighting": "none",
    "epochs": 12,
    "patience": 0,
    "batch_size": 8,
    "augment": ("background", "color", "blur-noise"),
    "background_prob": 0.6,
    "camouflage_prob": 0.3,
    "cuff_prob": 0.7,
    "crop_prior": True,
    "crop_tone": 0.25,
    "synthetic_fraction": 0.25,
    "ema_decay": 0.99,
}
PRESETS["demo"] = PRESETS["scratch"] | {
    "image_size": (128, 160),
    "epochs": 25,  # 50 took 19.0 min on 2 slow shared cores (IoU 0.865); 25: 8.8 min, 0.821
    "output_stride": 16,
    "batch_size": 4,
    "augment": ("seed",),
    "class_weighting": "none",
    "cache": True,
}


def _option(default: Any, help: str = "", **cli: Any) -> Any:
    """A :class:`TrainConfig` field with its command-line declaration in ``metadata``.

    ``help`` may say ``{default}`` (filled in from ``default``). ``cli`` keys: ``group``
    (the --help section), ``choices`` (checked by :func:`resolve_config`; for a sequence,
    each item, named ``item`` in the error), ``metavar``, ``flag`` (a spelling other than
    ``--field-name``, with ``action``, e.g. ``--no-test`` and ``store_false``), ``aliases``
    (more spellings) and ``cli=False`` (no flag: config files only).
    """
    return field(default=default, metadata={"help": help, **cli})


_DATA, _OPT, _AUG, _HW = "data", "optimisation", "augmentation", "hardware"
_CROPS = "crop segmenter (--preset hands)"
_PIPE = "prediction pipeline (recorded in model.pt; handseg predict uses it)"


@dataclass
class TrainConfig:
    """Every training option. Field names are the YAML keys; flags use dashes."""

    # data
    images: str | None = _option(None, "folder of photos", group=_DATA)
    masks: str | None = _option(
        None,
        "folder of masks (white/bright = hand), or a COCO JSON, a folder of LabelMe JSON "
        "files or a CVAT mask zip (told from the content)",
        group=_DATA,
    )
    split: str | None = _option(
        None, "reuse an existing split.json instead of drawing a new split", group=_DATA
    )
    image_size: tuple[int, int] = _option(
        (720, 960),  # (H, W) the network trains at
        "training size, height width (default {default})",
        group=_DATA,
        metavar=("H", "W"),
    )
    split_fractions: tuple[float, float, float] = _option(
        (0.6, 0.2, 0.2), "default {default}", group=_DATA, metavar=("TRAIN", "VAL", "TEST")
    )
    seed: int = _option(
        0, "seed for the split, initialisation and shuffling (default {default})", group=_DATA
    )
    classes: tuple[str, str] = _option(
        CLASS_NAMES, "class names", group=_DATA, metavar=("BACKGROUND", "HAND")
    )
    hand_value: int | None = _option(
        None, "mask value that means hand, for masks with several labels", group=_DATA
    )
    cache: bool = _option(
        False,
        "keep decoded, resized images in memory between epochs (faster epochs; memory "
        "grows with the data set, so leave it off for large sets; default {default})",
        group=_DATA,
    )
    # network
    preset: str = _option(
        "seed", "option set (default {default})", group=_OPT, choices=tuple(sorted(PRESETS))
    )
    backbone_weights: str = _option(
        "auto",
        "auto | imagenet | none | PATH to a torchvision ResNet-18 state dict (default {default})",
        group=_OPT,
        metavar="W",
    )
    output_stride: int = _option(
        16,
        "encoder output stride: 16 = MATLAB's (dilated last stage), 32 = about 2x faster "
        "(default: the preset's; scratch 32)",
        group=_OPT,
        choices=(8, 16, 32),
    )
    decoder_channels: int = _option(
        256,
        "width of the ASPP branches and decoder convolutions: 256 = MATLAB's "
        "(default: the preset's; scratch 64)",
        group=_OPT,
        metavar="N",
    )
    # loss
    class_weighting: str = _option(
        "median-frequency", group=_OPT, choices=("median-frequency", "none")
    )
    loss: str = _option(
        "ce",
        "training loss: ce = pixel cross-entropy (MATLAB's); ce+dice adds a soft Dice "
        "term, which optimises overlap directly (validation loss stays cross-entropy)",
        group=_OPT,
        choices=("ce", "ce+dice"),
    )
    # optimiser
    optimizer: str = _option("sgd", group=_OPT, choices=("sgd", "adamw"))
    lr: float = _option(1e-3, "initial learning rate of the backbone", group=_OPT)
    momentum: float = _option(0.9, group=_OPT)
    weight_decay: float = _option(0.005, "L2 factor (SGD) / decoupled decay (AdamW)", group=_OPT)
    head_lr_factor: float = _option(10.0, "learning-rate factor of the new layers", group=_OPT)
    # schedule
    schedule: str = _option(
        "piecewise", group=_OPT, choices=("piecewise", "cosine", "onecycle", "constant")
    )
    lr_drop_factor: float = _option(0.3, group=_OPT)
    lr_drop_period: int = _option(10, "epochs between drops", group=_OPT)
    warmup_epochs: int = _option(0, group=_OPT)
    ema_decay: float = _option(
        0.0,
        "keep an exponential moving average of the weights (this decay per step), validate "
        "and save it; 0 = off (default {default}; --preset hands: 0.99)",
        group=_OPT,
        metavar="D",
    )
    # loop
    epochs: int = _option(30, "maximum epochs", group=_OPT)
    batch_size: int = _option(8, "mini-batch size per device", group=_OPT)
    patience: int = _option(  # validations without improvement of validation loss
        4, "stop after N validations without improvement (0 = off)", group=_OPT
    )
    augment: tuple[str, ...] = _option(
        ("seed",),
        "seed (flip + translate 10 px), flip, translate, scale-rotate, color, "
        "blur-noise, background, none",
        group=_AUG,
        metavar="NAME",
    )
    backgrounds: str | None = _option(
        None, "your own background photos for --augment background", group=_AUG, metavar="DIR"
    )
    background_prob: float = _option(
        0.5, "probability of a new background", group=_AUG, metavar="P"
    )
    camouflage_prob: float = _option(
        0.0,
        "share of new backgrounds recoloured towards the hand's own skin colour: hard "
        "negatives such as skin-toned walls or a face behind the hand (default {default})",
        group=_AUG,
        metavar="P",
    )
    bare_arm_share: float = _option(
        0.5,
        "share of the arms painted under composited hands that are bare skin, labelled "
        "background (the rest are sleeves); 0 for masks that run to the sleeve cuff "
        "(default {default})",
        group=_AUG,
        metavar="P",
    )
    cuff_prob: float = _option(
        0.0,
        "share of those bare arms that are bare only up to a sleeve cuff, the skin before "
        "the cuff labelled hand: for masks that mark the hand up to the sleeve, as "
        "hands-wild's do (default {default})",
        group=_AUG,
        metavar="P",
    )
    background_families: tuple[str, ...] = _option(
        (),  # () = all
        "built-in backgrounds for --augment background and the synthetic hands: "
        f"{', '.join(FAMILIES)} (default all)",
        group=_AUG,
        metavar="NAME",
        choices=FAMILIES,
        item=("background family", "background families"),
    )
    synthetic_fraction: float = _option(
        0.0,
        "share of synthetic hands mixed into training (with --refine crops: of the crops; "
        "--preset hands: 0.25)",
        group=_AUG,
    )
    # the crop segmenter (refine crops)
    crop_size: int = _option(
        224,
        "with --refine crops: side of the canonical hand crop, in pixels (the landmark "
        "network's own input is 224; default {default})",
        group=_CROPS,
        metavar="PX",
    )
    crop_margin: float = _option(
        0.3,
        "with --refine crops: free border around the hand's landmarks in the crop, as a share "
        "of their extent on each side (default {default})",
        group=_CROPS,
        metavar="M",
    )
    crop_decoder: tuple[int, ...] = _option(
        (96, 64, 48, 32, 24, 16),
        "with --refine crops: decoder widths, one per encoder scale from the coarsest (7 px "
        "at 224) to the finest, then the full-resolution head (default {default})",
        group=_CROPS,
        metavar="N",
    )
    crop_prior: bool = _option(
        False,
        "with --refine crops: give the decoder the detector's landmarks drawn as an extra "
        "channel (default {default})",
        group=_CROPS,
    )
    encoder_init: str = _option(
        "mediapipe",
        "with --refine crops: mediapipe = start from MediaPipe's hand-landmark network; "
        "random = the same network with random weights (the control that shows what the "
        "pre-training is worth) (default {default})",
        group=_CROPS,
        choices=("mediapipe", "random"),
    )
    encoder_lr_factor: float = _option(
        0.0,
        "with --refine crops: the encoder's learning rate as a factor of --lr; 0 freezes it "
        "(default {default})",
        group=_CROPS,
        metavar="F",
    )
    crop_zoom: float = _option(
        0.0,
        "with --refine crops: share of training crops zoomed in so the hand runs past the "
        "crop's border (hands close to the camera whose landmarks cover only the fingers; "
        "default {default})",
        group=_CROPS,
        metavar="P",
    )
    crop_paste: float = _option(
        0.0,
        "with --refine crops: share of training crops into which another training hand is "
        "pasted at a random size, angle and place, labelled hand (every hand in a crop is "
        "segmented, not only the detected one; default {default})",
        group=_CROPS,
        metavar="P",
    )
    crop_tone: float = _option(
        0.0,
        "with --refine crops: share of training crops whose hand is recoloured to another "
        "skin tone, shading kept (light to very dark; default {default}; --preset hands: 0.25)",
        group=_CROPS,
        metavar="P",
    )
    crop_grow: int = _option(
        0,
        "with --refine crops, at prediction (recorded in model.pt): how many times a hand "
        "whose mask runs into its crop's border is segmented again in a crop up to twice as "
        "large (default {default})",
        group=_CROPS,
        metavar="N",
    )
    crops_per_epoch: int = _option(
        400,
        "with --refine crops: random training crops per epoch (default {default})",
        group=_CROPS,
        metavar="N",
    )
    # hardware
    detector: str = _option(
        "none",
        "none = segment the whole image with the network (for photos like the training "
        "photos); mediapipe = find hands first (MediaPipe's hand models, the 'hands' extra), "
        "then segment only them: for photos from other places (default {default})",
        group=_PIPE,
        choices=DETECTORS,
    )
    refine: str = _option(
        "grabcut",
        "with --detector mediapipe: how found hands become masks: crops (a crop segmenter "
        "trained here on canonical hand crops: --preset hands), grabcut (no training), "
        "color (fast), landmarks, network (a whole-image network kept inside the hand "
        "boxes) (default {default})",
        group=_PIPE,
        choices=REFINERS,
    )
    detector_mode: str = _option(
        "accurate",
        "hand detector settings for photos: accurate (finds small and cut-off hands), fast, "
        "or thorough (accurate + a slower window search for a second hand the palm model "
        "missed, e.g. a fist seen from the back); video always runs fast, following hands "
        "from frame to frame (default {default})",
        group=_PIPE,
        choices=DETECTOR_MODES,
    )
    device: str = _option("auto", f"{' | '.join(DEVICES)} (default {{default}})", group=_HW)
    devices: int = _option(1, "devices (processes) per node", group=_HW)
    num_nodes: int = _option(1, group=_HW)
    strategy: str = _option("auto", "auto | ddp | ddp_spawn ...", group=_HW)
    workers: int = _option(-1, "data-loading workers (-1 = choose)", group=_HW)
    precision: str = _option(
        "auto",
        f"{' | '.join(TRAIN_PRECISIONS)} (older spellings: {', '.join(PRECISION_ALIASES)})",
        group=_HW,
    )
    channels_last: bool = _option(True, cli=False)
    # output
    out: str = _option("runs/run", "run folder (default {default})")
    evaluate_test: bool = _option(
        True,
        "skip the test-split evaluation at the end",
        flag="--no-test",
        action="store_false",
    )
    max_steps: int = _option(  # for quick checks
        -1, "stop after N iterations (quick checks)", group=_OPT
    )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


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


def _one_of(choices: tuple[Any, ...]) -> str:
    """(a, b, c) -> 'a, b or c'."""
    words = [str(c) for c in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _check_choices(cfg: TrainConfig) -> None:
    """Every field with declared ``choices`` holds one of them (a sequence: each item)."""
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        if choices is None:
            continue
        value = getattr(cfg, f.name)
        if not isinstance(value, tuple):
            if value not in choices:
                raise HandsegError(f"{f.name} must be {_one_of(choices)}, got {value!r}")
            continue
        unknown = [str(v) for v in value if v not in choices]
        if unknown:
            one, many = f.metadata.get("item", (f.name, f.name))
            raise HandsegError(
                f"unknown {one if len(unknown) == 1 else many} {', '.join(unknown)}; "
                f"choose from {', '.join(map(str, choices))}"
            )


def _validate(cfg: TrainConfig) -> None:
    if len(cfg.image_size) != 2 or min(cfg.image_size) < 16:
        raise HandsegError(
            f"image_size must be two integers H W of at least 16, got {cfg.image_size}"
        )
    _check_choices(cfg)
    canonical_precision(cfg.precision, TRAIN_PRECISIONS)  # any spelling of the vocabulary
    if cfg.decoder_channels < 8:
        raise HandsegError(f"decoder_channels must be at least 8, got {cfg.decoder_channels}")
    if cfg.refine == "crops" and cfg.detector != "mediapipe":
        raise HandsegError("--refine crops needs --detector mediapipe (the crops come from it)")
    if cfg.crop_size < 32 or cfg.crop_size % 32 or cfg.crops_per_epoch < 1:
        raise HandsegError(
            f"crop_size must be a multiple of 32 (at least 32) and crops_per_epoch at least 1, "
            f"got {cfg.crop_size} / {cfg.crops_per_epoch}"
        )
    if len(cfg.crop_decoder) != 6 or min(cfg.crop_decoder) < 4 or not 0 <= cfg.crop_margin <= 2:
        raise HandsegError(
            f"crop_decoder must be six widths of at least 4 and crop_margin within 0..2, got "
            f"{cfg.crop_decoder} / {cfg.crop_margin}"
        )
    shares = {"crop_zoom": cfg.crop_zoom, "crop_paste": cfg.crop_paste, "crop_tone": cfg.crop_tone}
    if not all(0 <= v <= 1 for v in shares.values()) or not 0 <= cfg.crop_grow <= 4:
        raise HandsegError(
            f"{', '.join(shares)} must be within 0..1 and crop_grow within 0..4, got "
            f"{' / '.join(str(v) for v in shares.values())} / {cfg.crop_grow}"
        )
    if not 0 <= cfg.ema_decay < 1:
        raise HandsegError(f"ema_decay must be within 0..1 (0 = off), got {cfg.ema_decay}")
    if cfg.encoder_lr_factor < 0:
        raise HandsegError(f"encoder_lr_factor must be >= 0, got {cfg.encoder_lr_factor}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise HandsegError("epochs and batch_size must be at least 1")
    if len(cfg.split_fractions) != 3 or abs(sum(cfg.split_fractions) - 1) > 1e-6:
        raise HandsegError(
            f"split_fractions must be three numbers summing to 1, got {cfg.split_fractions}"
        )


def save_config(cfg: TrainConfig | dict[str, Any], path: str | Path) -> None:
    """Write ``cfg`` (or a dict of it plus recorded facts) as YAML, atomically."""
    d = cfg.to_dict() if isinstance(cfg, TrainConfig) else cfg
    atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))
