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

from handseg.core.constants import CLASS_NAMES, SUBSETS
from handseg.core.errors import HandsegError
from handseg.core.imaging import (
    check_aspect,
    read_image,
    read_mask,
    resize_mask,
    short_list,
)
from handseg.core.io import atomic_write_text
from handseg.core.outputs import split_predict_folder
from handseg.core.viz import comparison_figure, comparison_image, confusion_figure
from handseg.data.pairs import list_masks, pair_files
from handseg.data.split import load_split
from handseg.eval.metrics import SegmentationMetrics, to_json, write_per_image_csv

log = logging.getLogger(__name__)

"""``handseg predict`` writes ``<stem>_mask.png`` and ``<stem>_overlay.jpg`` side by side
(:func:`handseg.infer.media.predict_paths`)."""


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

    if not pairs:
        raise HandsegError("nothing to evaluate: the set holds no image/mask pairs")
    acc = SegmentationMetrics(predictor.classes)
    for image_path, mask_path in tqdm(pairs, desc=desc, unit="img", disable=not progress):
        image = read_image(image_path)
        gt = read_mask(mask_path, hand_value=hand_value)
        _check_mask_fits_image(gt, image, mask_path, image_path)
        pred = predictor.predict(image, out_size=gt.shape[:2])
        acc.update(pred, gt, image=Path(image_path).name, mask=Path(mask_path).name)
    return acc.compute()


def _check_mask_fits_image(
    mask: np.ndarray, image: np.ndarray, mask_path: str | Path, image_path: str | Path
) -> None:
    """The prediction is made at the mask's size, so the photo must share its aspect."""
    target = f"its image {Path(image_path).name}"
    check_aspect(mask.shape[:2], image.shape[:2], Path(mask_path).name, target=target)


def evaluate_split(
    predictor,
    run: str | Path,
    subset: str = "test",
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    hand_value: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate one subset (``train``, ``val`` or ``test``) of a training run's
    ``RUN/split.json``; the folders stored in the split are used unless overridden."""

    if subset not in SUBSETS:
        raise HandsegError(f"unknown split {subset!r}: choose one of {', '.join(SUBSETS)}")
    run = Path(run)
    split_file = run / "split.json" if run.is_dir() else run
    pairs = load_split(split_file, images_dir, masks_dir)[subset]
    if not pairs:
        raise HandsegError(f"the {subset} split of {split_file} is empty; choose another split")
    return evaluate_model(
        predictor, pairs, hand_value=hand_value, progress=progress, desc=f"{subset} split"
    )


def evaluate_mask_folders(
    pred_dir: str | Path,
    masks_dir: str | Path,
    *,
    class_names: Sequence[str] = CLASS_NAMES,
    hand_value: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score masks written by any tool (``pred_dir``) against ground truth (``masks_dir``).

    ``pred_dir`` may be the folder ``handseg predict`` wrote: the overlays it puts beside
    its masks (``a_overlay.jpg`` and ``a_hand0.png`` next to ``a_mask.png``) are left out. Files are paired as
    the data layer pairs images and masks (:func:`~handseg.data.pairs.pair_files`), with
    the ground truth in the images' place: by name with a mask suffix allowed on either
    side (``a_mask.png`` pairs with ``a.png`` and ``a.png`` with ``a_mask.png``), else by
    natural order when no name matches and the counts agree; a folder pairs with itself by
    name. Non-images in either folder are skipped with a warning. ``hand_value`` applies
    to the ground truth. A predicted mask whose size differs from its ground truth is
    resized (nearest) when the aspect ratio matches, else :class:`HandsegError` names the
    file.
    """
    pairs = _prediction_pairs(Path(pred_dir), Path(masks_dir))
    acc = SegmentationMetrics(class_names)
    for pred_path, gt_path in tqdm(pairs, desc="evaluate", unit="img", disable=not progress):
        gt = read_mask(gt_path, hand_value=hand_value)
        pred = read_mask(pred_path)
        target = f"its ground truth {gt_path.name}"
        check_aspect(pred.shape[:2], gt.shape[:2], pred_path.name, target=target)
        acc.update(resize_mask(pred, gt.shape[:2]), gt, image=pred_path.name, mask=gt_path.name)
    return acc.compute()


def _prediction_pairs(pred_dir: Path, masks_dir: Path) -> list[tuple[Path, Path]]:
    """(predicted mask, ground-truth mask) pairs of two folders; see
    :func:`evaluate_mask_folders`."""
    # either side: a folder, or an annotation tool's export (COCO, LabelMe, CVAT)
    gts = list_masks(masks_dir, what="ground-truth masks")[1]
    if pred_dir.resolve() == masks_dir.resolve():  # a folder against itself
        return [(m, m) for m in gts]
    preds = _without_overlays(list_masks(pred_dir, what="predicted masks")[1])
    pairs = pair_files(
        gts, preds, images_dir=masks_dir, masks_dir=pred_dir,
        kinds=("ground-truth mask", "prediction"),
    )  # fmt: skip
    return [(p, g) for g, p in pairs]


def _without_overlays(paths: list[Path]) -> list[Path]:
    """``paths`` less the overlays and per-hand masks ``handseg predict`` writes beside its
    masks (:func:`~handseg.core.outputs.split_predict_folder`)."""
    found = split_predict_folder(paths)
    side = found.overlays + [p for hands in found.instances.values() for p in hands]
    if side:
        log.info(
            "left out %d overlay(s) and per-hand mask(s) that handseg predict wrote beside "
            "its masks: %s",
            len(side),
            short_list(side),
        )
    return found.masks


def compare(
    predictor,
    image_path: str | Path,
    mask_path: str | Path,
    out_path: str | Path,
    *,
    split_errors: bool = False,
    hand_value: int | None = None,
) -> dict[str, Any]:
    """The seed's test figure for one photo: the prediction overlaid on the photo, and the
    comparison with the ground truth (hand found white, background black, mismatch green;
    with ``split_errors`` false hand green and missed hand magenta).

    The prediction is made at the mask's resolution and scored there: hand IoU and BF
    (the image's mean over classes, as in ``per-image.csv``) go into the title.

    Returns:
        ``{"image", "mask", "out", "hand_iou", "bf", "class_bf", "accuracy",
        "pred": (h, w) uint8 {0, 1}, "gt": (h, w) uint8, "comparison": (h, w, 3) uint8}``.
    """

    image = read_image(image_path)
    gt = read_mask(mask_path, hand_value=hand_value)
    _check_mask_fits_image(gt, image, mask_path, image_path)
    pred = predictor.predict(image, out_size=gt.shape[:2])
    classes = getattr(predictor, "classes", CLASS_NAMES)
    record = SegmentationMetrics(classes).update(
        pred, gt, image=Path(image_path).name, mask=Path(mask_path).name
    )
    out = comparison_figure(
        image,
        pred,
        gt,
        out_path,
        title=Path(image_path).name,
        iou=record["hand_iou"],
        bf=record["bf"],
        split_errors=split_errors,
    )
    return record | {
        "out": out,
        "pred": pred,
        "gt": gt,
        "comparison": comparison_image(pred, gt, split_errors=split_errors),
    }


def write_evaluation(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``per-image.csv`` (worst first) and ``confusion.png``."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "per_image": out / "per-image.csv",
        "confusion": out / "confusion.png",
    }
    atomic_write_text(paths["metrics"], to_json(result))
    write_per_image_csv(result, paths["per_image"])
    names = list(result.get("classes", {}).keys()) or list(CLASS_NAMES)
    confusion_figure(result, names, paths["confusion"])
    return paths


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read a ``metrics.json`` written by :func:`write_evaluation` (null stays None)."""
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
