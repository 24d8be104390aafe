"""The report's pictures: the training-progress plot, the confusion matrix, and for every
test image the seed's comparison figure and an overlay thumbnail.

The plot and the matrix are copied from the run folder when training drew them, else drawn
from the numbers. The test images are run through the run's own ``model.pt``.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from handseg.core.imaging import read_image
from handseg.core.io import atomic_save_image
from handseg.core.viz import confusion_figure, overlay, resize_photo, training_progress_figure
from handseg.eval.evaluate import compare
from handseg.infer.pipeline import load_scorer
from handseg.infer.predictor import Predictor
from handseg.report.assets import Assets
from handseg.report.run import RunData, number

__all__ = ["ScoredImage", "confusion_picture", "progress_picture", "score_test_images"]

log = logging.getLogger(__name__)
THUMBNAIL_SIZE = (480, 480)


@dataclass(frozen=True)
class ScoredImage:
    """One test image's scores and pictures (``figure``: the comparison, ``overlay``: the
    predicted hand tinted on the photo)."""

    image: str  # file names
    mask: str
    hand_iou: float
    bf: float
    accuracy: float
    figure: Path
    overlay: Path

    def worst_first_key(self) -> tuple[bool, float, float]:
        """Lowest hand IoU first (then lowest BF); images without an IoU last."""
        iou, bf = self.hand_iou, self.bf
        return (math.isnan(iou), 0.0 if math.isnan(iou) else iou, 0.0 if math.isnan(bf) else bf)


def progress_picture(run: RunData, assets: Assets) -> Path | None:
    """The training-progress plot: training's own copy, else drawn from ``metrics.csv``."""
    name = run.dir.progress_plot.name
    if run.dir.progress_plot.is_file():
        return assets.copy(run.dir.progress_plot, name)
    if run.history:
        return training_progress_figure(run.history, assets.path(name))
    return None


def confusion_picture(run: RunData, assets: Assets) -> Path | None:
    """The normalised confusion matrix of the test split: the evaluation's own copy, else
    drawn from ``test/metrics.json``; None (and a warning) when it cannot be drawn."""
    if run.test is None:
        return None
    name = run.dir.test_confusion.name
    try:
        if run.dir.test_confusion.is_file():
            return assets.copy(run.dir.test_confusion, name)
        return confusion_figure(run.test, list(run.test.get("classes", {})), assets.path(name))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("no confusion figure: %s", exc)
        return None


def _safe_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60] or "image"


def _score_image(
    predictor: Predictor,
    pair: tuple[Path, Path],
    stem: str,
    assets: Assets,
    hand_value: int | None,
) -> ScoredImage:
    """Score one test image, draw its comparison figure and its overlay thumbnail."""
    image_path, mask_path = pair
    rec = compare(
        predictor, image_path, mask_path, assets.path(f"compare/{stem}.png"),
        split_errors=True, hand_value=hand_value,
    )  # fmt: skip
    pred = rec["pred"]  # (h, w) uint8 at the mask's size
    photo = read_image(image_path)
    if photo.shape[:2] != pred.shape:
        photo = resize_photo(photo, pred.shape)
    thumb = Image.fromarray(overlay(photo, pred))
    thumb.thumbnail(THUMBNAIL_SIZE)
    thumb_path = atomic_save_image(thumb, assets.path(f"overlay/{stem}.jpg"), quality=85)
    return ScoredImage(
        image=Path(str(rec["image"])).name,
        mask=Path(str(rec["mask"])).name,
        hand_iou=number(rec.get("hand_iou")),
        bf=number(rec.get("bf")),
        accuracy=number(rec.get("accuracy")),
        figure=Path(rec["out"]),
        overlay=thumb_path,
    )


def score_test_images(
    run: RunData, assets: Assets, device: str, progress: bool
) -> list[ScoredImage]:
    """The seed's comparison figure and an overlay for every test image; worst first.
    Empty without a model or without test images."""
    if not run.test_pairs or run.card is None:
        return []
    # the same exact fp32 network that scored the test split in train()
    predictor = load_scorer(run.dir.model, device=device, runtime="torch", precision="fp32")
    hand_value = (run.config or {}).get("hand_value")
    pairs = tqdm(run.test_pairs, desc="report figures", unit="img", disable=not progress)
    images = [
        _score_image(
            predictor, pair, f"{i:03d}-{_safe_name(Path(pair[0]).stem)}", assets, hand_value
        )
        for i, pair in enumerate(pairs)
    ]
    return sorted(images, key=ScoredImage.worst_first_key)
