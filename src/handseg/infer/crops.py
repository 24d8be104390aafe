"""Canonical hand crops: every hand looks alike to the crop segmenter.

A hand that fills the frame and one that covers 2 % of it, upright or lying sideways,
become the same ``size`` x ``size`` crop: centred on its landmarks, scaled so that the
landmarks' extent fills ``1 / (1 + 2 * margin)`` of the side, and rotated so that the wrist
-> middle-finger knuckle axis points up (as MediaPipe's own landmark stage does).
:func:`crop_transform` gives the 2 x 3 affine map image -> crop; :func:`warp_crop` cuts a
crop with it and :func:`paste_back` maps crop-sized masks back to the photo with the
inverse map, so a mask lands exactly where its crop came from. :func:`prior` draws the
landmarks in crop coordinates: the extra input channel that tells the network where the
detector saw the hand.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from handseg.infer.detect import Hand
from handseg.infer.refine import landmark_mask

__all__ = [
    "CROP_MARGIN",
    "CROP_SIZE",
    "box_transform",
    "crop_transform",
    "paste_back",
    "prior",
    "warp_crop",
]

CROP_SIZE = 128
CROP_MARGIN = 0.3
"""Free border around the landmarks' extent, as a share of that extent, on each side."""


def crop_transform(
    landmarks: np.ndarray,
    size: int = CROP_SIZE,
    margin: float = CROP_MARGIN,
    *,
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> np.ndarray:
    """(2, 3) float64 affine map from photo pixels to crop pixels.

    ``jitter`` = (x shift, y shift as shares of the side, log-scale factor, rotation in
    radians) moves the canonical crop (training draws them; inference uses zeros).
    """
    xy = landmarks[:, :2].astype(np.float64)
    up = xy[9] - xy[0]  # wrist -> middle MCP
    angle = math.atan2(up[0], -up[1])  # 0 when the fingers point up
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # turns the hand axis onto "up" (image y down)
    local = (xy - xy.mean(0)) @ rot.T
    lo, hi = local.min(0), local.max(0)
    extent = max(float((hi - lo).max()), 1.0)
    centre = xy.mean(0) + ((lo + hi) / 2) @ rot  # the extent's centre, in the photo
    return _similarity(centre, extent, angle, size, margin, jitter)


def box_transform(
    box: tuple[float, float, float, float],
    size: int = CROP_SIZE,
    margin: float = CROP_MARGIN,
    *,
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> np.ndarray:
    """The crop of an upright box (x0, y0, x1, y1), framed as :func:`crop_transform` frames
    a hand: for training hands the detector missed (the box of their mask)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    extent = max(x1 - x0, y1 - y0, 1.0)
    return _similarity(centre, extent, 0.0, size, margin, jitter)


def _similarity(centre, extent, angle, size, margin, jitter) -> np.ndarray:
    """Photo -> crop: ``centre`` to the crop's centre, turned by ``angle``, ``extent``
    filling ``1 / (1 + 2 * margin)`` of the side, then moved by ``jitter``."""
    angle = angle + jitter[3]
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    scale = size / (extent * (1 + 2 * margin) * math.exp(jitter[2]))
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = size / 2 - m[:, :2] @ np.asarray(centre, np.float64) + size * np.array(jitter[:2])
    return m


def grown_transform(
    m: np.ndarray, crop_mask: np.ndarray, margin: float = CROP_MARGIN, max_growth: float = 2.0
) -> np.ndarray | None:
    """A second, larger crop for a hand whose first-pass mask (``crop_mask``, (S, S) bool in
    the crop of map ``m``) runs into the crop's border: framed as :func:`crop_transform`
    frames the landmarks, around the union of the landmarks' extent and the mask's, grown at
    most ``max_growth`` times. None when the mask stays inside the crop."""
    size = crop_mask.shape[0]
    edge = np.concatenate([crop_mask[0], crop_mask[-1], crop_mask[:, 0], crop_mask[:, -1]])
    if edge.mean() < 0.02:
        return None
    ys, xs = np.nonzero(crop_mask)
    inner = size / (1 + 2 * margin)  # the landmarks' extent in the crop
    lo = np.minimum([xs.min(), ys.min()], (size - inner) / 2)
    hi = np.maximum([xs.max() + 1, ys.max() + 1], (size + inner) / 2)
    extent = min(float((hi - lo).max()), inner * max_growth)
    centre = np.clip((lo + hi) / 2, size / 2 - extent / 2, size / 2 + extent / 2)
    a = inner / extent  # crop -> new crop: zoom out about the new centre
    new = np.zeros((2, 3))
    new[:, :2] = a * m[:, :2]
    new[:, 2] = a * (m[:, 2] - centre) + size / 2
    return new


def warp_crop(
    image: np.ndarray, m: np.ndarray, size: int = CROP_SIZE, *, nearest: bool = False
) -> np.ndarray:
    """Cut the ``size`` x ``size`` crop of ``image`` (H, W[, C]) under map ``m``.

    Outside the photo: replicated border for images, 0 for masks (``nearest=True``)."""
    return cv2.warpAffine(
        image,
        m,
        (size, size),
        flags=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT if nearest else cv2.BORDER_REPLICATE,
    )


def paste_back(crop_prob: np.ndarray, m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Map a (size, size) float map back onto an (H, W) photo; 0 outside the crop."""
    h, w = shape
    return cv2.warpAffine(
        crop_prob.astype(np.float32),
        m,
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )


def prior(hand: Hand, m: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """(size, size) float32 in [0, 1]: the hand's landmark mask in crop coordinates."""
    lm = hand.landmarks.copy()
    lm[:, :2] = lm[:, :2] @ m[:, :2].T + m[:, 2]
    moved = Hand(lm, hand.box, hand.handedness, hand.handedness_score, hand.score, hand.presence)
    return (landmark_mask((size, size), [moved]) > 0).astype(np.float32)
