"""Hand masks from the detector's landmarks: the refiners that need no training.

- :func:`landmark_mask`: the 21 landmarks drawn as a mask (padded palm hull + thick
  finger bones, widths in palm lengths);
- :func:`color_refine`: a colour model of the photo at hand, sampled at the landmarks
  (hand colours) and at the crop's edge (background colours): ~3 ms a frame;
- :func:`grabcut_refine`: OpenCV's GrabCut seeded by the landmarks (~40-260 ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from handseg.infer.detect import BONES, PALM_IDS, Hand

__all__ = ["color_refine", "grabcut_refine", "hand_size", "landmark_mask"]


def hand_size(lm: np.ndarray) -> float:
    """Palm length in pixels: wrist -> middle-finger MCP, or palm width if larger."""
    p = lm[:, :2]
    return float(max(np.linalg.norm(p[0] - p[9]), 1.25 * np.linalg.norm(p[5] - p[17]), 1.0))


def landmark_mask(
    shape,
    hands: Sequence[Hand],
    finger_width: float = 0.22,
    palm_pad: float = 0.2,
    wrist_cut: float | None = None,
) -> np.ndarray:
    """Draw hands from landmarks: palm hull (0,1,2,5,9,13,17) + thick finger bones.

    finger_width: bone line thickness as a fraction of the palm length
    (wrist->middle MCP); palm_pad: extra outline around the palm hull, same units;
    wrist_cut: drop what lies more than this (same units) beyond the wrist landmark
    along the middle-MCP -> wrist axis (masks cut at the wrist), None = keep.
    Returns uint8 HxW with 0/255.
    """
    h, w = shape[:2]
    out = np.zeros((h, w), np.uint8)
    for hand in hands:
        m = np.zeros((h, w), np.uint8)
        lm = hand.landmarks[:, :2]
        size = hand_size(hand.landmarks)
        t = max(2, int(round(finger_width * size)))
        hull = cv2.convexHull(np.round(lm[list(PALM_IDS)]).astype(np.int32))
        cv2.fillConvexPoly(m, hull, 255, lineType=cv2.LINE_8)
        pad = int(round(palm_pad * size))
        if pad > 0:
            cv2.polylines(m, [hull], True, 255, thickness=2 * pad, lineType=cv2.LINE_8)
        pts = np.round(lm).astype(np.int32)
        for a, b in BONES:
            cv2.line(m, tuple(map(int, pts[a])), tuple(map(int, pts[b])), 255, t, cv2.LINE_8)
        for i in (4, 8, 12, 16, 20):  # round finger tips a bit beyond the tip landmark
            cv2.circle(m, tuple(map(int, pts[i])), t // 2, 255, -1)
        if wrist_cut is not None:
            ax = lm[9] - lm[0]
            ax = ax / max(float(np.linalg.norm(ax)), 1e-6)
            ys, xs = np.nonzero(m)
            proj = (xs - lm[0, 0]) * ax[0] + (ys - lm[0, 1]) * ax[1]
            cut = proj < -wrist_cut * size
            m[ys[cut], xs[cut]] = 0
        out |= m
    return out


def grabcut_refine(
    rgb_uint8: np.ndarray,
    hands: Sequence[Hand],
    iters: int = 3,
    box_margin: float = 0.25,
    dilate: float = 0.25,
    max_side: int = 320,
) -> np.ndarray:
    """GrabCut seeded by the landmarks; returns uint8 0/255.

    sure foreground = thin bone lines + shrunken palm hull; probable foreground =
    landmark mask dilated by `dilate` * palm length; probable background = the rest
    of the box enlarged by `box_margin`; sure background = outside that box.
    The image is downscaled so its long side is at most `max_side` (speed).
    """
    h, w = rgb_uint8.shape[:2]
    out = np.zeros((h, w), np.uint8)
    if not hands:
        return out
    sc = min(1.0, max_side / max(h, w))
    small = cv2.resize(rgb_uint8, (round(w * sc), round(h * sc)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    hs = [replace(hd, landmarks=hd.landmarks * np.float32(sc)) for hd in hands]
    gc = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    for hd in hs:
        lm = hd.landmarks[:, :2]
        size = hand_size(hd.landmarks)
        x0, y0 = lm.min(0) - box_margin * size
        x1, y1 = lm.max(0) + box_margin * size
        x0, y0 = int(max(0, x0)), int(max(0, y0))
        x1, y1 = int(min(sw, x1 + 1)), int(min(sh, y1 + 1))
        gc[y0:y1, x0:x1] = np.where(gc[y0:y1, x0:x1] == cv2.GC_BGD, cv2.GC_PR_BGD, gc[y0:y1, x0:x1])
    lmm = landmark_mask((sh, sw), hs)
    k = max(3, int(round(dilate * np.mean([hand_size(d.landmarks) for d in hs]))) | 1)
    prfg = cv2.dilate(lmm, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    gc[(prfg > 0) & (gc != cv2.GC_BGD)] = cv2.GC_PR_FGD
    gc[_core_mask((sh, sw), hs) > 0] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    try:
        cv2.grabCut(bgr, gc, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return landmark_mask((h, w), hands)
    res = np.where((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    res = cv2.resize(res, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(res >= 128, 255, 0).astype(np.uint8)


def _core_mask(shape, hands) -> np.ndarray:
    """Sure-foreground seed: thin bone lines + the palm hull shrunk to 60 % (uint8 0/255)."""
    fg = landmark_mask(shape, hands, finger_width=0.06, palm_pad=-0.0)
    for hd in hands:
        lm = hd.landmarks[:, :2]
        c = lm[list(PALM_IDS)].mean(0)
        core = c + 0.6 * (lm[list(PALM_IDS)] - c)
        cv2.fillConvexPoly(fg, cv2.convexHull(np.round(core).astype(np.int32)), 255)
    return fg


def color_refine(
    rgb_uint8: np.ndarray,
    hands: Sequence[Hand],
    max_side: int = 320,
    dilate: float = 0.3,
    box_margin: float = 0.6,
    t_in: float = 0.35,
    t_out: float = 0.9,
    bins=(8, 32, 32),
    smooth: float = 1.0,
) -> np.ndarray:
    """Fast landmark-seeded colour segmentation (~1-3 ms for a 640x480 frame); uint8 0/255.

    Per hand, in a crop around it (landmark extent + `box_margin` * palm length), at
    most `max_side` px on the long side of the frame:
      * foreground colours = pixels of the landmark mask (landmark_mask defaults);
        background colours = crop pixels farther than (`dilate` + 0.15) * palm length
        from that mask. Each is a 3-D YCrCb histogram (`bins`, Gaussian-smoothed over
        Cr/Cb with sigma `smooth` bins), turned into P(hand | colour) with equal priors.
      * a pixel is hand if P > `t_in` inside the landmark mask, or P > `t_out` in the
        ring up to `dilate` * palm length outside it; nothing farther out is hand.
      * the thin-bone / palm-core seed is always hand; a 3x3 opening + closing, then
        only connected components touching the seed are kept.
    Falls back to the landmark mask where a crop has too few samples.
    """
    h, w = rgb_uint8.shape[:2]
    out = np.zeros((h, w), np.uint8)
    if not hands:
        return out
    sc = min(1.0, max_side / max(h, w))
    sw, sh = max(1, round(w * sc)), max(1, round(h * sc))
    small = (
        rgb_uint8 if sc == 1.0 else cv2.resize(rgb_uint8, (sw, sh), interpolation=cv2.INTER_AREA)
    )
    ycc = cv2.cvtColor(small, cv2.COLOR_RGB2YCrCb)
    by, bcr, bcb = bins = tuple(bins)
    q = (
        (ycc[..., 0].astype(np.int32) * by >> 8) * (bcr * bcb)
        + (ycc[..., 1].astype(np.int32) * bcr >> 8) * bcb
        + (ycc[..., 2].astype(np.int32) * bcb >> 8)
    )
    res = np.zeros((sh, sw), np.uint8)
    for hd in hands:
        d = replace(hd, landmarks=hd.landmarks * np.float32(sc))
        lm = d.landmarks[:, :2]
        size = hand_size(d.landmarks)
        x0, y0 = np.floor(lm.min(0) - box_margin * size).astype(int)
        x1, y1 = np.ceil(lm.max(0) + box_margin * size).astype(int) + 1
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(sw, x1), min(sh, y1)
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        d = replace(d, landmarks=d.landmarks - np.float32([x0, y0, 0]))
        cshape = (y1 - y0, x1 - x0)
        lmm = landmark_mask(cshape, [d]) > 0
        seed = _core_mask(cshape, [d]) > 0
        dist = cv2.distanceTransform((~lmm).astype(np.uint8), cv2.DIST_L2, 3)
        cand = dist <= dilate * size
        bgs = dist > (dilate + 0.15) * size
        qc = q[y0:y1, x0:x1]
        if lmm.sum() < 20 or bgs.sum() < 20:
            res[y0:y1, x0:x1] |= lmm.astype(np.uint8) * 255
            continue
        prob = _hand_probability(qc, lmm, bgs, bins, smooth)
        fg = np.where(lmm, prob > t_in, (prob > t_out) & cand) | seed
        res[y0:y1, x0:x1] |= _clean(fg.astype(np.uint8), seed) * 255
    if sc != 1.0:
        res = cv2.resize(res, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.where(res >= 128, 255, 0).astype(np.uint8)
    return res


def _hand_probability(
    q: np.ndarray,
    hand: np.ndarray,
    background: np.ndarray,
    bins: tuple[int, int, int],
    smooth: float,
) -> np.ndarray:
    """P(hand | colour) per pixel from two 3-D YCrCb histograms (equal priors).

    ``q``: (h, w) histogram bin of every pixel; ``hand`` / ``background``: (h, w) bool
    samples. Each histogram is smoothed over Cr/Cb with a Gaussian of ``smooth`` bins."""
    n = int(np.prod(bins))
    hf = np.bincount(q[hand], minlength=n).astype(np.float32).reshape(bins)
    hb = np.bincount(q[background], minlength=n).astype(np.float32).reshape(bins)
    if smooth > 0:
        for hist in (hf, hb):
            for i in range(bins[0]):
                hist[i] = cv2.GaussianBlur(hist[i], (0, 0), smooth)
    hf /= hf.sum()
    hb /= hb.sum()
    return (hf / (hf + hb + 1e-6)).ravel()[q]


def _clean(fg: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """3 x 3 opening + closing, the seed put back, and only the connected components that
    touch the seed kept: (h, w) uint8 0/1."""
    k3 = np.ones((3, 3), np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, k3)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, k3)
    fg |= seed.astype(np.uint8)
    k, lab = cv2.connectedComponents(fg, connectivity=8)
    if k > 2:
        keep = np.zeros(k, bool)
        keep[np.unique(lab[seed])] = True
        keep[0] = False
        fg = keep[lab].astype(np.uint8)
    return fg
