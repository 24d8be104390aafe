"""Segmentation metrics as MATLAB's ``evaluateSemanticSegmentation`` reports them.

Pure functions on numpy arrays (no torch). Definitions follow
``docs/seed-system.md`` ("Metrics, exactly"):

- ``CM[i, j]`` counts pixels of true class ``i`` predicted as ``j``, summed over the set.
- GlobalAccuracy = trace(CM) / sum(CM); class Accuracy_i = CM[i, i] / row_i;
  MeanAccuracy = mean over classes.
- class IoU_i = CM[i, i] / (row_i + col_i - CM[i, i]) from data-set counts (not a mean
  of per-image IoUs); MeanIoU = mean over classes; WeightedIoU = sum_i row_i IoU_i / sum(CM).
- BF score (boundary F1) per image and class, with the boundary of a binary mask being
  the mask minus its erosion by a 4-connected cross under zero padding (so the image
  border counts as boundary) and a distance threshold theta of 0.75 % of the image
  diagonal: a boundary pixel matches when its distance to the other boundary is below
  theta, strictly (squared distance < theta^2, as MATLAB's private ``bwbfscore2``).
  Class MeanBFScore = mean over images (NaN skipped); data-set MeanBFScore = mean over
  images of each image's class mean (NaN skipped inside and across images).

Classes absent from the whole set get NaN Accuracy (and NaN IoU if never predicted
either); MeanAccuracy and MeanIoU skip them, as MATLAB does.

Ground-truth pixels equal to :data:`IGNORE_INDEX` (or any value outside
``[0, num_classes)``) are undefined and are excluded from every metric: they are left
out of the confusion counts, and for the BF score they are set to "not class c" in both
the predicted and the true binary mask of every class ``c`` before boundaries are taken
(both masks are treated alike, so an ignore region alone never lowers the score).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from handseg.core.constants import CLASS_NAMES
from handseg.core.io import atomic_write

_DATASET_KEYS = ("GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore")
_CLASS_KEYS = ("Accuracy", "IoU", "MeanBFScore")
_CSV_COLUMNS = ("image", "mask", "accuracy", "hand_iou", "bf")


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(
            f"expected 2-D label maps, got prediction {pred.shape} and ground truth {gt.shape}"
        )
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}; "
            "map the prediction back to the mask's resolution first"
        )
    return pred, gt


def _valid(gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) bool: pixels whose ground truth is a real class."""
    if gt.dtype == np.bool_:
        return np.ones(gt.shape, dtype=bool)
    return (gt >= 0) & (gt < num_classes)


def _nanmean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without a warning) when there are none."""
    a = np.asarray(values, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else math.nan


def _div(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def confusion_counts(pred: np.ndarray, gt: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """Confusion counts of one prediction against its ground truth.

    Args:
        pred: (H, W) integer or bool predicted labels in ``[0, num_classes)``.
        gt: (H, W) integer or bool true labels; :data:`IGNORE_INDEX` (or any value outside
            ``[0, num_classes)``) marks pixels left out.
        num_classes: C.

    Returns:
        (C, C) int64 array, ``CM[i, j]`` = pixels of true class i predicted as j.

    Raises:
        ValueError: shapes differ, or a counted pixel has a prediction outside the classes.
    """
    pred, gt = _check_pair(pred, gt)
    valid = _valid(gt, num_classes)
    p = pred[valid].astype(np.int64, copy=False)
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(
            f"predicted labels must lie in [0, {num_classes}), found values "
            f"{int(p.min())}..{int(p.max())}"
        )
    t = gt[valid].astype(np.int64, copy=False)
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary of a binary mask: the mask minus its 4-connected erosion, zero padded.

    A mask pixel is on the boundary when one of its 4 neighbours is outside the mask or
    outside the image, so the image border counts as boundary (an all-ones mask has the
    image frame as its boundary).

    Args:
        mask: (H, W) array, nonzero = inside.

    Returns:
        (H, W) bool.
    """
    import cv2

    m = (np.asarray(mask) != 0).astype(np.uint8)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    eroded = cv2.erode(m, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (m > eroded).astype(bool)


def default_bf_threshold(height: int, width: int) -> float:
    """BF distance threshold in pixels: 0.75 % of the image diagonal."""
    return 0.0075 * math.sqrt(height * height + width * width)


def _max_sq_distance(theta: float) -> int:
    """Largest integer k with k < theta**2: a pixel pair at squared distance <= k matches.

    Squared pixel distances are integers, so MATLAB's strict test ``d^2 < theta^2``
    (its private ``bwbfscore2``) becomes ``d^2 <= k``. ``theta**2`` is the same float
    MATLAB compares against, so a distance of exactly theta (e.g. 9 px at 720 x 960,
    where theta is 9.0 exactly) never matches. Python compares int and float exactly.
    """
    return math.ceil(theta * theta) - 1


_DILATE_MAX_SQ = 144
"""Up to this squared threshold (radius 12 px) a disk dilation beats a distance transform."""


def _disk(max_sq: int) -> np.ndarray:
    """(2r+1, 2r+1) uint8 kernel of the integer offsets with dy^2 + dx^2 <= max_sq."""
    r = math.isqrt(max_sq)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx <= max_sq).astype(np.uint8)


def unmatched(src_b: np.ndarray, ref_b: np.ndarray, max_sq: int, method: str = "auto") -> int:
    """Pixels of ``src_b`` farther than the threshold from every pixel of ``ref_b``.

    A pixel matches when some ``ref_b`` pixel lies at squared distance <= ``max_sq`` (an
    integer: :func:`_max_sq_distance` turns the strict ``< theta^2`` into it).
    Both are (h, w) bool crops; every pixel within the threshold of a ``src_b`` pixel that
    matters lies inside the crop, so the crop decides exactly. Three exact methods, by
    speed: a dilation of ``ref_b`` by the disk of allowed offsets (cost grows with the
    disk's area, so only for small thresholds), OpenCV's exact Euclidean distance
    transform (float32, exact while max_sq < 1e6), and scipy's (for anything larger).
    """
    import cv2

    if not ref_b.any():
        return int(np.count_nonzero(src_b))
    if method == "auto" and max_sq <= _DILATE_MAX_SQ:
        method = "dilate"
    elif method == "auto":
        method = "opencv" if max_sq < 1_000_000 else "scipy"
    if method == "dilate":
        near = cv2.dilate(ref_b.astype(np.uint8), _disk(max_sq))
        return int(np.count_nonzero(src_b & (near == 0)))
    if method == "opencv":
        # distance to the nearest zero, i.e. ref_b pixel (Felzenszwalb: exact Euclidean).
        # float32 distances are sqrt(k) within a relative 1e-7; halfway between
        # sqrt(max_sq) and sqrt(max_sq + 1) separates them exactly while max_sq < ~2e6.
        dist = cv2.distanceTransform((~ref_b).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        return int(np.count_nonzero(dist[src_b] > np.float32(math.sqrt(max_sq + 0.5))))
    if method != "scipy":
        raise ValueError(f"unknown method {method!r}")
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~ref_b, return_indices=True)
    ys, xs = np.nonzero(src_b)
    sq = (ys - iy[ys, xs]) ** 2 + (xs - ix[ys, xs]) ** 2
    return int(np.count_nonzero(sq > max_sq))


def bf_score(
    pred: np.ndarray, gt: np.ndarray, num_classes: int = 2, theta: float | None = None
) -> np.ndarray:
    """Per-class boundary F1 (BF) score of one image.

    For class c, take the boundaries (see :func:`boundary`) of ``pred == c`` and
    ``gt == c``; ignore pixels of ``gt`` count as "not c" in both masks.
    precision = share of predicted boundary pixels closer than ``theta`` to the true
    boundary (strictly: squared Euclidean distance < theta^2, as MATLAB's ``bfscore``, so
    a pixel at exactly ``theta`` is a miss), recall = share of true boundary pixels closer
    than ``theta`` to the predicted boundary, BF = 2PR / (P + R). Both boundaries empty:
    NaN; exactly one empty: 0; P + R = 0: 0.

    Args:
        pred: (H, W) predicted labels.
        gt: (H, W) true labels (:data:`IGNORE_INDEX` = undefined).
        num_classes: C.
        theta: distance threshold in pixels, > 0; default 0.75 % of the image diagonal.

    Returns:
        (C,) float64 BF per class.
    """
    import cv2

    pred, gt = _check_pair(pred, gt)
    h, w = gt.shape
    if theta is None:
        theta = default_bf_threshold(h, w)
    if not 0 < theta < math.inf:
        raise ValueError(
            f"BF threshold must be a positive number of pixels (a boundary pixel matches when "
            f"it is closer than the threshold), got {theta}"
        )
    max_sq = _max_sq_distance(theta)
    margin = math.isqrt(max_sq) + 1

    valid = _valid(gt, num_classes)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    scores = np.empty(num_classes, dtype=np.float64)
    for c in range(num_classes):
        pb = _boundary_u8((pred == c) & valid, cross)
        gb = _boundary_u8((gt == c) & valid, cross)
        n_pred = int(np.count_nonzero(pb))
        n_true = int(np.count_nonzero(gb))
        if n_pred == 0 and n_true == 0:
            scores[c] = math.nan
            continue
        if n_pred == 0 or n_true == 0:
            scores[c] = 0.0
            continue
        # Pixels on both boundaries are at distance 0 and always match; only the
        # symmetric difference needs distances, and only within `margin` of it.
        diff = pb != gb
        if not diff.any():
            scores[c] = 1.0
            continue
        rows = np.flatnonzero(diff.any(axis=1))
        cols = np.flatnonzero(diff.any(axis=0))
        y0, y1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)
        x0, x1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)
        pc = pb[y0:y1, x0:x1].astype(bool)
        gc = gb[y0:y1, x0:x1].astype(bool)
        precision = 1.0 - unmatched(pc & ~gc, gc, max_sq) / n_pred
        recall = 1.0 - unmatched(gc & ~pc, pc, max_sq) / n_true
        s = precision + recall
        scores[c] = 2.0 * precision * recall / s if s > 0 else 0.0
    return scores


def _boundary_u8(mask: np.ndarray, cross: np.ndarray) -> np.ndarray:
    import cv2

    m = mask.astype(np.uint8)
    return m > cv2.erode(m, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)


class SegmentationMetrics:
    """Accumulates confusion counts and per-image BF scores; computes metrics once.

    Call :meth:`update` once per image (at the ground truth's own resolution), then
    :meth:`compute`.

    Args:
        class_names: names of classes 0..C-1. The "hand" class (or the last class when no
            class is called "hand") gives the per-image ``hand_iou``.
    """

    def __init__(self, class_names: Sequence[str] = CLASS_NAMES) -> None:
        self.class_names = tuple(class_names)
        if len(self.class_names) < 2:
            raise ValueError("need at least two classes")
        self.num_classes = len(self.class_names)
        self.hand_index = (
            self.class_names.index("hand") if "hand" in self.class_names else self.num_classes - 1
        )
        self.reset()

    def reset(self) -> None:
        """Forget every image added so far."""
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self._class_bf: list[np.ndarray] = []
        self._images: list[dict[str, Any]] = []

    def update(self, pred: np.ndarray, gt: np.ndarray, *, image: str = "", mask: str = "") -> dict:
        """Add one image.

        Args:
            pred: (H, W) predicted labels.
            gt: (H, W) true labels (:data:`IGNORE_INDEX` = undefined).
            image: name of the photo, for the per-image table.
            mask: name of the ground-truth mask, for the per-image table.

        Returns:
            The per-image record ``{"image", "mask", "accuracy", "hand_iou", "bf",
            "class_bf"}``: accuracy over the image's counted pixels, the hand class's IoU
            on this image (NaN when hand is absent from both), the mean over classes of
            the BF score (NaN skipped; NaN if all are) and ``class_bf`` {name: BF}.
        """
        cm = confusion_counts(pred, gt, self.num_classes)
        per_class = bf_score(pred, gt, self.num_classes)
        self.confusion += cm
        self._class_bf.append(per_class)
        k = self.hand_index
        record = {
            "image": str(image),
            "mask": str(mask),
            "accuracy": _div(np.trace(cm), cm.sum()),
            "hand_iou": _div(cm[k, k], cm[k, :].sum() + cm[:, k].sum() - cm[k, k]),
            "bf": _nanmean(per_class),
            "class_bf": {n: float(v) for n, v in zip(self.class_names, per_class)},
        }
        self._images.append(record)
        return dict(record)

    def __len__(self) -> int:
        return len(self._images)

    def compute(self) -> dict:
        """Data-set, class and per-image metrics of everything added so far.

        Returns:
            ``{"dataset": {GlobalAccuracy, MeanAccuracy, MeanIoU, WeightedIoU,
            MeanBFScore}, "classes": {name: {Accuracy, IoU, MeanBFScore}},
            "confusion": (C, C) list of int, "confusion_normalized": row-normalised
            (C, C) list of float, "images": [per-image records in update order],
            "num_images": n, "class_names": [...]}``. Undefined values are NaN floats;
            :func:`to_json` writes them as null.

        Raises:
            ValueError: no image was added.
        """
        if not self._images:
            raise ValueError("no images were added; call update() before compute()")
        cm = self.confusion.astype(np.float64)
        total = cm.sum()
        tp = np.diag(cm)
        rows = cm.sum(axis=1)
        cols = cm.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(rows > 0, tp / rows, np.nan)
            union = rows + cols - tp
            iou = np.where(union > 0, tp / union, np.nan)
            normalized = np.where(rows[:, None] > 0, cm / rows[:, None], np.nan)
        class_bf = np.vstack(self._class_bf)  # (N, C)
        class_mean_bf = [_nanmean(class_bf[:, c]) for c in range(self.num_classes)]
        weighted = float(np.sum(np.where(rows > 0, rows * np.nan_to_num(iou), 0.0)))
        dataset = {
            "GlobalAccuracy": _div(tp.sum(), total),
            "MeanAccuracy": _nanmean(acc),
            "MeanIoU": _nanmean(iou),
            "WeightedIoU": _div(weighted, total),
            "MeanBFScore": _nanmean([r["bf"] for r in self._images]),
        }
        classes = {
            name: {"Accuracy": float(acc[c]), "IoU": float(iou[c]), "MeanBFScore": class_mean_bf[c]}
            for c, name in enumerate(self.class_names)
        }
        return {
            "dataset": dataset,
            "classes": classes,
            "confusion": self.confusion.tolist(),
            "confusion_normalized": normalized.tolist(),
            "images": [dict(r) for r in self._images],
            "num_images": len(self._images),
            "class_names": list(self.class_names),
        }


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    return obj


def to_json(result: dict, indent: int = 2) -> str:
    """Serialise a :meth:`SegmentationMetrics.compute` result; NaN becomes ``null``."""
    return json.dumps(_json_safe(result), indent=indent, allow_nan=False)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    return f"{float(v):.4f}"


def _table(header: Sequence[str], rows: list[list[str]], *, row_names: bool) -> list[str]:
    """Right-aligned columns under underlined headers, MATLAB-table style.

    With ``row_names`` the first column holds names and is left-aligned.
    """
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.ljust(w) if (i == 0 and row_names) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return ("    " + "    ".join(out)).rstrip()

    return [
        line(header),
        line(["_" * w if header[i] else "" for i, w in enumerate(widths)]),
        "",
    ] + [line(r) for r in rows]


def format_metrics_tables(result: dict) -> str:
    """Data-set and class metric tables, as MATLAB prints DataSetMetrics / ClassMetrics.

    Values have 4 decimals; undefined values print as ``NaN``.
    """
    ds = result["dataset"]
    n = result.get("num_images", len(result.get("images", [])))
    lines = [f"DataSetMetrics ({n} images):"]
    lines += _table(_DATASET_KEYS, [[_fmt(ds.get(k)) for k in _DATASET_KEYS]], row_names=False)
    lines += ["", "ClassMetrics:"]
    rows = [[name] + [_fmt(m.get(k)) for k in _CLASS_KEYS] for name, m in result["classes"].items()]
    lines += _table(["", *_CLASS_KEYS], rows, row_names=True)
    lines += [
        "",
        "Accuracy and IoU come from pixel counts over the whole set; "
        "MeanBFScore is a mean over images.",
    ]
    return "\n".join(lines) + "\n"


def write_per_image_csv(result: dict, path: str | os.PathLike[str]) -> None:
    """Write ``per-image.csv``: one row per image, worst hand IoU first (NaN last).

    Columns: image, mask, accuracy, hand_iou, bf; undefined values are empty cells.
    Ties keep the update order.
    """

    def key(rec: dict) -> tuple[int, float]:
        v = rec.get("hand_iou")
        missing = v is None or math.isnan(float(v))
        return (1, 0.0) if missing else (0, float(v))

    records = sorted(result["images"], key=key)
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(_CSV_COLUMNS)
        for rec in records:
            row = []
            for col in _CSV_COLUMNS:
                v = rec.get(col)
                if col in ("image", "mask"):
                    row.append("" if v is None else str(v))
                elif v is None or math.isnan(float(v)):
                    row.append("")
                else:
                    row.append(f"{float(v):.6f}")
            writer.writerow(row)
