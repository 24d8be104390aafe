"""Evaluation on clips: MATLAB's metrics per frame and for the clip, and how stable the
masks are over time.

Per frame and for the clip, the metrics are :class:`handseg.eval.metrics.SegmentationMetrics`'s,
exactly as ``handseg evaluate`` computes them for photos (frame ``i`` of the prediction is
scored against frame ``i`` of the ground truth, at the ground truth's resolution; the clip's
figures are counts over all frames, BF averaged over frames), so a clip scores the same as
its frames taken as photos.

**Temporal stability.** ``change`` is the share of pixels whose label differs between
consecutive frames, averaged over the clip's consecutive pairs; ``flicker`` is the
prediction's change minus the ground truth's (``pred_change - gt_change``): the label
changes that the hands' real motion does not explain. 0 is a mask that changes exactly as
much as the truth; a mask that lags the motion can go below 0. ``spurious_change`` is
the share of pixels whose predicted label changes where the ground truth's does not (never
below 0: noise and lag both count). ``flicker`` is a clip-wide mean, so a pair of frames
whose mask lags the motion cancels a pair whose mask shimmers; per pair of frames,
``excess_change`` averages ``max(0, pred_change - gt_change)`` (the changes the motion does
not explain, none cancelled) and ``change_error`` ``|pred_change - gt_change|``. Reported
with ``flicker_ratio`` (pred_change / gt_change) in ``result["temporal"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from handseg.core.constants import CLASS_NAMES
from handseg.core.errors import HandsegError
from handseg.core.imaging import check_aspect, resize_mask
from handseg.eval.metrics import SegmentationMetrics
from handseg.infer.clip_io import open_clip, read_mask_frames
from handseg.infer.clips import ClipSegmenter
from handseg.infer.media import is_video

__all__ = ["TemporalStability", "evaluate_clip", "evaluate_clip_masks", "is_clip",
           "stability_line"]  # fmt: skip


_END = object()  # the end of an iterator of frames (a frame itself may be None)


def is_clip(path: str | Path) -> bool:
    """A video file (what ``handseg evaluate`` takes as a clip without ``--clip``)."""
    p = Path(path)
    return p.is_file() and is_video(p)


class TemporalStability:
    """Accumulates the label changes between consecutive frames (module docstring)."""

    def __init__(self) -> None:
        self.prev: tuple[np.ndarray, np.ndarray] | None = None
        self.pred_change: list[float] = []
        self.gt_change: list[float] = []
        self.spurious: list[float] = []

    def gap(self) -> None:
        """A frame without ground truth: the next frame starts a new run of pairs."""
        self.prev = None

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        p, g = pred > 0, gt == 1  # gt: 0/1 with ignore values counted as not hand
        if self.prev is not None:
            dp, dg = p != self.prev[0], g != self.prev[1]
            self.pred_change.append(float(dp.mean()))
            self.gt_change.append(float(dg.mean()))
            self.spurious.append(float((dp & ~dg).mean()))
        self.prev = (p, g)

    def compute(self) -> dict[str, Any]:
        if not self.pred_change:
            return {"pairs": 0, "pred_change": None, "gt_change": None, "flicker": None,
                    "flicker_ratio": None, "excess_change": None, "change_error": None,
                    "spurious_change": None}  # fmt: skip
        pc, gc = float(np.mean(self.pred_change)), float(np.mean(self.gt_change))
        diff = np.subtract(self.pred_change, self.gt_change)
        return {"pairs": len(self.pred_change), "pred_change": pc, "gt_change": gc,
                "flicker": pc - gc, "flicker_ratio": pc / gc if gc > 0 else None,
                "excess_change": float(np.maximum(diff, 0).mean()),
                "change_error": float(np.abs(diff).mean()),
                "spurious_change": float(np.mean(self.spurious))}  # fmt: skip


def evaluate_clip_masks(
    pred: Iterable[np.ndarray],
    gt: Iterable[np.ndarray],
    *,
    class_names: tuple[str, ...] = CLASS_NAMES,
    progress: bool = False,
    total: int | None = None,
) -> dict[str, Any]:
    """Score a clip's predicted masks against its ground truth, frame by frame.

    Frame ``i`` of ``pred`` is scored against frame ``i`` of ``gt``. A ground-truth frame
    that is None (a mask folder whose numbering skips it: :func:`read_mask_frames`) is not
    scored, and the stability figures take no pair across it; a predicted frame that is
    None counts as an empty prediction.

    Returns ``SegmentationMetrics.compute()``'s result (``images`` holds one record per
    scored frame, named ``frame 000000`` ... by the frame's index) with ``"temporal"``
    (:class:`TemporalStability`), ``num_frames`` (scored) and ``unscored_frames`` (indices).

    Raises:
        HandsegError: the two clips have different lengths, or a frame's size does not fit.
    """
    acc, stab = SegmentationMetrics(class_names), TemporalStability()
    pred_it, gt_it = iter(pred), iter(gt)
    unscored: list[int] = []
    bar = tqdm(total=total, desc="evaluate clip", unit="frame", disable=not progress)
    with bar:
        for i, g in enumerate(gt_it):
            p = next(pred_it, _END)
            if p is _END:
                raise HandsegError(f"the prediction has {i} frames, the ground truth more")
            bar.update(1)
            if g is None:  # the ground truth's numbering skips frame i: nothing to score
                unscored.append(i)
                stab.gap()
                continue
            if p is None:  # a prediction folder that skips frame i: nothing predicted
                p = np.zeros(g.shape[:2], np.uint8)
            name = f"frame {i:06d}"
            check_aspect(p.shape[:2], g.shape[:2], name, target="its ground truth")
            p = resize_mask(p, g.shape[:2])
            acc.update(p, g, image=name, mask=name)
            stab.update(p, g)
    if next(pred_it, _END) is not _END:
        raise HandsegError(
            f"the prediction has more frames than the ground truth ({len(acc) + len(unscored)})"
        )
    if not len(acc):
        raise HandsegError("nothing to evaluate: the ground-truth clip has no frames")
    return acc.compute() | {"temporal": stab.compute(), "num_frames": len(acc),
                            "unscored_frames": unscored}  # fmt: skip


def _predicted(clip: str | Path, predictor: Any, smooth: bool) -> Iterator[np.ndarray]:
    """The masks a clip gets from ``predictor`` (tracked), frame by frame; an unreadable
    frame gets an empty mask, as ``handseg predict`` writes it."""
    src = open_clip(clip)
    seg = ClipSegmenter(predictor, fps=src.fps, smooth=smooth)
    try:
        for frame in src:
            if frame.image is None:
                h, w = src.size or (1, 1)
                yield np.zeros((h, w), np.uint8)
            else:
                yield seg(frame.image).mask
    finally:
        src.close()


def evaluate_clip(
    *,
    gt: str | Path,
    clip: str | Path | None = None,
    predictor: Any = None,
    pred: str | Path | None = None,
    hand_value: Any = None,
    smooth: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """``handseg evaluate`` on a clip: run ``predictor`` on ``clip`` (a video or a folder of
    frames; hands tracked as ``handseg predict`` does), or read ``pred`` (a mask clip: a
    folder of masks or a mask video such as ``predict`` writes), and score it against
    ``gt`` (a mask clip) with :func:`evaluate_clip_masks`."""
    if (pred is None) == (clip is None or predictor is None):
        raise HandsegError("score a clip: give a model and the clip, or the predicted mask clip")
    masks = read_mask_frames(pred) if pred is not None else _predicted(clip, predictor, smooth)
    classes = tuple(getattr(predictor, "classes", CLASS_NAMES))
    return evaluate_clip_masks(masks, read_mask_frames(gt, hand_value=hand_value),
                               class_names=classes, progress=progress)  # fmt: skip


def stability_line(result: dict[str, Any]) -> str:
    """One line: frames, the label change per frame of the prediction and of the truth,
    the flicker (clip-wide and per pair) and the changes where the truth holds still."""
    t = result["temporal"]
    skipped = len(result.get("unscored_frames", ()))
    frames = f"{result['num_frames']} frame(s)" + (
        f" ({skipped} without ground truth, not scored)" if skipped else ""
    )
    if not t["pairs"]:
        return f"{frames}: no consecutive pair, no temporal figure"
    return (
        f"{frames}: labels changing per frame {100 * t['pred_change']:.3f} % "
        f"(ground truth {100 * t['gt_change']:.3f} %), flicker {100 * t['flicker']:+.3f} % "
        f"of the pixels (per pair of frames: {100 * t['excess_change']:.3f} % in excess), "
        f"changes where the truth holds still {100 * t['spurious_change']:.3f} %"
    )
