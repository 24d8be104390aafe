"""Evaluate a model (or another tool's masks) against ground truth, like MATLAB's
``evaluateSemanticSegmentation``: counts accumulate over the whole set at each ground-truth
mask's own resolution; BF scores are per image and averaged over images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from handseg.errors import HandsegError
from handseg.metrics import SegmentationMetrics, to_json, write_per_image_csv

__all__ = ["evaluate_model", "evaluate_mask_folders", "write_evaluation"]

log = logging.getLogger(__name__)


def evaluate_model(
    predictor,
    pairs: Sequence[tuple[Path, Path]],
    *,
    hand_value: int | None = None,
    progress: bool = True,
    desc: str = "evaluate",
) -> dict[str, Any]:
    """Predict every image and score it against its mask at the mask's resolution.

    The image is read at full size; its prediction is produced directly at the mask's size
    (the mask may be smaller than the photo, as in arsl-bg11).
    """
    from handseg.data import read_image, read_mask

    if not pairs:
        raise HandsegError("nothing to evaluate: the set holds no image/mask pairs")
    acc = SegmentationMetrics(predictor.classes)
    for image_path, mask_path in tqdm(pairs, desc=desc, unit="img", disable=not progress):
        image = read_image(image_path)
        gt = read_mask(mask_path, hand_value=hand_value)
        _check_aspect(image.shape[:2], gt.shape[:2], image_path, mask_path)
        pred = predictor.predict(image, out_size=gt.shape[:2])
        acc.update(pred, gt, image=Path(image_path).name, mask=Path(mask_path).name)
    return acc.compute()


def _check_aspect(a: tuple[int, int], b: tuple[int, int], pa: Path, pb: Path) -> None:
    ra, rb = a[1] / a[0], b[1] / b[0]
    if abs(ra - rb) / rb > 0.01:
        raise HandsegError(
            f"{Path(pb).name} is {b[1]}x{b[0]} but {Path(pa).name} is {a[1]}x{a[0]}: "
            "the aspect ratios differ, so the mask cannot be mapped onto the image"
        )


def evaluate_mask_folders(
    pred_dir: str | Path,
    masks_dir: str | Path,
    *,
    class_names: Sequence[str] = ("background", "hand"),
    hand_value: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score masks written by any tool (``pred_dir``) against ground truth (``masks_dir``).

    Files are paired as the data layer pairs images and masks. A predicted mask whose size
    differs from its ground truth is resized (nearest) when the aspect ratio matches.
    """
    from handseg.data import find_pairs, fit_mask_to_image, read_mask

    pairs = find_pairs(pred_dir, masks_dir)
    log.info("paired %d predicted masks with ground truth (%s)", len(pairs), pairs.rule)
    acc = SegmentationMetrics(class_names)
    for pred_path, gt_path in tqdm(pairs, desc="evaluate", unit="img", disable=not progress):
        gt = read_mask(gt_path, hand_value=hand_value)
        pred = read_mask(pred_path)
        if pred.shape != gt.shape:
            pred = fit_mask_to_image(pred, gt.shape[:2], name=str(pred_path))
        acc.update(pred, gt, image=Path(pred_path).name, mask=Path(gt_path).name)
    return acc.compute()


def write_evaluation(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``per-image.csv`` (worst first) and ``confusion.png``."""
    from handseg.viz import confusion_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "per_image": out / "per-image.csv",
        "confusion": out / "confusion.png",
    }
    paths["metrics"].write_text(to_json(result), encoding="utf-8")
    write_per_image_csv(result, paths["per_image"])
    names = list(result.get("classes", {}).keys()) or ["background", "hand"]
    confusion_figure(result, names, paths["confusion"])
    return paths


def read_metrics(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def headline(result: dict[str, Any]) -> str:
    """One line: hand IoU, global accuracy, mean BF."""
    ds = result["dataset"]
    hand = result["classes"].get("hand") or list(result["classes"].values())[-1]
    return (
        f"hand IoU {_f(hand['IoU'])}  GlobalAccuracy {_f(ds['GlobalAccuracy'])}  "
        f"MeanIoU {_f(ds['MeanIoU'])}  MeanBFScore {_f(ds['MeanBFScore'])}"
    )


def _f(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"
