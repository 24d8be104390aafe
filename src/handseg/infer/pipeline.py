"""Hand-aware segmentation: find the hands first, then segment only where they are.

A :class:`HandPipeline` runs the detector (:class:`handseg.infer.detect.HandDetector`) and
then one of the refiners below on the photo; a photo where no hand is found gets an empty
mask, never a guess.

Refiners (``refine``):

- ``landmarks``: the 21 landmarks drawn as a mask (padded palm hull + thick finger bones);
- ``color``: a colour model of this photo sampled at the landmarks (hand) and the crop's
  edge (background), kept near the landmarks; ~3 ms a frame;
- ``grabcut``: GrabCut seeded by the landmarks (bones = sure hand, outside the enlarged
  box = sure background); slower;
- ``network``: a trained whole-image handseg network, kept only inside the detected
  hands' enlarged boxes.

``instances`` splits the mask into one mask per hand: each hand pixel goes to the hand
whose landmarks are nearest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from handseg.core.errors import HandsegError
from handseg.infer.detect import DETECTOR_MODES, Hand, HandDetector
from handseg.infer.refine import color_refine, grabcut_refine, hand_size, landmark_mask

__all__ = ["DETECTORS", "REFINERS", "HandPipeline", "HandResult", "box_region", "split_instances"]

DETECTORS = ("none", "mediapipe")
REFINERS = ("color", "grabcut", "landmarks", "network")
BOX_MARGIN = 0.25
"""Margin around a hand's landmark box, in palm lengths, inside which a network may paint."""


@dataclass
class HandResult:
    """What the pipeline found in one photo."""

    mask: np.ndarray
    """(H, W) uint8, 1 = hand."""
    hands: list[Hand]
    instances: list[np.ndarray]
    """One (H, W) uint8 0/1 mask per hand, in the order of ``hands``."""


def box_region(
    shape: tuple[int, ...], hands: Sequence[Hand], margin: float = BOX_MARGIN
) -> np.ndarray:
    """(H, W) bool: inside some hand's landmark box enlarged by ``margin`` palm lengths."""
    h, w = shape[:2]
    region = np.zeros((h, w), bool)
    for hand in hands:
        pad = margin * hand_size(hand.landmarks)
        xy = hand.landmarks[:, :2]
        x0, y0 = np.floor(xy.min(0) - pad).astype(int)
        x1, y1 = np.ceil(xy.max(0) + pad).astype(int)
        region[max(0, y0) : max(0, y1 + 1), max(0, x0) : max(0, x1 + 1)] = True
    return region


def split_instances(mask: np.ndarray, hands: Sequence[Hand]) -> list[np.ndarray]:
    """One mask per hand: every hand pixel of ``mask`` goes to the hand with the nearest
    landmark (so the instances never overlap and their union is ``mask``)."""
    if not hands:
        return []
    if len(hands) == 1:
        return [(mask > 0).astype(np.uint8)]
    h, w = mask.shape
    dist = np.empty((len(hands), h, w), np.float32)
    for i, hand in enumerate(hands):
        seeds = np.full((h, w), 255, np.uint8)
        pts = np.round(hand.landmarks[:, :2]).astype(int)
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        seeds[pts[ok, 1], pts[ok, 0]] = 0
        if not ok.any():  # hand outside the frame: distance from its clipped box centre
            x0, y0, x1, y1 = hand.box
            seeds[int(min(h - 1, (y0 + y1) / 2)), int(min(w - 1, (x0 + x1) / 2))] = 0
        dist[i] = cv2.distanceTransform(seeds, cv2.DIST_L2, 3)
    owner = dist.argmin(0)
    return [((mask > 0) & (owner == i)).astype(np.uint8) for i in range(len(hands))]


class HandPipeline:
    """Detector + refiner. ``pipeline(rgb)`` -> :class:`HandResult`.

    ``network`` is a callable ``(H, W, 3) uint8 -> (H, W) uint8`` mask (e.g. a
    :class:`handseg.infer.predictor.Predictor`'s ``predict``), needed for ``refine="network"``.
    """

    def __init__(
        self,
        *,
        refine: str = "color",
        mode: str = "accurate",
        network: Callable[[np.ndarray], np.ndarray] | None = None,
        detector: HandDetector | None = None,
        threads: int | None = None,
    ) -> None:
        if refine not in REFINERS:
            raise HandsegError(f"unknown refiner {refine!r}; choose from {', '.join(REFINERS)}")
        if refine == "network" and network is None:
            raise HandsegError("refine 'network' needs a trained model (--model)")
        if mode not in DETECTOR_MODES:
            raise HandsegError(
                f"unknown detector mode {mode!r}; choose from {', '.join(DETECTOR_MODES)}"
            )
        self.refine, self.mode = refine, mode
        self.network = network
        self.detector = detector or HandDetector(num_threads=threads)

    def hands(self, rgb: np.ndarray) -> list[Hand]:
        return self.detector(rgb, **DETECTOR_MODES[self.mode])

    def __call__(self, rgb: np.ndarray) -> HandResult:
        hands = self.hands(rgb)
        h, w = rgb.shape[:2]
        if not hands:
            return HandResult(np.zeros((h, w), np.uint8), [], [])
        if self.refine == "landmarks":
            mask = landmark_mask((h, w), hands) > 0
        elif self.refine == "color":
            mask = color_refine(rgb, hands) > 0
        elif self.refine == "grabcut":
            mask = grabcut_refine(rgb, hands) > 0
        else:
            mask = (self.network(rgb) > 0) & box_region((h, w), hands)
        mask = mask.astype(np.uint8)
        return HandResult(mask, hands, split_instances(mask, hands))
