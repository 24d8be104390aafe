"""Clips that know their answer: two hands moving, crossing, touching and leaving the frame.

For the video benchmark (``benchmarks/video.py``) and the tests of clip tracking. A clip is
two *sprites* (a hand with the pixels that travel with it, e.g. its sleeve) moved along a
*script* of key positions over a background; every frame is composited exactly, so the
per-frame masks, the per-hand masks (the hand in front occludes the other) and which hand
is which are known.

Sprites come from real photos with their masks (:func:`photo_sprites`: the hand pixels of
e.g. arsl-bg11, the second hand mirrored so that the clip holds a left and a right hand) or
from the built-in generator (:func:`synthetic_sprites`: :func:`handseg.synth.hands.render_hand`,
hand and sleeve). Backgrounds are any (H, W, 3) image: a real photo or a built-in family
(:class:`handseg.synth.backgrounds.BackgroundSource`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from handseg.core.imaging import read_image, read_mask, resize_mask
from handseg.data.pairs import find_pairs
from handseg.synth.hands import render_hand

__all__ = ["SCRIPTS", "Clip", "Sprite", "photo_sprites", "render_clip", "synthetic_sprites"]


@dataclass(frozen=True)
class Sprite:
    """A hand to move around: colours, opacity (hand and what travels with it) and hand."""

    rgb: np.ndarray  # (h, w, 3) uint8
    alpha: np.ndarray  # (h, w) float32 0..1: the pixels pasted
    hand: np.ndarray  # (h, w) float32 0..1: the hand's own pixels (inside alpha)

    @property
    def anchor(self) -> tuple[float, float]:
        """The hand's centroid (x, y) in the sprite: the point that follows the script."""
        ys, xs = np.nonzero(self.hand >= 0.5)
        return float(xs.mean()), float(ys.mean())

    def mirrored(self) -> Sprite:
        return Sprite(self.rgb[:, ::-1].copy(), self.alpha[:, ::-1].copy(),
                      self.hand[:, ::-1].copy())  # fmt: skip


@dataclass
class Clip:
    """A rendered clip and its answer. ``ids`` holds 0 (background) or 1 + the sprite index
    of the hand seen at each pixel; the hand mask is ``ids > 0``."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    ids: np.ndarray  # (T, H, W) uint8
    fps: float
    script: str

    @property
    def masks(self) -> np.ndarray:
        """(T, H, W) uint8 {0, 1}."""
        return (self.ids > 0).astype(np.uint8)


# Key positions of the two hands' centres as fractions of (W, H), at clip times 0..1;
# positions outside 0..1 leave the frame. The first hand is drawn in front.
SCRIPTS: dict[str, tuple[tuple[float, ...], list[tuple[float, float]], list[tuple[float, float]]]] = {
    # the hands pass each other in the middle (the first in front) and come back
    "cross": ((0.0, 0.45, 1.0),
              [(0.25, 0.55), (0.72, 0.5), (0.3, 0.6)],
              [(0.75, 0.5), (0.3, 0.55), (0.72, 0.45)]),
    # the hands meet, stay together (touching, overlapping) and part
    "touch": ((0.0, 0.35, 0.65, 1.0),
              [(0.22, 0.5), (0.44, 0.5), (0.46, 0.55), (0.2, 0.45)],
              [(0.78, 0.5), (0.56, 0.5), (0.55, 0.45), (0.8, 0.55)]),
    # the second hand leaves through the right edge and comes back
    "leave": ((0.0, 0.3, 0.5, 0.7, 1.0),
              [(0.3, 0.5), (0.35, 0.6), (0.3, 0.5), (0.35, 0.4), (0.3, 0.5)],
              [(0.7, 0.5), (1.0, 0.5), (1.35, 0.55), (1.0, 0.5), (0.68, 0.5)]),
}  # fmt: skip


def _crop_sprite(rgb: np.ndarray, hand: np.ndarray, alpha: np.ndarray, height: int) -> Sprite:
    """The sprite of ``alpha``'s bounding box, scaled so that the hand is ``height`` px tall."""
    ys, xs = np.nonzero(alpha > 0)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    hy = np.nonzero((hand > 0).any(1))[0]
    s = height / (hy.max() + 1 - hy.min())
    size = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
    crop = lambda a, interp: cv2.resize(a[y0:y1, x0:x1], size, interpolation=interp)  # noqa: E731
    return Sprite(
        crop(rgb, cv2.INTER_AREA),
        crop(alpha.astype(np.float32), cv2.INTER_AREA),
        crop(hand.astype(np.float32), cv2.INTER_AREA),
    )


def _dark_sleeve(rgb: np.ndarray, hand: np.ndarray, darkest: int = 60) -> np.ndarray:
    """(H, W) bool: the dark regions touching the hand (arsl-bg11's black sleeve), so that
    a cut-out hand keeps its wrist and sleeve as in the photo."""
    dark = cv2.morphologyEx((rgb.max(2) < darkest).astype(np.uint8), cv2.MORPH_OPEN,
                            np.ones((5, 5), np.uint8))  # fmt: skip
    near = cv2.dilate(hand.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    _, labels = cv2.connectedComponents(dark)
    touching = np.unique(labels[near & (dark > 0)])
    return np.isin(labels, touching[touching > 0]) & (hand == 0)


def photo_sprites(
    images: str | Path, masks: str | Path, *, height: int = 150, indices: Sequence[int] = (0, 1)
) -> list[Sprite]:
    """Hands cut from real photos by their masks (photo/mask folders as ``handseg train``
    pairs them) with the dark sleeve beside them, the hand ``height`` pixels tall; every
    second one mirrored (a left hand from a right)."""
    pairs = find_pairs(images, masks)
    sprites = []
    for k, i in enumerate(indices):
        image_path, mask_path = pairs[i % len(pairs)]
        rgb = read_image(image_path)
        hand = resize_mask(read_mask(mask_path), rgb.shape[:2])
        alpha = (hand > 0) | _dark_sleeve(rgb, hand)
        sprite = _crop_sprite(rgb, hand, alpha, height)
        sprites.append(sprite.mirrored() if k % 2 else sprite)
    return sprites


def synthetic_sprites(rng: np.random.Generator, *, height: int = 200) -> list[Sprite]:
    """Two built-in synthetic hands with their sleeves, ``height`` pixels tall."""
    sprites = []
    for k in range(2):
        layer, hand, arm = render_hand(rng, (360, 360))
        alpha = np.maximum(hand, arm)
        sprite = _crop_sprite(layer, hand, alpha, height)
        sprites.append(sprite.mirrored() if k % 2 else sprite)
    return sprites


def _positions(script: str, t: float) -> list[tuple[float, float]]:
    times, *paths = SCRIPTS[script]
    s = float(np.interp(t, times, np.arange(len(times))))  # segment index + how far in
    seg = min(int(s), len(times) - 2)
    u = s - seg
    u = 0.5 - 0.5 * np.cos(np.pi * u)  # ease in and out of each key position
    return [
        (p[seg][0] + u * (p[seg + 1][0] - p[seg][0]), p[seg][1] + u * (p[seg + 1][1] - p[seg][1]))
        for p in paths
    ]


def _paste(frame: np.ndarray, ids: np.ndarray, sprite: Sprite, centre, angle: float, k: int):
    """Composite ``sprite`` (rotated by ``angle`` degrees about its hand) at ``centre`` px
    onto ``frame`` (float32, in place); its hand pixels (hand >= 0.5) become ``k`` in
    ``ids`` and its other pasted pixels 0 (they occlude what is behind)."""
    h, w = ids.shape
    ax, ay = sprite.anchor
    m = cv2.getRotationMatrix2D((ax, ay), angle, 1.0)
    m[:, 2] += np.asarray(centre) - (ax, ay)
    warp = lambda a: cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR)  # noqa: E731
    alpha = warp(sprite.alpha)
    premult = warp(sprite.rgb.astype(np.float32) * sprite.alpha[..., None])  # (H, W, 3)
    hand = warp(sprite.hand)
    frame *= 1.0 - alpha[..., None]
    frame += premult
    ids[alpha >= 0.5] = 0
    ids[hand >= 0.5] = k


def render_clip(
    sprites: Sequence[Sprite],
    background: np.ndarray,
    *,
    script: str = "cross",
    frames: int = 60,
    fps: float = 30.0,
    noise: float = 2.0,
    seed: int = 0,
) -> Clip:
    """Move two sprites over ``background`` (H, W, 3) along ``script`` (:data:`SCRIPTS`):
    each turns a little as it goes (a signer's wrist), the first is in front, and every
    frame gets fresh sensor noise (``noise``, grey levels) so that nothing is static."""
    if script not in SCRIPTS:
        raise ValueError(f"unknown script {script!r}; choose from {', '.join(SCRIPTS)}")
    rng = np.random.default_rng(seed)
    h, w = background.shape[:2]
    out = np.empty((frames, h, w, 3), np.uint8)
    ids = np.zeros((frames, h, w), np.uint8)
    bg = background.astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    for i in range(frames):
        t = i / max(1, frames - 1)
        frame = bg.copy()
        for k in (1, 0):  # the first sprite last: in front
            x, y = _positions(script, t)[k]
            angle = 12.0 * np.sin(2 * np.pi * 1.5 * t + phase[k])
            _paste(frame, ids[i], sprites[k], (x * w, y * h), angle, k + 1)
        frame += noise * rng.standard_normal((h, w, 1), dtype=np.float32)
        out[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return Clip(out, ids, fps, script)
