"""The built-in synthetic hand data set: photo-like hands with exact masks.

Each sample is drawn at the target size with OpenCV:

- a hand in canonical units (palm width 1, wrist at the origin, fingers along +y): a
  rounded palm, four fingers and a thumb, each finger extended, bent (two segments at an
  angle), curled or folded over the palm, in combinations named after sign-alphabet hand
  shapes (:data:`HAND_SHAPES`);
- random mirror (left/right hand), rotation, scale (hand area about 5-28 % of the frame)
  and position (fully or mostly inside the frame);
- a skin tone from very light to very dark (:func:`handseg.backgrounds.random_skin_tone`)
  with a lighting gradient, rounded rim shading, subtle texture, darker outlines between
  parts, creases and (back of the hand) nails;
- a sleeve (mostly) or a bare forearm from the wrist to the frame edge: background in
  the mask, as in the seed data ("the sleeve and arm are background");
- a background from :func:`handseg.backgrounds.render_background`, a quarter of them the
  ``skin`` family (faces, bare arms, wood, skin-toned objects), so colour alone cannot
  find the hand; a soft cast shadow, colour cast, blur and sensor noise.

The image is anti-aliased at the hand's edge; the mask is exactly {0, 1}: a pixel is
hand when the hand covers at least half of it and the sleeve does not.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from handseg.core.constants import FAMILIES
from handseg.core.errors import HandsegError
from handseg.core.imaging import normalize
from handseg.synth.backgrounds import BackgroundSource, random_skin_tone, render_float

# Finger states: E extended, B bent (two segments at an angle), C curled (an arc),
# F folded over the palm. Thumb states: out, up, side, across, pinch.
# name: (thumb, index/middle/ring/little states, finger spread 0..1)
_SHAPES: dict[str, tuple[str, str, float]] = {
    "fist": ("across", "FFFF", 0.0),
    "open_palm": ("out", "EEEE", 1.0),
    "flat": ("side", "EEEE", 0.0),
    "four": ("across", "EEEE", 0.3),
    "point": ("across", "EFFF", 0.0),
    "v": ("across", "EEFF", 1.0),
    "u": ("across", "EEFF", 0.0),
    "three": ("across", "EEEF", 0.6),
    "three_thumb": ("out", "EEFF", 0.6),
    "thumb_up": ("up", "FFFF", 0.0),
    "l": ("out", "EFFF", 0.0),
    "y": ("out", "FFFE", 0.0),
    "little": ("across", "FFFE", 0.0),
    "horns": ("across", "EFFE", 0.5),
    "hook": ("across", "BFFF", 0.0),
    "bent_v": ("across", "BBFF", 0.6),
    "claw": ("out", "BBBB", 0.5),
    "c_shape": ("out", "CCCC", 0.2),
    "ok": ("pinch", "BEEE", 0.5),
    "pinch": ("pinch", "BFFF", 0.0),
    "bent_flat": ("side", "BBBB", 0.0),
    "middle_bent": ("out", "EBEE", 0.4),
}
HAND_SHAPES: tuple[str, ...] = tuple(_SHAPES)
"""Named finger configurations, as in a sign alphabet."""
# canonical finger layout: x of the base as a fraction of the palm half-width, length,
# base radius, fan angle (radians, + towards the thumb) closed and fully spread
_FINGERS = (
    # x/a,   length, radius, angle, spread angle
    (0.70, 0.95, 0.105, 0.06, 0.30),  # index
    (0.24, 1.05, 0.110, 0.00, 0.06),  # middle
    (-0.24, 0.98, 0.100, -0.07, -0.18),  # ring
    (-0.68, 0.78, 0.086, -0.16, -0.45),  # little
)
_TONE_ONE = 200.0  # tone canvas value that means "no change" (uint8 headroom for nails)
_SKIN_BG_PROB = 0.25  # share of backgrounds drawn from the skin-distractor family


@dataclass
class _Part:
    """One rigid piece of the hand in canonical units: filled polygons sharing an id."""

    polys: list[np.ndarray]  # each (N, 2) float32
    pid: int  # parts with different ids get a dark line where they meet
    tone: float = 1.0  # brightness of the fill relative to the skin
    creases: list[np.ndarray] = field(default_factory=list)  # polylines (M, 2)
    nails: list[np.ndarray] = field(default_factory=list)  # polygons (N, 2)
    solid: bool = True  # counts towards the hand's outside area (folded fingers don't)


@dataclass
class _HandLayers:
    """A rendered hand and arm. Colours are held only inside each layer's box."""

    hand_cover: np.ndarray  # (H, W) uint8 anti-aliased coverage 0..255
    hand_box: tuple[slice, slice]  # where the hand is
    hand_rgb: np.ndarray  # (h, w, 3) float32 hand colour inside hand_box
    arm_cover: np.ndarray  # (H, W) uint8 coverage of the sleeve or forearm
    arm_box: tuple[slice, slice]
    arm_rgb: np.ndarray  # (h, w, 3) float32 arm colour inside arm_box
    arm_in_front: bool  # a sleeve covers the wrist; a bare forearm lies behind the hand
    hand_mask: np.ndarray  # (H, W) uint8 {0, 1}
    arm_mask: np.ndarray  # (H, W) uint8 {0, 1}, disjoint from hand_mask


def _dir(ang: float) -> np.ndarray:
    """Unit vector at ``ang`` radians from +y towards +x."""
    return np.array([np.sin(ang), np.cos(ang)], np.float32)


def _capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float, n: int = 7) -> np.ndarray:
    """Outline of a tapered capsule from p0 (radius r0) to p1 (radius r1); (2n, 2)."""
    d = p1 - p0
    a = float(np.arctan2(d[1], d[0]))
    t1 = np.linspace(a - np.pi / 2, a + np.pi / 2, n, dtype=np.float32)
    t0 = np.linspace(a + np.pi / 2, a + 3 * np.pi / 2, n, dtype=np.float32)
    e1 = p1 + r1 * np.stack([np.cos(t1), np.sin(t1)], axis=1)
    e0 = p0 + r0 * np.stack([np.cos(t0), np.sin(t0)], axis=1)
    return np.concatenate([e1, e0]).astype(np.float32)


def _ellipse(c: np.ndarray, ax: float, ay: float, ang: float, n: int = 12) -> np.ndarray:
    """Ellipse outline; ``ang`` rotates the ay axis from +y towards +x; (n, 2)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False, dtype=np.float32)
    x, y = ax * np.cos(t), ay * np.sin(t)
    ca, sa = np.cos(ang), np.sin(ang)
    return np.stack([c[0] + x * ca + y * sa, c[1] - x * sa + y * ca], axis=1).astype(np.float32)


def _chain(
    base: np.ndarray, angles: list[float], lengths: list[float], r0: float, r1: float
) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """A finger as a chain of segments: (capsule polygons, joint points, joint radii)."""
    pts = [base]
    for ang, ln in zip(angles, lengths):
        pts.append(pts[-1] + _dir(ang) * ln)
    k = len(lengths)
    radii = [r0 + (r1 - r0) * i / k for i in range(k + 1)]
    polys = [_capsule(pts[i], pts[i + 1], radii[i], radii[i + 1]) for i in range(k)]
    return polys, pts, radii


def _joint_creases(pts: list[np.ndarray], radii: list[float], angles: list[float]):
    """Short lines across a finger at each inner joint; list of (2, 2)."""
    out = []
    for i in range(1, len(pts) - 1):
        ang = 0.5 * (angles[i - 1] + angles[i])
        perp = _dir(ang + np.pi / 2) * radii[i] * 0.8
        out.append(np.stack([pts[i] - perp, pts[i] + perp]).astype(np.float32))
    return out


def _nail(pts: list[np.ndarray], radii: list[float], angles: list[float]) -> np.ndarray:
    tip, r, ang = pts[-1], radii[-1], angles[-1]
    return _ellipse(tip - _dir(ang) * r * 0.55, r * 0.62, r * 0.75, ang)


def _palm(rng: np.random.Generator) -> tuple[np.ndarray, float, float, float]:
    """Palm outline (rounded, narrowing to the wrist, thumb-side bulge); (N, 2), a, b, n."""
    a = 0.5 * rng.uniform(0.93, 1.05)
    b = 0.55 * rng.uniform(0.9, 1.08)
    n = rng.uniform(2.4, 3.4)
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = a * np.sign(c) * np.abs(c) ** (2 / n)
    y = b + b * np.sign(s) * np.abs(s) ** (2 / n)
    low = y < 0.4 * b
    x[low] *= 0.8 + 0.2 * y[low] / (0.4 * b)
    x += 0.07 * np.exp(-(((y - 0.35 * b) / 0.2) ** 2)) * (x > 0)  # thenar bulge
    y -= 0.1 * np.clip(-x / a, 0, 1) * (y > b)  # knuckle line slopes to the little finger
    return np.stack([x, y], 1).astype(np.float32), a, b, n


def _palm_top(x: float, a: float, b: float, n: float) -> float:
    u = min(abs(x) / a, 1.0)
    return b + b * (1 - u**n) ** (1 / n) - 0.1 * max(0.0, -x / a)


def _hand_parts(rng: np.random.Generator, shape: str, palm_side: bool) -> tuple[list[_Part], float]:
    """The hand's parts in drawing order, and the cuff height for the sleeve."""
    thumb_state, states, spread = _SHAPES[shape]
    spread = float(np.clip(spread + rng.normal(0, 0.15), 0, 1.2))
    palm_poly, a, b, n = _palm(rng)
    lscale, wscale = rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.12)
    crease_palm = _palm_creases(rng, a, b) if palm_side else []
    parts = [_Part([palm_poly], 1, rng.uniform(0.96, 1.0), crease_palm)]
    bend_side = rng.choice((-1.0, 1.0))
    folded: list[_Part] = []
    upright: list[_Part] = []
    tips: dict[int, np.ndarray] = {}
    for k, (fx, ln, r, ang0, ang1) in enumerate(_FINGERS):
        x = fx * a + rng.normal(0, 0.01)
        base = np.array([x, _palm_top(x, a, b, n) - 0.12], np.float32)
        ln *= lscale * rng.uniform(0.96, 1.04)
        r *= wscale
        ang = ang0 + spread * (ang1 - ang0) + rng.normal(0, 0.03)
        pid = 2 + k
        if states[k] == "F":
            folded.append(_folded_finger(rng, base, r, pid, palm_side))
            continue
        angles, lengths = _finger_segments(rng, states[k], ang, ln, bend_side)
        polys, pts, radii = _chain(base, angles, lengths, r, r * 0.85)
        tips[k] = pts[-1]
        creases = _joint_creases(pts, radii, angles) if palm_side else []
        nails = [] if palm_side else [_nail(pts, radii, angles)]
        upright.append(_Part(polys, pid, rng.uniform(0.98, 1.04), creases, nails))
    thumb_root, thumb = _thumb(rng, thumb_state, tips, a, b, lscale, wscale, palm_side)
    parts.append(_Part(thumb_root, 1, parts[0].tone))
    if thumb_state in ("across", "pinch"):
        # across the palm: in front of the folded fingers
        parts += upright + folded + [thumb]
    else:
        parts += upright + [thumb] + folded
    cuff = float(rng.uniform(0.0, 0.18) * b)
    return parts, cuff


def _palm_creases(rng: np.random.Generator, a: float, b: float) -> list[np.ndarray]:
    """The heart, head and life lines of a palm with half-width ``a`` and half-height
    ``b``, each point jittered; three polylines (3, 2) float32."""
    j = lambda: rng.normal(0, 0.03, 2)  # noqa: E731
    heart = np.array([[-a * 0.95, 1.55 * b], [-0.1, 1.5 * b], [a * 0.5, 1.62 * b]])
    head = np.array([[a * 0.85, 1.15 * b], [0.0, 1.1 * b], [-a * 0.7, 0.95 * b]])
    life = np.array([[a * 0.85, 1.18 * b], [a * 0.3, 0.8 * b], [a * 0.25, 0.15 * b]])
    return [(c + np.stack([j() for _ in c])).astype(np.float32) for c in (heart, head, life)]


def _folded_finger(
    rng: np.random.Generator, base: np.ndarray, r: float, pid: int, palm_side: bool
) -> _Part:
    """A finger folded down over the palm from its ``base``: one short capsule with a
    crease at the knuckle and (palm side) the nail showing at its end. Not solid."""
    top = base + np.array([0, 0.1], np.float32)
    bottom = base - np.array([0, rng.uniform(0.32, 0.48)], np.float32)
    poly = _capsule(top, bottom, r * 1.08, r * 1.02)
    nails = (
        []
        if not palm_side
        else [_ellipse(bottom + np.array([0, r * 0.4], np.float32), r * 0.6, r * 0.5, 0)]
    )
    creases = [np.stack([top - [r, 0.18], top + [r, -0.18]]).astype(np.float32)]
    return _Part([poly], pid, rng.uniform(1.0, 1.06), creases, nails, False)


def _finger_segments(
    rng: np.random.Generator, state: str, ang: float, ln: float, bend_side: float
) -> tuple[list[float], list[float]]:
    """Segment angles and lengths of a finger of length ``ln`` pointing at ``ang`` in
    ``state`` E (extended, slightly curving), B (bent) or C (curled)."""
    if state == "E":
        curl = rng.normal(0, 0.06)
        angles = [ang, ang + curl, ang + 2 * curl]
        lengths = [0.45 * ln, 0.3 * ln, 0.25 * ln]
    elif state == "B":
        if rng.uniform() < 0.6:  # bent sideways: two clear segments at an angle
            bend = bend_side * rng.uniform(0.9, 1.6)
            angles = [ang, ang + bend]
            lengths = [0.5 * ln, 0.45 * ln * rng.uniform(0.75, 0.95)]
        else:  # bent towards the camera: short, foreshortened
            angles = [ang, ang + bend_side * rng.uniform(0.2, 0.5)]
            lengths = [0.45 * ln, 0.22 * ln]
    else:  # "C": curled in an arc towards the thumb side
        c = rng.uniform(0.5, 0.8)
        angles = [ang + 0.2, ang + 0.2 + c, ang + 0.2 + 2 * c]
        lengths = [0.42 * ln, 0.3 * ln, 0.25 * ln]
    return angles, lengths


def _thumb(
    rng: np.random.Generator,
    thumb_state: str,
    tips: dict[int, np.ndarray],
    a: float,
    b: float,
    lscale: float,
    wscale: float,
    palm_side: bool,
) -> tuple[list[np.ndarray], _Part]:
    """The thumb: the polygons of its first segment, which merges with the palm (the
    caller gives it the palm's id: no outline across the palm), and the rest as a part.

    ``tips`` holds the fingertips of the fingers that are not folded, by finger index;
    a pinching thumb reaches for the index fingertip when there is one.
    """
    tbase = np.array([a * 0.72, 0.28 * b], np.float32)
    tr = 0.13 * wscale
    tl = lscale * rng.uniform(0.95, 1.05)
    if thumb_state == "pinch" and 0 in tips:
        j1 = tbase + _dir(0.55) * 0.4 * tl
        target = tips[0] + (j1 - tips[0]) * 0.12
        mid = 0.5 * (j1 + target)
        d = target - j1
        bulge = np.array([d[1], -d[0]], np.float32) * 0.25
        pts = [tbase, j1, mid + bulge, target]
        angles = [float(np.arctan2(*(pts[i + 1] - pts[i]))) for i in range(3)]
        lengths = [float(np.hypot(*(pts[i + 1] - pts[i]))) for i in range(3)]
    else:
        angles, lengths = {
            "out": ([0.75, 0.65, 0.5], [0.38, 0.3, 0.27]),
            "up": ([0.3, 0.08, 0.02], [0.42, 0.33, 0.28]),
            "side": ([0.35, 0.15, 0.08], [0.38, 0.28, 0.24]),
            "across": ([0.45, -1.2, -1.65], [0.34, 0.3, 0.28]),
            "pinch": ([0.55, 0.1, -0.4], [0.4, 0.33, 0.28]),
        }[thumb_state]
        angles = [x + rng.normal(0, 0.06) for x in angles]
        lengths = [x * tl for x in lengths]
    polys, pts, radii = _chain(tbase, angles, lengths, tr, tr * 0.8)
    creases = _joint_creases(pts, radii, angles)[1:] if palm_side else []
    nails = [] if palm_side else [_nail(pts, radii, angles)]
    return polys[:1], _Part(polys[1:], 6, rng.uniform(0.98, 1.04), creases, nails)


def _canonical_area(parts: list[_Part]) -> float:
    """Area of the union of the solid parts in canonical units², by rasterising."""
    res = 40.0
    canvas = np.zeros((160, 160), np.uint8)  # covers x -2..2, y -1..3 canonical
    for part in parts:
        if not part.solid:
            continue
        for poly in part.polys:
            p = np.round((poly * [res, -res] + [80, 120]) * 16).astype(np.int32)
            cv2.fillPoly(canvas, [p], 1, cv2.LINE_8, shift=4)
    return float(canvas.sum()) / res**2


class _Pose:
    """Canonical units -> frame pixels: mirror, rotate, scale, translate."""

    def __init__(self, mirror: float, angle: float, scale: float, t: np.ndarray) -> None:
        c, s = np.cos(angle), np.sin(angle)
        # canonical (x, y up) -> image (x, y down), then rotate by angle (clockwise on screen)
        self.m = scale * np.array([[c * mirror, s], [s * mirror, -c]], np.float32)
        self.t = np.asarray(t, np.float32)
        self.scale = scale

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        return pts @ self.m.T + self.t


def _fix(pts: np.ndarray) -> np.ndarray:
    """Frame pixels -> int32 with 4 fractional bits for cv2 drawing with shift=4."""
    return np.round(pts * 16).astype(np.int32)


def _box(pts: np.ndarray, h: int, w: int, pad: int) -> tuple[slice, slice]:
    """Slices of the frame holding the points' bounding box plus ``pad`` (clipped)."""
    lo = np.floor(pts.min(0)).astype(int) - pad
    hi = np.ceil(pts.max(0)).astype(int) + pad + 1
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = max(min(hi[0], w), x0), max(min(hi[1], h), y0)
    return slice(y0, y1), slice(x0, x1)


def _grid(box: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    """Frame coordinates of a box: ys (h, 1), xs (1, w) float32."""
    return (
        np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None],
        np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :],
    )


def _box_blur(x: np.ndarray, k: int) -> np.ndarray:
    """Two box blurs (about a Gaussian of sigma ~ k/2.5)."""
    if k < 2 or x.size == 0:
        return x
    return cv2.blur(cv2.blur(x, (k, k)), (k, k))


def _smooth(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise with features about ``cell`` pixels wide; (H, W) float32."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    return cv2.resize(grid, (max(w, 1), max(h, 1)), interpolation=cv2.INTER_LINEAR)[:h, :w]


def _bend(pts: np.ndarray, ang: float) -> np.ndarray:
    """Rotate canonical points about the wrist (origin) by ``ang`` radians."""
    c, s = np.cos(ang), np.sin(ang)
    return (pts @ np.array([[c, -s], [s, c]], np.float32).T).astype(np.float32)


def _sleeve_color(rng: np.random.Generator) -> np.ndarray:
    """A fabric colour: half of them dark (black, navy, charcoal); (3,) float32 RGB."""
    if rng.uniform() < 0.5:
        rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.5), rng.uniform(0.04, 0.3))
    else:
        rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.9), rng.uniform(0.2, 0.95))
    return np.array(rgb, np.float32) * 255.0


def _choose_pose(
    rng: np.random.Generator, parts: list[_Part], h: int, w: int
) -> tuple[_Pose, np.ndarray]:
    """A pose with the hand covering about 5-28 % of the frame, mostly inside it.

    Fingers point mostly up, sometimes sideways, rarely down; a few hands are cut by
    the frame edge (at most ~15 % of the outline outside). Returns the pose and the
    transformed outline points (N, 2).
    """
    pts = np.concatenate([p for part in parts for p in part.polys])
    area = _canonical_area(parts)
    for _ in range(8):
        u = rng.uniform()
        if u < 0.7:
            angle = float(np.clip(rng.normal(0, 0.45), -1.1, 1.1))
        elif u < 0.95:
            angle = float(rng.choice((-1.0, 1.0)) * rng.uniform(1.1, 1.9))
        else:
            angle = float(rng.uniform(-np.pi, np.pi))
        mirror = float(rng.choice((-1.0, 1.0)))
        share = float(np.exp(rng.uniform(np.log(0.05), np.log(0.28))))
        scale = float(np.sqrt(share * h * w / area))
        probe = _Pose(mirror, angle, scale, np.zeros(2))(pts)
        ext = probe.max(0) - probe.min(0)
        fit = min(1.0, 0.95 * w / ext[0], 0.95 * h / ext[1])
        scale *= fit
        lo, hi = probe.min(0) * fit, probe.max(0) * fit
        slack = (hi - lo) * (0.12 if rng.uniform() < 0.3 else 0.0)
        t = np.array(
            [
                rng.uniform(-lo[0] - slack[0], w - hi[0] + slack[0]),
                rng.uniform(-lo[1] - slack[1], h - hi[1] + slack[1]),
            ],
            np.float32,
        )
        pose = _Pose(mirror, angle, scale, t)
        # the wrist must be inside the frame so that the arm enters it: points just below
        # and above the cuff, so the cuff between them is inside too
        for y in (-0.1, 0.3):
            q = pose(np.array([[0.0, y]], np.float32))[0]
            pose.t = pose.t + np.clip(q, 2.0, [w - 3.0, h - 3.0]) - q
        px = pose(pts)
        inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        if inside.mean() >= 0.85:
            break
    return pose, px


def _draw_hand(
    rng: np.random.Generator,
    size: tuple[int, int],
    shape: str | None,
    skin: np.ndarray | None,
) -> _HandLayers:
    """Draw a hand and its arm at a random pose; see :func:`render_hand`."""
    h, w = size
    if shape is None:
        shape = HAND_SHAPES[int(rng.integers(len(HAND_SHAPES)))]
    elif shape not in _SHAPES:
        raise HandsegError(f"unknown hand shape {shape!r}; choose from: {', '.join(HAND_SHAPES)}")
    skin = random_skin_tone(rng) if skin is None else np.asarray(skin, np.float32).reshape(3)
    palm_side = bool(rng.uniform() < 0.5)
    parts, cuff = _hand_parts(rng, shape, palm_side)
    pose, px = _choose_pose(rng, parts, h, w)
    ids, tone, cover = _rasterise_parts(parts, pose, h, w)
    hb = _box(px, h, w, pad=3)
    hand_rgb, light = _hand_colour(rng, skin, ids[hb], tone[hb], cover[hb], hb, pose)

    # arm: a sleeve over the wrist (mostly) or a bare forearm behind the hand
    far = 2.5 * np.hypot(h, w) / pose.scale
    bend = rng.normal(0, 0.18)
    bare = bool(rng.uniform() < 0.3)
    if bare:
        arm_cover, ab, arm_rgb = _bare_arm(rng, pose, skin, light, far, bend, (h, w))
    else:
        arm_cover, ab, arm_rgb = _sleeve_arm(rng, pose, cuff, light, far, bend, (h, w))

    hand_mask = cover >= 128
    if bare:
        arm_mask = (arm_cover >= 128) & ~hand_mask
    else:
        hand_mask &= arm_cover < 128
        arm_mask = arm_cover >= 128
    return _HandLayers(
        hand_cover=cover,
        hand_box=hb,
        hand_rgb=hand_rgb,
        arm_cover=arm_cover,
        arm_box=ab,
        arm_rgb=arm_rgb,
        arm_in_front=not bare,
        hand_mask=hand_mask.astype(np.uint8),
        arm_mask=arm_mask.astype(np.uint8),
    )


def _rasterise_parts(
    parts: list[_Part], pose: _Pose, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts in drawing order on (H, W) uint8 canvases: ``ids`` (which part is in
    front), ``tone`` (brightness, _TONE_ONE = 1, with creases and nails) and ``cover``
    (anti-aliased coverage 0..255)."""
    ids = np.zeros((h, w), np.uint8)
    tone = np.full((h, w), _TONE_ONE, np.uint8)
    cover = np.zeros((h, w), np.uint8)
    lw = max(1, round(pose.scale * 0.018))
    for part in parts:
        for poly in part.polys:  # one per call: fillPoly fills several with even-odd
            p = [_fix(pose(poly))]
            cv2.fillPoly(ids, p, part.pid, cv2.LINE_8, shift=4)
            cv2.fillPoly(tone, p, int(_TONE_ONE * part.tone), cv2.LINE_8, shift=4)
            cv2.fillPoly(cover, p, 255, cv2.LINE_AA, shift=4)
        if part.creases:
            creases = [_fix(pose(c)) for c in part.creases]
            cv2.polylines(tone, creases, False, int(_TONE_ONE * 0.8), lw, cv2.LINE_AA, shift=4)
        for nail in part.nails:
            q = [_fix(pose(nail))]
            cv2.fillPoly(tone, q, int(_TONE_ONE * 1.12), cv2.LINE_AA, shift=4)
            cv2.polylines(tone, q, True, int(_TONE_ONE * 0.9), 1, cv2.LINE_AA, shift=4)
    return ids, tone, cover


def _part_edges(ids: np.ndarray) -> np.ndarray:
    """Where neighbouring pixels of an id canvas (h, w) differ: outlines where parts meet
    and at the silhouette; (h, w) float32 counts (0 inside a part)."""
    bh, bw = ids.shape
    edge = np.zeros((bh, bw), np.float32)
    if bh > 1 and bw > 1:
        dv = ids[1:] != ids[:-1]
        dh = ids[:, 1:] != ids[:, :-1]
        edge[1:] += dv
        edge[:-1] += dv
        edge[:, 1:] += dh
        edge[:, :-1] += dh
    return edge


def _hand_light(
    rng: np.random.Generator, pose: _Pose
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A lighting gradient in a random direction through the palm's centre, shared by the
    hand and the arm: ``light(ys, xs)`` ~1 over frame coordinates."""
    ld = rng.normal(0, 1, 2)
    ld /= np.hypot(*ld) + 1e-6
    centre = pose(np.array([[0.0, 1.0]], np.float32))[0]
    grad = rng.uniform(0.04, 0.14) / pose.scale
    light_k = (grad * ld[0], grad * ld[1], centre)

    def light(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return 1.0 + light_k[0] * (xs - light_k[2][0]) + light_k[1] * (ys - light_k[2][1])

    return light


def _hand_colour(
    rng: np.random.Generator,
    skin: np.ndarray,
    ids: np.ndarray,
    tone: np.ndarray,
    cover: np.ndarray,
    hb: tuple[slice, slice],
    pose: _Pose,
) -> tuple[np.ndarray, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """The hand's colour inside its box ``hb`` (``ids``, ``tone``, ``cover`` are the
    canvases cut to it): the skin with the parts' tones, darker outlines, a lighting
    gradient, rounded rim shading and skin texture. Returns the colours (h, w, 3) float32
    and the lighting function, for the arm."""
    scale = pose.scale
    ys, xs = _grid(hb)
    bh, bw = ys.shape[0], xs.shape[1]
    edge = _part_edges(ids)
    k = rng.uniform(0.12, 0.25) * min(1.0, scale / 60)
    shade = tone.astype(np.float32) * (1.0 / _TONE_ONE)
    shade *= 1.0 - k * np.minimum(edge, 1.0)
    if scale > 40:
        shade = cv2.GaussianBlur(shade, (3, 3), 0)
    light = _hand_light(rng, pose)
    alpha = cover.astype(np.float32) * (1.0 / 255.0)
    rim = 0.8 + 0.2 * np.minimum(_box_blur(alpha, max(1, int(scale * 0.08))) * 1.6, 1.0)
    tex = 1.0 + 0.025 * _smooth(rng, bh, bw, max(2.0, scale * 0.15))
    tex += 0.02 * rng.standard_normal((bh, bw), dtype=np.float32)
    return skin * (shade * light(ys, xs) * rim * tex)[:, :, None], light


def _bare_arm(
    rng: np.random.Generator,
    pose: _Pose,
    skin: np.ndarray,
    light: Callable[[np.ndarray, np.ndarray], np.ndarray],
    far: float,
    bend: float,
    size: tuple[int, int],
) -> tuple[np.ndarray, tuple[slice, slice], np.ndarray]:
    """A bare forearm from the wrist to ``far`` (canonical units, beyond the frame), bent
    by ``bend`` radians at the wrist, sometimes with a pushed-up sleeve further along.
    Returns its coverage (H, W) uint8, its box and its colours (h, w, 3) float32."""
    h, w = size
    scale = pose.scale
    arm_cover = np.zeros((h, w), np.uint8)
    hw0 = 0.36 * rng.uniform(0.95, 1.1)
    hw1 = hw0 * rng.uniform(1.2, 1.45)
    arm = np.array(
        [[-hw0, 0.3], [hw0, 0.3], [hw1, -1.3], [hw1, -far], [-hw1, -far], [-hw1, -1.3]],
        np.float32,
    )
    arm_px = pose(_bend(arm, bend))
    cv2.fillPoly(arm_cover, [_fix(arm_px)], 255, cv2.LINE_AA, shift=4)
    ab = _box(arm_px, h, w, pad=2)
    ays, axs = _grid(ab)
    a_alpha = arm_cover[ab].astype(np.float32) * (1.0 / 255.0)
    a_rim = 0.8 + 0.2 * np.minimum(_box_blur(a_alpha, max(1, int(scale * 0.1))) * 1.6, 1.0)
    a_tex = 1.0 + 0.035 * _smooth(rng, a_alpha.shape[0], a_alpha.shape[1], scale * 0.2)
    arm_rgb = skin * (light(ays, axs) * a_rim * a_tex)[:, :, None]
    if rng.uniform() < 0.5:  # a pushed-up sleeve further along the arm
        at = -rng.uniform(1.0, 3.0)
        hs = hw1 * rng.uniform(1.15, 1.4)
        sl = np.array([[-hs, at], [hs, at + 0.08], [hs, -far], [-hs, -far]], np.float32)
        sleeve = np.zeros((h, w), np.uint8)
        cv2.fillPoly(sleeve, [_fix(pose(_bend(sl, bend)))], 255, cv2.LINE_AA, shift=4)
        sa = sleeve[ab].astype(np.float32)[:, :, None] * (1.0 / 255.0)
        arm_rgb += sa * (_sleeve_color(rng) * light(ays, axs)[:, :, None] - arm_rgb)
        np.maximum(arm_cover, sleeve, out=arm_cover)
    return arm_cover, ab, arm_rgb


def _sleeve_arm(
    rng: np.random.Generator,
    pose: _Pose,
    cuff: float,
    light: Callable[[np.ndarray, np.ndarray], np.ndarray],
    far: float,
    bend: float,
    size: tuple[int, int],
) -> tuple[np.ndarray, tuple[slice, slice], np.ndarray]:
    """A sleeve from a sagging cuff at height ``cuff`` over the wrist to ``far``, bent by
    ``bend`` radians, with folds and a hem. Returns its coverage (H, W) uint8, its box
    and its colours (h, w, 3) float32."""
    h, w = size
    scale = pose.scale
    arm_cover = np.zeros((h, w), np.uint8)
    hw0 = 0.5 * rng.uniform(0.95, 1.3)
    hw1 = hw0 * rng.uniform(1.0, 1.25)
    xs_c = np.linspace(-hw0, hw0, 7, dtype=np.float32)
    sag = rng.uniform(-0.06, 0.06)
    cuff_line = np.stack([xs_c, cuff + sag * (1 - (xs_c / hw0) ** 2)], 1)
    arm = np.concatenate([cuff_line, np.array([[hw1, -far], [-hw1, -far]], np.float32)])
    arm_px = pose(_bend(arm, bend))
    cv2.fillPoly(arm_cover, [_fix(arm_px)], 255, cv2.LINE_AA, shift=4)
    ab = _box(arm_px, h, w, pad=2)
    ays, axs = _grid(ab)
    arm_tone = _sleeve_folds(rng, pose, cuff_line, hw0, cuff, bend, size)
    a_shade = arm_tone[ab].astype(np.float32) * (1.0 / _TONE_ONE)
    if a_shade.size:
        a_shade = cv2.GaussianBlur(a_shade, (3, 3), 0)
    fabric = 1.0 + 0.05 * _smooth(rng, a_shade.shape[0], a_shade.shape[1], scale * 0.3)
    arm_rgb = _sleeve_color(rng) * (a_shade * light(ays, axs) * fabric)[:, :, None]
    return arm_cover, ab, arm_rgb


def _sleeve_folds(
    rng: np.random.Generator,
    pose: _Pose,
    cuff_line: np.ndarray,
    hw0: float,
    cuff: float,
    bend: float,
    size: tuple[int, int],
) -> np.ndarray:
    """A sleeve's tone canvas (H, W) uint8 (_TONE_ONE = 1): 1-3 darker creases running
    from the cuff along the sleeve (half-width ``hw0`` there), and the cuff's hem."""
    arm_tone = np.full(size, _TONE_ONE, np.uint8)

    def line(pts: np.ndarray, tone: float, width: float) -> None:  # darker, in canonical units
        thickness = max(1, round(pose.scale * width))
        cv2.polylines(arm_tone, [_fix(pose(_bend(pts, bend)))], False, int(_TONE_ONE * tone),
                      thickness, cv2.LINE_AA, shift=4)  # fmt: skip

    for _ in range(int(rng.integers(1, 4))):
        x0 = rng.uniform(-0.8, 0.8) * hw0
        end = [x0 + rng.normal(0, 0.3), -rng.uniform(0.5, 2.0)]
        line(np.array([[x0, cuff - 0.05], end], np.float32), 0.78, 0.04)
    line(cuff_line, 0.85, 0.03)
    return arm_tone


def _blend(img: np.ndarray, cover: np.ndarray, box: tuple[slice, slice], rgb: np.ndarray):
    """Alpha-blend a layer's colours (h, w, 3) into img (H, W, 3) float32 inside box."""
    a = cover[box].astype(np.float32)[:, :, None] * (1.0 / 255.0)
    region = img[box]
    region += a * (rgb - region)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError) as exc:
        raise HandsegError(f"size must be two integers (H, W), got {size!r}") from exc
    if h < 16 or w < 16:
        raise HandsegError(f"synthetic image size must be at least 16 x 16 (H, W), got {h} x {w}")
    return h, w


def render_hand(
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    shape: str | None = None,
    skin: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one hand with its sleeve or forearm at a random pose, without background.

    Args:
        rng: the random generator (same state, same hand).
        size: (H, W) of the frame in pixels (at least 16 x 16).
        shape: one of :data:`HAND_SHAPES`; None picks one at random.
        skin: (3,) RGB skin colour 0..255; None draws one with
            :func:`handseg.backgrounds.random_skin_tone`.

    Returns:
        ``(layer, hand_mask, arm_mask)``: layer (H, W, 3) uint8 with the hand's and the
        arm's colours (black elsewhere); hand_mask (H, W) uint8 {0, 1}; arm_mask
        (H, W) uint8 {0, 1}, the sleeve or bare forearm, disjoint from the hand and
        reaching the frame edge. The arm is background in a segmentation mask.
    """
    h, w = _check_size(size)
    layers = _draw_hand(rng, (h, w), shape, skin)
    layer = np.zeros((h, w, 3), np.float32)
    for box, rgb, mask in (
        (layers.arm_box, layers.arm_rgb, layers.arm_mask),
        (layers.hand_box, layers.hand_rgb, layers.hand_mask),
    ):
        m = mask[box].astype(bool)
        layer[box][m] = rgb[m]
    return np.clip(layer, 0, 255).astype(np.uint8), layers.hand_mask, layers.arm_mask


def render_sample(
    rng: np.random.Generator,
    size: tuple[int, int] = (240, 320),
    *,
    backgrounds: BackgroundSource | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic photo and its mask.

    Args:
        rng: the random generator (same state, same sample).
        size: (H, W) in pixels (at least 16 x 16).
        backgrounds: where backgrounds come from (for example the user's own photos);
            None = the built-in generators, a quarter of them the ``skin`` family.

    Returns:
        ``(image, mask)``: image (H, W, 3) uint8 RGB; mask (H, W) uint8 {0 = background,
        1 = hand}. Sleeves and forearms are background.
    """
    h, w = _check_size(size)
    if backgrounds is not None:
        img = backgrounds.sample(rng, (h, w)).astype(np.float32)
    else:
        if rng.uniform() < _SKIN_BG_PROB:
            family = "skin"
        else:
            others = [f for f in FAMILIES if f != "skin"]
            family = others[int(rng.integers(len(others)))]
        img = render_float(rng, h, w, family)  # (H, W, 3) float32, no noise yet
    hand = _draw_hand(rng, (h, w), None, None)

    if not hand.arm_in_front:
        _blend(img, hand.arm_cover, hand.arm_box, hand.arm_rgb)
    if rng.uniform() < 0.6:  # soft shadow on the background, offset from the hand and arm
        occ = np.maximum(hand.hand_cover, hand.arm_cover)
        dx, dy = rng.normal(0, 0.02 * w), rng.normal(0.02 * h, 0.02 * h)
        occ = cv2.warpAffine(occ, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h))
        occ = _box_blur(occ, max(2, int(0.03 * max(h, w))))
        img *= 1.0 - (rng.uniform(0.1, 0.4) / 255.0) * occ[:, :, None].astype(np.float32)
    _blend(img, hand.hand_cover, hand.hand_box, hand.hand_rgb)
    if hand.arm_in_front:
        _blend(img, hand.arm_cover, hand.arm_box, hand.arm_rgb)

    # camera: white balance and exposure, slight defocus, sensor noise
    img *= rng.uniform(0.9, 1.1, 3).astype(np.float32) * rng.uniform(0.8, 1.15)
    if rng.uniform() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.4, 0.9))
    img += rng.uniform(0.5, 4.0) * rng.standard_normal((h, w, 1), dtype=np.float32)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), hand.hand_mask


def make_synthetic(
    out: str | Path,
    n: int = 100,
    size: tuple[int, int] = (240, 320),
    seed: int = 0,
    *,
    progress: bool = True,
    families: tuple[str, ...] | None = None,
) -> Path:
    """Write the synthetic data set: ``out/images/synth_0000.png`` and
    ``out/masks/synth_0000_mask.png`` (8-bit L PNG, 0 = background, 255 = hand).

    Sample ``i`` uses ``np.random.default_rng([seed, i])``, so any sample can be
    regenerated alone and a set of 5 is the first 5 of a set of 10.

    Args:
        out: output folder (created; existing files of the same names are replaced).
        n: number of samples (>= 1).
        size: (H, W) in pixels (at least 16 x 16).
        seed: non-negative random seed.
        progress: show a tqdm progress bar.
        families: background families to draw from (default: all, a quarter of them
            skin-coloured distractors); e.g. ``("plain", "gradient", "texture")`` for an
            easier set.

    Returns:
        ``Path(out)``.
    """
    from PIL import Image
    from tqdm import tqdm

    out = Path(out)
    h, w = _check_size(size)
    if n < 1:
        raise HandsegError(f"number of synthetic images must be at least 1, got {n}")
    if seed < 0:
        raise HandsegError(f"seed must be non-negative, got {seed}")
    if out.exists() and not out.is_dir():
        raise HandsegError(f"output {out} is a file; pass a folder with --out")
    images, masks = out / "images", out / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(n - 1)))
    samples = SyntheticDataset(n, (h, w), seed, cache=False, families=families)
    for i in tqdm(range(n), desc="synth", unit="img", disable=not progress):
        image, mask = samples.load(i)
        stem = f"synth_{i:0{digits}d}"
        Image.fromarray(image, "RGB").save(images / f"{stem}.png", compress_level=4)
        Image.fromarray(mask * np.uint8(255), "L").save(masks / f"{stem}_mask.png")
    return out


class SyntheticDataset:
    """``n`` synthetic samples as training tensors, like :class:`handseg.data.SegDataset`.

    Sample ``i`` is ``render_sample(np.random.default_rng([seed, i]), size)``, the same
    image :func:`make_synthetic` writes as ``synth_<i>``, so the set is deterministic and
    independent of worker processes. ``__getitem__(i)`` returns ``image`` float32
    (3, H, W) normalised with ImageNet mean/std and ``mask`` int64 (H, W) in {0, 1} (or
    ``IGNORE_INDEX`` where ``transform`` moved pixels out of the frame).

    A map-style dataset (``__len__`` and ``__getitem__``), usable with ``DataLoader`` and
    ``ConcatDataset`` without importing torch when this module is imported.

    Args:
        n: number of samples (>= 1).
        size: (H, W) in pixels (at least 16 x 16).
        seed: non-negative random seed.
        transform: optional paired transform ``t(image_uint8, mask_uint8)`` applied after
            rendering (see :mod:`handseg.transforms`).
        cache: keep rendered samples in memory (before the transform).
        families: built-in background families to draw from (None = all, a quarter of
            them skin-coloured distractors), as in :func:`make_synthetic`.
    """

    def __init__(
        self,
        n: int,
        size: tuple[int, int] = (240, 320),
        seed: int = 0,
        transform=None,
        *,
        cache: bool = True,
        families: tuple[str, ...] | None = None,
    ) -> None:

        if n < 1:
            raise HandsegError(f"number of synthetic images must be at least 1, got {n}")
        if seed < 0:
            raise HandsegError(f"seed must be non-negative, got {seed}")
        self.n = int(n)
        self.size = _check_size(size)
        self.seed = int(seed)
        self.transform = transform
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._source = BackgroundSource(families=tuple(families)) if families else None

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"SyntheticDataset(n={self.n}, size={self.size}, seed={self.seed})"

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i`` without transform: image (H, W, 3) uint8, mask (H, W) uint8 {0, 1}."""
        if not 0 <= i < self.n:
            raise IndexError(f"synthetic sample {i} out of range 0..{self.n - 1}")
        if i in self._cache:
            return self._cache[i]
        rng = np.random.default_rng([self.seed, i])
        image, mask = render_sample(rng, self.size, backgrounds=self._source)
        if self.cache:
            image.setflags(write=False)
            mask.setflags(write=False)
            self._cache[i] = (image, mask)
        return image, mask

    def __getitem__(self, i: int):
        import torch

        image, mask = self.load(int(i))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        x = torch.from_numpy(normalize(np.asarray(image)))  # (3, H, W)
        y = torch.from_numpy(np.asarray(mask).astype(np.int64))  # (H, W)
        return x, y
