"""``RUN/MODEL_CARD.md``: what was trained, on what, how well, and how to use it.

Written at the end of :func:`handseg.train.run.train` and by ``handseg card RUN``; the
report shows it. Every fact is read from the run folder (:class:`RunDir`): the model's own
card in ``model.pt`` (:class:`~handseg.model.card.ModelCard`), ``config.yaml``,
``split.json``, ``metrics.csv``, ``test/metrics.json`` and the evaluations of other data
sets kept as ``RUN/eval-<name>/metrics.json`` (``handseg evaluate --out RUN/eval-<name>``).
The text is the jinja2 template ``templates/model_card.md.j2``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import torch

from handseg.core.constants import CLASS_NAMES, __version__
from handseg.core.errors import HandsegError
from handseg.core.imaging import read_mask
from handseg.core.io import atomic_write_text
from handseg.core.mask_sources import FORMAT_NAMES, detect_format
from handseg.core.rundir import RunDir
from handseg.data.dataset import label_counts
from handseg.data.split import load_split
from handseg.model.card import ModelCard
from handseg.model.checkpoint import read_model_file
from handseg.model.crop_net import CropNetConfig

log = logging.getLogger(__name__)

EVAL_PREFIX = "eval-"
"""``RUN/eval-<name>/``: an evaluation of another data set that the card lists."""
_OPTIONS = ("image_size", "batch_size", "optimizer", "lr", "schedule", "loss",
            "class_weighting", "augment", "synthetic_fraction", "seed", "device", "precision",
            "patience", "crop_size", "crop_prior", "encoder_init", "encoder_lr_factor",
            "crops_per_epoch", "crop_tone", "ema_decay", "backgrounds")  # fmt: skip


def hardware(device: str = "cpu") -> str:
    """What the training ran on, in words: the GPU's name, or the CPU and its cores."""
    if device != "cpu" and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"{torch.cuda.get_device_name(0)} x {n} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {cpu}, {cores} core(s) available"


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "not recorded"
    s = float(seconds)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min ({s:.0f} s)"


def _class_shares(run: RunDir, hand_value: Any) -> tuple[list[dict[str, Any]], str]:
    """Per subset: masks and the share of each class's pixels; or ([], why not)."""
    if not run.split.is_file():
        return [], "no split.json"
    try:
        split = load_split(run.split)
    except HandsegError as exc:
        return [], f"the data could not be read: {exc}"
    rows = []
    for subset, pairs in split.items():
        if not pairs:
            continue
        try:
            masks = (read_mask(m, hand_value=hand_value) for _, m in pairs)
            pixel, _ = label_counts(masks, num_classes=len(CLASS_NAMES))
        except (HandsegError, ValueError) as exc:
            return [], f"the masks could not be read: {exc}"
        total = max(int(pixel.sum()), 1)
        rows.append({"subset": subset, "masks": len(pairs), "shares": (pixel / total).tolist()})
    return rows, ""


def _epochs(card: ModelCard, run: RunDir, requested: Any) -> str:
    run_ = card.metrics.get("epochs_run")
    if run_ is None and run.history.is_file():
        with open(run.history, newline="") as f:
            epochs = [int(r["epoch"]) for r in csv.DictReader(f) if r.get("epoch")]
        run_ = max(epochs, default=None)
    text = f"{run_ if run_ is not None else '?'} of {requested if requested else '?'}"
    if card.metrics.get("stopped_early"):
        text += " (stopped early: validation loss no longer improved)"
    return text


def _test(run: RunDir, classes: tuple[str, ...]) -> dict[str, Any] | None:
    if not run.test_metrics.is_file():
        return None
    doc = json.loads(run.test_metrics.read_text())
    return {
        "num_images": doc.get("num_images", "?"),
        "dataset": list(doc.get("dataset", {}).items()),
        "classes": [{"name": c} | doc["classes"][c] for c in classes if c in doc["classes"]],
    }


def _other_data(run: RunDir, hand: str) -> list[dict[str, Any]]:
    """The evaluations kept in ``RUN/eval-<name>/metrics.json``."""
    out = []
    for path in sorted(run.path.glob(f"{EVAL_PREFIX}*/metrics.json")):
        try:
            doc = json.loads(path.read_text())
            out.append(
                {
                    "name": path.parent.name[len(EVAL_PREFIX) :],
                    "num_images": doc.get("num_images", "?"),
                    "hand_iou": float(doc["classes"][hand]["IoU"]),
                    "bf": float(doc["classes"][hand].get("MeanBFScore", float("nan"))),
                    "where": path.parent.relative_to(run.path).as_posix() + "/",
                }
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping %s in the model card: %s", path, exc)
    return out


def _data_name(images: Any) -> str:
    """``arsl-bg11`` for ``.../arsl-bg11/images``: the folder, or its parent when generic."""
    if not images:
        return ""
    path = Path(str(images))
    return path.parent.name if path.name.lower() in ("images", "photos", "img") else path.name


def _mask_format(masks: Any) -> str | None:
    try:
        return FORMAT_NAMES[detect_format(masks)] if masks else None
    except HandsegError:
        return None


def _network(card: ModelCard) -> str:
    """The architecture in words (a crop segmenter's stored encoder program is left out)."""
    arch = card.architecture
    if isinstance(arch, CropNetConfig):
        return (
            f"crop segmenter: encoder {arch.encoder} ({arch.depth} scales), U-Net decoder "
            f"{'/'.join(map(str, arch.decoder_channels[-arch.depth :]))} channels, crops of "
            f"{arch.crop_size} px, landmark prior {'on' if arch.prior else 'off'}"
        )
    return ", ".join(f"{k} {v}" for k, v in arch.to_dict().items())


def _pipeline(cfg: dict[str, Any]) -> str:
    """What ``handseg predict --model`` runs with this model (its recorded pipeline)."""
    if cfg.get("detector", "none") == "none":
        return "the whole-image network (`--detector none`): for photos like the training photos"
    refine = cfg.get("refine", "grabcut")
    what = (
        "this crop segmenter on each hand's crop" if refine == "crops" else f"the {refine} refiner"
    )
    return f"hand detector (MediaPipe, {cfg.get('detector_mode', 'accurate')}) + {what}"


def card_context(run: str | Path | RunDir) -> dict[str, Any]:
    """Everything the template shows, from the run folder."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    if not run.model.is_file():
        raise HandsegError(f"{run} holds no model.pt: not a finished training run")
    _, card = read_model_file(run.model)
    cfg = run.read_config() or dict(card.train_config)
    split_doc = json.loads(run.split.read_text()) if run.split.is_file() else None
    shares, why = _class_shares(run, cfg.get("hand_value"))
    sizes = [len(split_doc.get(s, [])) for s in ("train", "val", "test")] if split_doc else []
    images = cfg.get("images") or (split_doc or {}).get("images_dir")
    masks = cfg.get("masks") or (split_doc or {}).get("masks_dir")
    synthetic = cfg.get("synthetic_fraction")
    return {
        "name": run.path.resolve().name,
        "run_path": run.path.as_posix(),
        "version": __version__,
        "written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "classes": card.classes,
        "network": _network(card),
        "pipeline": _pipeline(cfg),
        "crops": card.is_crop_segmenter,
        "preset": cfg.get("preset") or "none (options only)",
        "input_size": " x ".join(str(v) for v in card.input_size),
        "mean": ", ".join(f"{v:g}" for v in card.mean),
        "std": ", ".join(f"{v:g}" for v in card.std),
        "backbone": card.backbone_weights,
        "model_size": f"{run.model.stat().st_size / 2**20:.1f} MiB",
        "images": images,
        "images_name": _data_name(images),
        "masks": masks,
        "mask_format": _mask_format(masks),
        "synthetic": f"{float(synthetic):.0%} of each batch" if synthetic else None,
        "split": {
            "sizes": sizes,
            "seed": split_doc.get("seed"),
            "fractions": split_doc.get("fractions"),
        }
        if split_doc
        else None,  # fmt: skip
        "shares": shares,
        "shares_why": why,
        "train_count": sizes[0] if sizes else "?",
        "epochs": _epochs(card, run, cfg.get("epochs")),
        "train_time": _duration(card.metrics.get("train_time_s")),
        "hardware": card.metrics.get("hardware") or "not recorded",
        "options": [(k, cfg[k]) for k in _OPTIONS if cfg.get(k) is not None],
        "best_val_loss": card.metrics.get("best_val_loss"),
        "test": _test(run, card.classes),
        "others": _other_data(run, card.classes[1]),
    }


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("handseg.train", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters["pct"] = lambda v: f"{100 * float(v):.1f} %" if np.isfinite(v) else "n/a"
    return env


def render_model_card(run: str | Path | RunDir) -> str:
    """The Markdown text of ``RUN/MODEL_CARD.md``."""
    return _environment().get_template("model_card.md.j2").render(**card_context(run))


def write_model_card(run: str | Path | RunDir) -> Path:
    """Write ``RUN/MODEL_CARD.md`` (atomically) and return its path."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    return atomic_write_text(run.model_card, render_model_card(run))
