"""Hands that keep their identity over a clip, and masks that do not flicker.

:class:`HandTracker` turns per-frame detections into *tracks*, one per hand:

- **Following.** Each hand seen in the previous frame is followed with the landmark model
  alone (:meth:`handseg.infer.detect.HandDetector.follow`, MediaPipe's tracking step);
  the palm detector runs every ``redetect_every`` frames while fewer than ``max_hands``
  hands are followed (and on every frame while none is).
- **One hand, one track.** When two followed hands land on the same hand (hands crossing:
  both regions of interest slide onto the front hand) the one whose handedness and
  predicted position fit it better keeps it; the other goes *missing*.
- **Gaps bridged.** A missing track lives on for ``max_gap`` frames, its position predicted
  with its last velocity; a new detection is matched to it (Hungarian assignment on
  landmark distance, in hand sizes, plus a handedness term) before a new track is made.
- **Sides.** A track's side (the person's ``left`` / ``right``) is the vote of its
  handedness scores, fixed after ``lock_after`` frames; two live tracks never share a
  side. The side is the hand's identity in every output (``left`` stays ``left``), so a
  hand that left the frame for longer than ``max_gap`` comes back under its own name.
- **Smooth landmarks.** Each track's landmarks go through a One Euro filter (Casiez et
  al., CHI 2012: a low-pass whose cut-off rises with speed, so still hands stop jittering
  and moving hands do not lag), in hand sizes per second so it is scale-free.

:class:`MaskSmoother` keeps one probability map per track: the previous map is warped by the
hand's motion (the similarity transform between its smoothed landmarks in the two frames)
and blended with the new per-hand mask (``p = a * new + (1 - a) * warped``); the mask is
``p > 0.5``: with ``a`` 0.4 a pixel changes label only when two frames in a row say so
(a one-frame dropout inside the hand is bridged), while the warp keeps the edges on the
moving hand. The refiner itself gets each frame's own landmarks; the smoothed
ones are what the outputs (.pose, .jsonl) hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from handseg.infer.detect import FAST, Hand, HandDetector
from handseg.infer.refine import hand_size

__all__ = ["SIDES", "MaskSmoother", "OneEuro", "TrackedHand", "HandTracker"]

HANDEDNESS_WEIGHT = 2.0
"""A confident handedness that contradicts a track's side costs as much as being this many
hand sizes away: when hands cross, positions are ambiguous and handedness decides."""
EDGE_MARGIN = 0.1
"""A hand within this share of the frame's width / height of an edge is coming into view:
a locked track of its side may take it however far away the track was last seen."""
SIDES = ("left", "right")
"""Track names: the person's hands (the pose file's LEFT_HAND / RIGHT_HAND components)."""


class OneEuro:
    """One Euro filter over arrays (Casiez, Roussel and Vogel 2012).

    ``x_hat = lowpass(x, alpha(f_c))`` with cut-off ``f_c = min_cutoff + beta * |dx/dt|``
    (Hz); ``scale`` divides values before the speed is measured (a hand size, so ``beta``
    is in hand sizes per second)."""

    def __init__(self, fps: float, min_cutoff: float = 1.5, beta: float = 10.0,
                 d_cutoff: float = 1.0) -> None:  # fmt: skip
        self.dt = 1.0 / fps
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, scale: float = 1.0, frames: int = 1) -> np.ndarray:
        """Filter ``x`` (any shape), ``frames`` frame intervals after the previous value."""
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        dt = self.dt * max(1, frames)
        dx = (x - self.x) / dt / max(scale, 1e-6)
        a_d = 1.0 / (1.0 + 1.0 / (2 * math.pi * self.d_cutoff) / dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        speed = np.linalg.norm(self.dx, axis=-1, keepdims=True) if x.ndim > 1 else abs(self.dx)
        cutoff = self.min_cutoff + self.beta * speed
        a = 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff) / dt)
        self.x = a * x + (1 - a) * self.x
        return self.x.astype(np.float32)


@dataclass
class TrackedHand:
    """One hand in one frame: its track's side and id, the detector's hand and the
    smoothed one (landmarks through the One Euro filter; box from them)."""

    side: str
    track: int
    raw: Hand
    hand: Hand

    def to_json(self) -> dict[str, Any]:
        return {"side": self.side, "track": self.track, **self.hand.to_json()}


@dataclass
class _Track:
    id: int
    hand: Hand  # the latest raw observation
    smooth: Hand
    filter: OneEuro
    left_vote: float = 0.0  # sum of signed handedness evidence (+ left, - right)
    seen: int = 0
    missing: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    side: str | None = None
    locked: bool = False

    @property
    def voted_side(self) -> str:
        return "left" if self.left_vote >= 0 else "right"

    def predicted(self) -> np.ndarray:
        """(21, 2) landmarks where the hand should be now."""
        return self.hand.landmarks[:, :2] + self.velocity * (self.missing + 1)


def _evidence(hand: Hand) -> float:
    """Signed handedness evidence of one observation: + for left, - for right, 0 unsure;
    squared, so that a hesitant score (0.6: 0.04) counts far less than a sure one (0.95:
    0.81): the landmark model hesitates most when a hand is half hidden."""
    strength = max(0.0, 2 * hand.handedness_score - 1) ** 2  # 0 at 0.5, 1 at certainty
    return strength if hand.handedness == "left" else -strength


def _box_iou(a: Hand, b: Hand) -> float:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def _at_border(hand: Hand, shape: tuple[int, int], margin: float = EDGE_MARGIN) -> bool:
    """Whether the hand's box lies within ``margin`` of the frame's size of an edge: where
    a hand that left the frame comes back in. A hand first found in the middle of the
    frame (one the detector had missed there) is not a hand coming back."""
    h, w = shape
    x0, y0, x1, y1 = hand.box
    return x0 <= margin * w or y0 <= margin * h or x1 >= (1 - margin) * w or y1 >= (1 - margin) * h


def _with_landmarks(hand: Hand, lm: np.ndarray, shape: tuple[int, int]) -> Hand:
    h, w = shape
    x0, y0 = np.clip(lm[:, 0].min(), 0, w), np.clip(lm[:, 1].min(), 0, h)
    x1, y1 = np.clip(lm[:, 0].max(), 0, w), np.clip(lm[:, 1].max(), 0, h)
    return replace(hand, landmarks=lm, box=(float(x0), float(y0), float(x1), float(y1)))


class HandTracker:
    """Per-frame hands with identities (see the module docstring). ``tracker(rgb)`` ->
    the :class:`TrackedHand` seen in this frame, left first; a new clip needs a new
    tracker (or :meth:`reset`).

    ``detector``: a :class:`HandDetector` or anything with its ``__call__`` and ``follow``;
    ``options``: detector settings (:data:`handseg.infer.detect.FAST` by default).
    """

    def __init__(
        self,
        detector: HandDetector,
        *,
        fps: float = 30.0,
        options: dict[str, Any] | None = None,
        redetect_every: int = 2,
        max_gap: int = 15,
        lock_after: int = 5,
        smooth: bool = True,
        min_cutoff: float = 1.5,
        beta: float = 10.0,
    ) -> None:
        self.detector = detector
        self.options = dict(FAST if options is None else options)
        self.max_hands = int(self.options.get("max_hands", 2))
        self.fps, self.redetect_every, self.max_gap = fps, max(1, redetect_every), max_gap
        self.lock_after, self.smooth = lock_after, smooth
        self.filter_args = {"min_cutoff": min_cutoff, "beta": beta}
        self.reset()

    def reset(self) -> None:
        self.tracks: list[_Track] = []
        self.frame = 0
        self._next_id = 0

    # -- one frame ---------------------------------------------------------------------------
    def __call__(self, rgb: np.ndarray) -> list[TrackedHand]:
        rgb = np.ascontiguousarray(rgb)
        found = self._follow(rgb)
        if len(found) < self.max_hands and (not found or self.frame % self.redetect_every == 0):
            found += [d for d in self.detector(rgb, **self.options)
                      if all(_box_iou(d, f) <= 0.3 for f in found)]  # fmt: skip
        self._update(self._assign(found, rgb.shape[:2]), rgb.shape[:2])
        self.frame += 1
        seen = [t for t in self.tracks if t.missing == 0]
        seen.sort(key=lambda t: SIDES.index(t.side))
        return [TrackedHand(t.side, t.id, t.hand, t.smooth) for t in seen]

    def _follow(self, rgb: np.ndarray) -> list[Hand]:
        """The hands of the previous frame followed into this one; where two land on the
        same hand (hands crossing) it is kept once. Which track each belongs to is
        decided afterwards (:meth:`_assign`), by position and handedness."""
        min_presence = float(self.options.get("min_presence", 0.5))
        mirrored = bool(self.options.get("mirrored", False))
        got: list[Hand] = []
        for t in self.tracks:
            if t.missing == 0:
                hand = self.detector.follow(rgb, t.hand, min_presence=min_presence,
                                            mirrored=mirrored)  # fmt: skip
                if hand is None:
                    continue
                twin = next((g for g in got if _box_iou(g, hand) > 0.5), None)
                if twin is None:
                    got.append(hand)
                elif hand.presence > twin.presence:
                    got[got.index(twin)] = hand
        return got

    def _cost(self, track: _Track, hand: Hand) -> float:
        """How badly ``hand`` fits ``track``: landmark distance from the predicted position
        in hand sizes (the larger of the two), plus up to :data:`HANDEDNESS_WEIGHT` when
        its handedness contradicts the track's side."""
        size = max(hand_size(track.hand.landmarks), hand_size(hand.landmarks))
        dist = float(np.linalg.norm(hand.landmarks[:, :2] - track.predicted(), axis=1).mean())
        side = track.side if track.side is not None else track.voted_side
        contra = max(0.0, -_evidence(hand) if side == "left" else _evidence(hand))
        return dist / size + HANDEDNESS_WEIGHT * contra

    def _assign(self, found: list[Hand], shape: tuple[int, int]) -> dict[int, Hand]:
        """Track id -> its hand in this frame: Hungarian assignment of all hands found to
        all live tracks (gated; a locked track also takes a hand of its side that comes
        back into the frame, near its border, wherever the track was last); tracks for
        what is left, while there is room."""
        got: dict[int, Hand] = {}
        if found and self.tracks:
            cost = np.array([[self._cost(t, d) for d in found] for t in self.tracks])
            for r, c in zip(*linear_sum_assignment(cost)):
                t = self.tracks[r]
                sign = 1 if t.side == "left" else -1
                same_side = (t.locked and _evidence(found[c]) * sign > 0.5
                             and _at_border(found[c], shape))  # fmt: skip
                if cost[r, c] <= 2.0 + 0.25 * t.missing or same_side:
                    got[t.id] = found[c]
        taken = {id(h) for h in got.values()}
        for d in (d for d in found if id(d) not in taken):
            if len(self.tracks) >= self.max_hands:
                # a full house: a hand missing for good makes room for the new one
                gone = [t for t in self.tracks if t.id not in got]
                if not gone:
                    break
                self.tracks.remove(max(gone, key=lambda t: t.missing))
            t = _Track(self._next_id, d, d, OneEuro(self.fps, **self.filter_args))
            self._next_id += 1
            self.tracks.append(t)
            got[t.id] = d
        return got

    def _update(self, observed: dict[int, Hand], shape: tuple[int, int]) -> None:
        for t in list(self.tracks):
            hand = observed.get(t.id)
            if hand is None:
                t.missing += 1
                if t.missing > self.max_gap:
                    self.tracks.remove(t)
                continue
            if t.seen:
                step = hand.landmarks[:, :2].mean(0) - t.hand.landmarks[:, :2].mean(0)
                t.velocity = 0.3 * t.velocity + 0.7 * step / (t.missing + 1)
            frames = t.missing + 1
            t.hand, t.missing, t.seen = hand, 0, t.seen + 1
            if not t.locked:
                t.left_vote += _evidence(hand)
            lm = hand.landmarks
            if self.smooth:
                lm = t.filter(lm, scale=hand_size(lm), frames=frames)
            t.smooth = _with_landmarks(hand, lm, shape)
        self._settle_sides()

    def _settle_sides(self) -> None:
        """Sides by vote; locked after ``lock_after`` frames; two tracks never share one
        (the later or less certain one takes the other side)."""
        for t in self.tracks:
            if not t.locked:
                t.side = t.voted_side
                t.locked = t.seen >= self.lock_after
        if len(self.tracks) == 2:
            a, b = self.tracks
            if a.side == b.side:
                keep = a if (a.locked, abs(a.left_vote)) >= (b.locked, abs(b.left_vote)) else b
                other = b if keep is a else a
                other.side = "right" if keep.side == "left" else "left"


class MaskSmoother:
    """Per-track mask probabilities carried along the hand's motion (module docstring).

    ``smoother(hands, masks)`` -> ``(mask, {side: mask})``: ``hands`` the frame's
    :class:`TrackedHand`, ``masks`` their (H, W) uint8 0/1 masks in the same order."""

    def __init__(self, a: float = 0.4, reset_after: int = 3) -> None:
        self.a, self.reset_after = a, reset_after
        self.state: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}  # id -> (p, lm, frame)
        self.frame = 0

    def __call__(
        self, hands: Sequence[TrackedHand], masks: Sequence[np.ndarray], shape: tuple[int, int]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        h, w = shape
        probs: dict[str, np.ndarray] = {}
        for th, m in zip(hands, masks):
            lm = th.raw.landmarks[:, :2].astype(np.float32)  # what the mask was made from
            p = m.astype(np.float32)
            old = self.state.get(th.track)
            if old is not None and self.frame - old[2] <= self.reset_after:
                motion, _ = cv2.estimateAffinePartial2D(old[1], lm, method=cv2.LMEDS)
                if motion is not None:
                    warped = cv2.warpAffine(old[0], motion, (w, h), flags=cv2.INTER_LINEAR)
                    p = self.a * p + (1 - self.a) * warped
            self.state[th.track] = (p, lm, self.frame)
            probs[th.side] = p
        for k in [k for k, v in self.state.items() if self.frame - v[2] > self.reset_after]:
            del self.state[k]
        self.frame += 1
        return _split(probs, shape)


def _split(probs: dict[str, np.ndarray], shape: tuple[int, int]):
    """Union mask and disjoint per-side masks: a pixel is a hand's where its p > 0.5 and
    no other hand's p is higher (the first side wins a tie)."""
    masks: dict[str, np.ndarray] = {}
    union = np.zeros(shape, bool)
    for side, p in probs.items():
        on = p > 0.5
        for other, q in probs.items():
            if other != side:
                on &= p > q if list(probs).index(other) < list(probs).index(side) else p >= q
        masks[side] = on.astype(np.uint8)
        union |= on
    return union.astype(np.uint8), masks
