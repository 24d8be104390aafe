"""Training crops for the crop segmenter (``handseg train --preset hands``).

Each training photo gives *anchors*: a hand the detector found (its landmarks, so the crop
is framed exactly as at prediction time), else the box of a hand region of the mask the
detector missed (so that photo still trains), else, for a photo without any hand, random
windows of it as negative crops. :class:`HandCropDataset` draws an anchor, jitters the
crop's shift, scale and rotation, mirrors it half the time, cuts the image and the mask
with the same map (mask: nearest), and passes the pair through the paired transform
(background compositing inside the crop, colour, blur/noise: :mod:`handseg.synth.compositing`).
A share of the samples are crops of built-in backgrounds with no hand at all.

Samples: ``(crop (3, S, S) float32 in [0, 1], prior (1, S, S) float32, target (S, S)
int64 in {0, 1, 255})``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from handseg.core.constants import IGNORE_INDEX
from handseg.core.imaging import fit_mask_to_image, read_image, read_mask
from handseg.data.transforms import PairedTransform
from handseg.infer.crops import box_transform, crop_transform, warp_crop
from handseg.infer.detect import Hand
from handseg.infer.refine import landmark_mask
from handseg.synth.backgrounds import BackgroundSource
from handseg.synth.compositing import composite, skin_tone
from handseg.synth.hands import render_sample

__all__ = ["PHOTO_CACHE", "Anchor", "HandCropDataset", "anchors_for", "mask_boxes"]

PHOTO_CACHE = 64
"""Decoded training photos kept in memory (least recently used dropped): bounded memory on
large sets, no decoding per crop on small ones."""


@dataclass(frozen=True)
class Anchor:
    """Where one training crop is taken: photo ``index`` and a hand's landmarks (21, 3) or,
    without them, a box (x0, y0, x1, y1) in photo pixels."""

    index: int
    landmarks: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    negative: bool = False


def mask_boxes(mask: np.ndarray, min_share: float = 0.002) -> list[tuple[int, int, int, int]]:
    """Boxes of the mask's hand regions (connected components of at least ``min_share``
    of the photo), largest first."""
    n, _, stats, _ = cv2.connectedComponentsWithStats((mask == 1).astype(np.uint8), 8)
    keep = [s for s in stats[1:n] if s[cv2.CC_STAT_AREA] >= min_share * mask.size]
    keep.sort(key=lambda s: -s[cv2.CC_STAT_AREA])
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in keep]


def anchors_for(index: int, mask: np.ndarray, hands: Sequence[Hand]) -> list[Anchor]:
    """The anchors of one photo: its detected hands whose landmarks lie mostly on the mask's
    hand, plus the box of every hand region no such hand covers; a photo without hand
    pixels is one negative anchor."""
    h, w = mask.shape
    out: list[Anchor] = []
    covered = np.zeros(mask.shape, bool)
    for hand in hands:
        pts = np.round(hand.landmarks[:, :2]).astype(int)
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        on_hand = mask[pts[ok, 1], pts[ok, 0]] == 1 if ok.any() else np.zeros(0, bool)
        if on_hand.size and on_hand.mean() >= 0.5:
            out.append(Anchor(index, landmarks=hand.landmarks.copy()))
            covered |= landmark_mask(mask.shape, [hand]) > 0
    for box in mask_boxes(mask):
        x0, y0, x1, y1 = box
        region = mask[y0:y1, x0:x1] == 1
        if not (covered[y0:y1, x0:x1] & region).any():
            out.append(Anchor(index, box=tuple(float(v) for v in box)))
    if not (mask == 1).any():
        out.append(Anchor(index, negative=True))
    return out


class HandCropDataset(Dataset):
    """``length`` random crops per epoch from ``pairs`` at the given ``anchors``.

    Args:
        pairs: (image path, mask path) per photo, as ``anchors`` index them.
        anchors: from :func:`anchors_for`.
        length: samples per epoch.
        size, margin: the crop's side and framing (the crop segmenter's).
        transform: paired transform applied to each crop (None: none).
        jitter: (shift as a share of the side, log-scale, rotation in radians) ranges;
            ``None`` = the canonical crop (validation).
        negative_prob: share of samples that are built-in backgrounds with no hand.
        prior_dropout: share of samples whose landmark prior is blanked.
        paste_prob: share of hand crops into which another training hand (from any photo)
            is pasted at a random size, angle and place, often running in from the border
            (a second hand close to the camera): labelled hand whatever the prior shows, so
            the network segments every hand in its crop, not only the prior's.
        synthetic_prob: share of samples that are a built-in synthetic hand
            (:func:`~handseg.synth.hands.render_sample`, any skin tone, on a built-in
            background), framed from its mask's box, without a prior.
        tone_prob: share of hand crops whose hand is recoloured to another skin tone
            (:func:`~handseg.synth.compositing.skin_tone`).
        zoom_prob: share of hand crops zoomed in (to a third to two thirds of the canonical
            framing, shifted by up to a quarter of the side), so the hand runs past the
            crop's border: as when the detector's landmarks cover only the fingers of a
            hand close to the camera. The network learns to label hand up to the border,
            which tells prediction to grow the crop (:func:`~handseg.infer.crops.grown_transform`).
        hand_value: as ``handseg train --hand-value``.
        seed: seeds validation order only; training samples draw their random numbers from
            torch's global generator, which the training's epoch sampler reseeds each epoch
            (:class:`handseg.train.callbacks.EpochSampler`), so a run is reproducible.
    """

    def __init__(
        self,
        pairs: Sequence[tuple],
        anchors: Sequence[Anchor],
        length: int,
        size: int,
        margin: float,
        transform: PairedTransform | None = None,
        *,
        jitter: tuple[float, float, float] | None = (0.08, 0.2, 0.35),
        flip: bool = True,
        negative_prob: float = 0.05,
        prior_dropout: float = 0.2,
        paste_prob: float = 0.0,
        tone_prob: float = 0.0,
        synthetic_prob: float = 0.0,
        zoom_prob: float = 0.0,
        hand_value: int | None = None,
        seed: int = 0,
    ) -> None:
        self.pairs, self.anchors = list(pairs), list(anchors)
        if not self.anchors:
            raise ValueError("no training crops: the training photos hold no hand")
        self.length, self.size, self.margin = int(length), int(size), float(margin)
        self.transform, self.jitter, self.flip = transform, jitter, flip
        self.negative_prob, self.prior_dropout = float(negative_prob), float(prior_dropout)
        self.zoom_prob, self.paste_prob = float(zoom_prob), float(paste_prob)
        self.tone_prob, self.synthetic_prob = float(tone_prob), float(synthetic_prob)
        self._hand_anchors = [a for a in self.anchors if not a.negative]
        self.hand_value, self.seed = hand_value, int(seed)
        self._photos: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._backgrounds = BackgroundSource()

    def __len__(self) -> int:
        return self.length

    def photo(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8, mask uint8 in {0, 1, 255} at the photo's size); the last
        :data:`PHOTO_CACHE` photos stay decoded (small sets: all of them)."""
        if index in self._photos:
            self._photos.move_to_end(index)
            return self._photos[index]
        img_path, mask_path = self.pairs[index]
        rgb = read_image(img_path)
        mask = read_mask(mask_path, hand_value=self.hand_value)
        self._photos[index] = (rgb, fit_mask_to_image(mask, rgb.shape[:2], name=str(mask_path)))
        if len(self._photos) > PHOTO_CACHE:
            self._photos.popitem(last=False)
        return self._photos[index]

    def crop_map(self, anchor: Anchor, shape, rng: np.random.Generator | None) -> np.ndarray:
        j = (0.0, 0.0, 0.0, 0.0)
        if rng is not None and self.jitter is not None:
            sh, sc, rot = self.jitter
            j = (rng.uniform(-sh, sh), rng.uniform(-sh, sh), rng.uniform(-sc, sc),
                 rng.uniform(-rot, rot))  # fmt: skip
            if self.zoom_prob and not anchor.negative and rng.random() < self.zoom_prob:
                j = (rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25),
                     rng.uniform(math.log(1 / 3), math.log(2 / 3)), j[3])  # fmt: skip
        if anchor.negative:
            return self._window(shape, rng, j)
        return self._frame(anchor, j)

    def _frame(self, anchor: Anchor, j: tuple[float, float, float, float]) -> np.ndarray:
        """The map of a hand anchor's crop moved by jitter ``j``."""
        if anchor.landmarks is not None:
            return crop_transform(anchor.landmarks, self.size, self.margin, jitter=j)
        return box_transform(anchor.box, self.size, self.margin, jitter=j)

    def _window(self, shape, rng: np.random.Generator | None, j) -> np.ndarray:
        h, w = shape  # a negative photo: a random window of a third to all of its short side
        side = min(h, w) * (rng.uniform(0.33, 1.0) if rng is not None else 0.6)
        cx = rng.uniform(side / 2, w - side / 2) if rng is not None else w / 2
        cy = rng.uniform(side / 2, h - side / 2) if rng is not None else h / 2
        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        return box_transform(box, self.size, 0.0, jitter=j)

    def sample(self, i: int, rng: np.random.Generator | None):
        """(crop uint8 (S, S, 3), prior float32 (S, S), target uint8 (S, S))."""
        s = self.size
        if rng is not None and rng.random() < self.negative_prob:
            bg = self._backgrounds.sample(rng, (s, s))
            return bg, np.zeros((s, s), np.float32), np.zeros((s, s), np.uint8)
        if rng is not None and self.synthetic_prob and rng.random() < self.synthetic_prob:
            return self._synthetic(rng)
        anchor = (
            self.anchors[i % len(self.anchors)]
            if rng is None
            else self.anchors[int(rng.integers(len(self.anchors)))]
        )
        rgb, mask = self.photo(anchor.index)
        m = self.crop_map(anchor, mask.shape, rng)
        crop, target = warp_crop(rgb, m, s), warp_crop(mask, m, s, nearest=True)
        if rng is not None and self.paste_prob and rng.random() < self.paste_prob:
            crop, target = self._paste_hand(crop, target, rng)
        if rng is not None and self.tone_prob and rng.random() < self.tone_prob:
            crop = skin_tone(crop, target == 1, rng)
        prior = np.zeros((s, s), np.float32)
        if anchor.landmarks is not None:
            lm = anchor.landmarks.copy()
            lm[:, :2] = lm[:, :2] @ m[:, :2].T + m[:, 2]
            moved = Hand(lm, (0, 0, s, s), "right", 1.0, 1.0, 1.0)
            prior = (landmark_mask((s, s), [moved]) > 0).astype(np.float32)
        if rng is not None:
            crop, target, prior = self._finish(crop, target, prior, rng)
        return crop, prior, target

    def _finish(self, crop, target, prior, rng: np.random.Generator):
        """Mirroring, the prior's dropout (where there is a prior) and the paired transform."""
        if self.flip and rng.random() < 0.5:
            crop, target = crop[:, ::-1], target[:, ::-1]
            prior = None if prior is None else prior[:, ::-1]
        if prior is not None and rng.random() < self.prior_dropout:
            prior = np.zeros_like(prior)
        if self.transform is not None:
            crop, target = self.transform(np.ascontiguousarray(crop),
                                          np.ascontiguousarray(target), rng)  # fmt: skip
        return crop, target, prior

    def _synthetic(self, rng: np.random.Generator):
        """A synthetic hand's crop, framed from its mask's box (jittered as a real one)."""
        s = self.size
        rgb, mask = render_sample(rng, (2 * s, 2 * s))
        boxes = mask_boxes(mask)
        if not boxes:  # (the hand left the frame: a crop of background)
            return rgb[:s, :s].copy(), np.zeros((s, s), np.float32), np.zeros((s, s), np.uint8)
        m = self.crop_map(Anchor(-1, box=tuple(float(v) for v in boxes[0])), mask.shape, rng)
        crop, target = warp_crop(rgb, m, s), warp_crop(mask, m, s, nearest=True)
        crop, target, _ = self._finish(crop, target, None, rng)
        return crop, np.zeros((s, s), np.float32), target

    def _paste_hand(self, crop: np.ndarray, target: np.ndarray, rng: np.random.Generator):
        """``crop`` with another training hand pasted in (feathered edge), ``target`` with
        its pixels labelled hand."""
        other = self._hand_anchors[int(rng.integers(len(self._hand_anchors)))]
        rgb, mask = self.photo(other.index)
        # from twice the canonical size (a hand close to the camera) to two thirds of it,
        # any angle, its centre anywhere within the crop's middle 90 %
        j = (rng.uniform(-0.45, 0.45), rng.uniform(-0.45, 0.45),
             rng.uniform(math.log(0.5), math.log(1.5)), rng.uniform(-math.pi, math.pi))  # fmt: skip
        m = self._frame(other, j)
        if rng.random() < 0.5:  # mirrored: a hand of the other side
            m = np.array([[-1.0, 0.0, self.size - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack(
                [m, [0, 0, 1]]
            )
        hand = warp_crop(mask, m, self.size, nearest=True) == 1
        if not hand.any():
            return crop, target
        pasted = composite(warp_crop(rgb, m, self.size), hand, crop, rng.uniform(0.5, 1.5))
        return pasted, np.where(hand, np.uint8(1), target)

    def __getitem__(self, i: int):
        rng = None
        if self.jitter is not None:  # (seeded by the epoch sampler; one draw per sample)
            rng = np.random.default_rng([self.seed, int(torch.randint(0, 2**62, (1,)))])
        crop, prior, target = self.sample(i, rng)
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 255.0
        p = torch.from_numpy(np.ascontiguousarray(prior))[None]
        y = torch.from_numpy(np.ascontiguousarray(target).astype(np.int64))
        y[(y != 0) & (y != 1)] = IGNORE_INDEX
        return x, p, y
