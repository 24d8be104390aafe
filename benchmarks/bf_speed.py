"""Time ``handseg.eval.metrics.bf_score`` on 720 x 960 mask pairs (target: < 20 ms per pair).

Usage: ``python benchmarks/bf_speed.py [--runs 20] [--data ../shared/data/arsl-bg11]``

Synthetic: a hand-like blob (palm ellipse + five finger capsules + wrist) against the
same blob eroded, shifted and perturbed, as a good-but-imperfect prediction looks.
Real data: each ground-truth mask of the data set against a perturbed copy of itself
(thresholded at 128; the masks are 960 x 720 RGB). Prints the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from handseg.eval.metrics import bf_score, confusion_counts


def _hand_blob(h: int = 720, w: int = 960) -> np.ndarray:
    """(h, w) uint8 0/1 mask shaped roughly like an open hand entering from the bottom."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = 0.6 * h, 0.5 * w
    mask = ((yy - cy) / (0.17 * h)) ** 2 + ((xx - cx) / (0.12 * w)) ** 2 <= 1.0  # palm
    mask |= (np.abs(xx - cx) <= 0.07 * w) & (yy >= cy)  # wrist to the bottom edge
    for angle, length in zip((-60, -25, -5, 15, 35), (0.18, 0.28, 0.31, 0.28, 0.22)):
        a = np.deg2rad(angle - 90)
        x0, y0 = cx + 0.08 * w * np.cos(a), cy + 0.12 * h * np.sin(a)
        x1, y1 = x0 + length * h * np.cos(a), y0 + length * h * np.sin(a)
        # distance from each pixel to the finger's axis segment
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
        mask |= (xx - x0 - t * dx) ** 2 + (yy - y0 - t * dy) ** 2 <= (0.028 * w) ** 2
    return mask.astype(np.uint8)


def _perturb(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A plausible prediction: eroded 2 px, shifted (3, -2), ragged edge, a miss, a false blob."""
    import cv2

    rng = np.random.default_rng(seed)
    m = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    h, w = m.shape
    m = np.pad(m, ((3, 0), (0, 2)), mode="edge")[:h, 2:]  # shift down 3, left 2, no wrap
    noise = cv2.GaussianBlur(rng.standard_normal(mask.shape).astype(np.float32), (0, 0), 6)
    edge = cv2.dilate(mask, np.ones((9, 9), np.uint8)) & (
        1 - cv2.erode(mask, np.ones((9, 9), np.uint8))
    )
    flip = (edge == 1) & (np.abs(noise) > 0.12)
    m[flip] = mask[flip]
    # one missed region on the hand's edge and one false blob in the background
    ys, xs = np.nonzero(edge)
    i = rng.integers(len(ys))
    cv2.circle(m, (int(xs[i]), int(ys[i])), 25, 0, -1)
    bg_y, bg_x = np.nonzero(cv2.erode(1 - mask, np.ones((81, 81), np.uint8)))
    if len(bg_y):
        j = rng.integers(len(bg_y))
        cv2.circle(m, (int(bg_x[j]), int(bg_y[j])), 15, 1, -1)
    return m


def _time(pred: np.ndarray, gt: np.ndarray, runs: int) -> float:
    bf_score(pred, gt)  # warm-up (imports, caches)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        bf_score(pred, gt)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data" / "arsl-bg11"
    parser.add_argument("--data", type=Path, default=default_data)
    args = parser.parse_args()

    gt = _hand_blob()
    pred = _perturb(gt)
    cm = confusion_counts(pred, gt)
    print(
        f"synthetic 720x960 hand blob: hand IoU {cm[1, 1] / (cm.sum() - cm[0, 0]):.4f}, "
        f"BF {np.round(bf_score(pred, gt), 4).tolist()}"
    )
    print(f"  bf_score median of {args.runs}: {_time(pred, gt, args.runs):.2f} ms")
    worst = (1 - gt[:, ::-1]).copy()  # very different prediction: no shared boundary
    print(f"  worst case (mirrored complement): {_time(worst, gt, args.runs):.2f} ms")

    masks = sorted((args.data / "masks").glob("*.png")) if args.data.is_dir() else []
    if not masks:
        print(f"real data: none at {args.data}")
        return
    from PIL import Image

    medians = []
    for i, path in enumerate(masks):
        rgb = np.asarray(Image.open(path).convert("L"))
        m = (rgb >= 128).astype(np.uint8)
        medians.append(_time(_perturb(m, seed=i), m, args.runs))
    h, w = m.shape
    print(
        f"real data: {len(masks)} masks ({h}x{w}) vs perturbed copies: median "
        f"{statistics.median(medians):.2f} ms, max {max(medians):.2f} ms"
    )


if __name__ == "__main__":
    main()
