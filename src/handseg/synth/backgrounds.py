"""Built-in background generators and a background source for augmentation.

Backgrounds are plain images with no labels: they never contain hands. The families go
from easy to hard for a hand segmenter:

- ``plain``: one colour with a soft light fall-off and sensor noise;
- ``gradient``: linear or radial blends of two colours;
- ``texture``: fractal noise, stripes, tiles, grass, knitted fabric;
- ``clutter``: many overlapping shapes, lines and text in random colours;
- ``indoor``: a wall and a floor with windows, doors, shelves, furniture and plants;
- ``skin``: skin-coloured distractors, the hard negatives: faces, bare arms without
  hands that run in from the frame edge, wood grain, skin-toned objects and walls.

Everything is drawn at the requested size with vectorised numpy and OpenCV drawing, so a
background costs a few milliseconds. :class:`BackgroundSource` mixes these generators
with the user's own background photos.
"""

from __future__ import annotations

import colorsys
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from handseg.core.constants import FAMILIES
from handseg.core.errors import HandsegError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File extensions :class:`BackgroundSource` reads from a background folder."""
# Skin tones from very light to very dark (RGB), roughly along the human skin locus.
_SKIN_ANCHORS = np.array(
    [
        (255, 226, 204),
        (243, 200, 172),
        (228, 176, 140),
        (206, 146, 106),
        (176, 114, 78),
        (140, 86, 58),
        (104, 64, 44),
        (72, 46, 34),
        (52, 34, 26),
    ],
    dtype=np.float32,
)
# Wood: pine, oak, teak, walnut, mahogany (RGB).
_WOOD_ANCHORS = np.array(
    [(224, 184, 130), (196, 150, 96), (170, 112, 62), (120, 78, 46), (110, 52, 36)],
    dtype=np.float32,
)
_KNOB = np.array((200, 180, 90), np.float32)  # brass door knob (RGB)


def random_skin_tone(rng: np.random.Generator) -> np.ndarray:
    """A random skin colour, from very light to very dark.

    Returns:
        (3,) float32 RGB in 0..255: a point on a piecewise-linear skin locus with a little
        independent jitter in redness and yellowness.
    """
    t = rng.uniform(0.0, len(_SKIN_ANCHORS) - 1.0)
    i = min(int(t), len(_SKIN_ANCHORS) - 2)
    f = t - i
    tone = (1.0 - f) * _SKIN_ANCHORS[i] + f * _SKIN_ANCHORS[i + 1]
    bright = tone.mean() / 255.0
    jitter = rng.normal(0.0, 7.0 * (0.4 + bright), size=3).astype(np.float32)
    jitter[1] *= 0.6  # green follows the tone more tightly than red and blue
    tone = tone + jitter + rng.normal(0.0, 8.0) * bright
    return np.clip(tone, 8.0, 255.0).astype(np.float32)


def _random_color(
    rng: np.random.Generator,
    sat: tuple[float, float] = (0.0, 1.0),
    val: tuple[float, float] = (0.1, 1.0),
) -> np.ndarray:
    """A random colour from HSV ranges; (3,) float32 RGB 0..255."""
    h = rng.uniform()
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


def _wood_color(rng: np.random.Generator) -> np.ndarray:
    """A wood colour, often close to a skin tone; (3,) float32 RGB."""
    if rng.uniform() < 0.35:
        return random_skin_tone(rng) * rng.uniform(0.85, 1.05)
    c = _WOOD_ANCHORS[rng.integers(len(_WOOD_ANCHORS))]
    return np.clip(c + rng.normal(0.0, 10.0, size=3), 0, 255).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise with features about ``cell`` pixels wide; (H, W) float32, std ~0.6."""
    gh = max(2, int(h / cell) + 2)
    gw = max(2, int(w / cell) + 2)
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _fractal_noise(
    rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3
) -> np.ndarray:
    """Sum of smooth noise octaves (cell, cell/2, ...), amplitude halving; (H, W) float32."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        out += amp * _smooth_noise(rng, h, w, max(cell, 1.5))
        cell /= 2.0
        amp /= 2.0
    return out


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Broadcastable pixel coordinates: y (H, 1) and x (1, W), float32."""
    return (
        np.arange(h, dtype=np.float32)[:, None],
        np.arange(w, dtype=np.float32)[None, :],
    )


def _ramp(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A linear ramp from 0 to 1 across the frame in a random direction; (H, W) float32."""
    y, x = _coords(h, w)
    a = rng.uniform(0.0, 2.0 * np.pi)
    t = np.cos(a) * x + np.sin(a) * y
    lo = min(0.0, np.cos(a) * (w - 1)) + min(0.0, np.sin(a) * (h - 1))
    hi = max(0.0, np.cos(a) * (w - 1)) + max(0.0, np.sin(a) * (h - 1))
    return (t - lo) / max(hi - lo, 1e-6)


def _light_field(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    """Multiplicative illumination: a tilted ramp plus a soft blob; (H, W, 1) float32 ~1."""
    field = 1.0 + strength * (_ramp(rng, h, w) - 0.5)
    field = field + 0.5 * strength * _smooth_noise(rng, h, w, max(h, w) / 1.5)
    return field[:, :, None]


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend colours a, b (3,) by t (H, W); (H, W, 3) float32."""
    t = t[:, :, None]
    return a * (1.0 - t) + b * t


def _fill(h: int, w: int, color: np.ndarray) -> np.ndarray:
    return np.broadcast_to(color.astype(np.float32), (h, w, 3)).copy()


def _bbox(pts: np.ndarray, h: int, w: int, pad: int = 2) -> tuple[slice, slice] | None:
    """Slices of the frame that hold the points' bounding box (clipped); None if outside."""
    x0 = max(int(np.floor(pts[:, 0].min())) - pad, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + pad + 1, w)
    y0 = max(int(np.floor(pts[:, 1].min())) - pad, 0)
    y1 = min(int(np.ceil(pts[:, 1].max())) + pad + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _paint(
    img: np.ndarray,
    pts: np.ndarray,
    color: np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray],
    draw: Callable[[np.ndarray, tuple[int, int]], None],
    pad: int = 2,
) -> None:
    """Alpha-blend a shape into ``img`` (H, W, 3) float32, in place, inside its bbox.

    ``draw(canvas, offset)`` draws the shape with value 255 (anti-aliased) on a uint8
    canvas covering the bbox, offset (x0, y0) to subtract from frame coordinates.
    ``color`` is a (3,) colour, a full-frame (H, W, 3) colour image, or
    ``f(ys, xs) -> (h, w, 3)`` over the bbox's frame coordinates (ys (h, 1), xs (1, w)).
    """
    h, w = img.shape[:2]
    box = _bbox(pts, h, w, pad)
    if box is None:
        return
    sy, sx = box
    canvas = np.zeros((sy.stop - sy.start, sx.stop - sx.start), np.uint8)
    draw(canvas, (sx.start, sy.start))
    alpha = canvas.astype(np.float32)[:, :, None] * (1.0 / 255.0)
    if callable(color):
        ys = np.arange(sy.start, sy.stop, dtype=np.float32)[:, None]
        xs = np.arange(sx.start, sx.stop, dtype=np.float32)[None, :]
        col = color(ys, xs)
    elif np.ndim(color) == 3:
        col = color[sy, sx]
    else:
        col = np.asarray(color, np.float32)
    region = img[sy, sx]
    region += alpha * (col - region)


def _poly_drawer(pts: np.ndarray) -> Callable[[np.ndarray, tuple[int, int]], None]:
    """A ``draw`` for :func:`_paint` that fills a polygon (N, 2) with sub-pixel precision."""

    def draw(canvas: np.ndarray, off: tuple[int, int]) -> None:
        p = np.round((pts - np.array(off, np.float32)) * 16).astype(np.int32)
        cv2.fillPoly(canvas, [p], 255, cv2.LINE_AA, shift=4)

    return draw


def _line_drawer(
    p0: Sequence[float], p1: Sequence[float], thickness: float
) -> Callable[[np.ndarray, tuple[int, int]], None]:
    """A ``draw`` for :func:`_paint` that strokes an anti-aliased line."""

    def draw(canvas: np.ndarray, off: tuple[int, int]) -> None:
        a = (round((p0[0] - off[0]) * 16), round((p0[1] - off[1]) * 16))
        b = (round((p1[0] - off[0]) * 16), round((p1[1] - off[1]) * 16))
        cv2.line(canvas, a, b, 255, max(1, round(thickness)), cv2.LINE_AA, shift=4)

    return draw


def _line(img: np.ndarray, p0, p1, thickness: float, color: np.ndarray) -> None:
    """Stroke an anti-aliased line on a float image."""
    pts = np.array([p0, p1], np.float32)
    _paint(img, pts, color, _line_drawer(p0, p1, thickness), pad=int(thickness) + 2)


def _ellipse(img: np.ndarray, cx, cy, ax, ay, angle, color) -> None:
    """Fill an anti-aliased ellipse on a float image."""
    pts = _ellipse_pts(cx, cy, max(ax, 0.7), max(ay, 0.7), angle)
    _paint(img, pts, color, _poly_drawer(pts))


def _ellipse_pts(cx: float, cy: float, ax: float, ay: float, angle_deg: float) -> np.ndarray:
    """Outline of an ellipse as a polygon; (N, 2) float32."""
    t = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False, dtype=np.float32)
    a = np.deg2rad(angle_deg)
    x = ax * np.cos(t)
    y = ay * np.sin(t)
    return np.stack(
        [cx + x * np.cos(a) - y * np.sin(a), cy + x * np.sin(a) + y * np.cos(a)], axis=1
    ).astype(np.float32)


def _capsule_pts(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """Outline of a tapered capsule between p0 and p1 with end radii r0, r1; (N, 2)."""
    d = p1 - p0
    a = np.arctan2(d[1], d[0])
    t1 = np.linspace(-np.pi / 2, np.pi / 2, 9, dtype=np.float32) + a
    t0 = np.linspace(np.pi / 2, 3 * np.pi / 2, 9, dtype=np.float32) + a
    end1 = p1 + r1 * np.stack([np.cos(t1), np.sin(t1)], axis=1)
    end0 = p0 + r0 * np.stack([np.cos(t0), np.sin(t0)], axis=1)
    return np.concatenate([end1, end0]).astype(np.float32)


def _edge_point(rng: np.random.Generator, h: int, w: int, margin: float) -> np.ndarray:
    """A random point just outside a random frame edge; (2,) float32 (x, y)."""
    side = rng.integers(4)
    if side == 0:
        return np.array([rng.uniform(0, w), -margin], np.float32)
    if side == 1:
        return np.array([rng.uniform(0, w), h + margin], np.float32)
    if side == 2:
        return np.array([-margin, rng.uniform(0, h)], np.float32)
    return np.array([w + margin, rng.uniform(0, h)], np.float32)


def _plain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    color = _random_color(rng, sat=(0.0, 0.8), val=(0.08, 1.0))
    return _fill(h, w, color) * _light_field(rng, h, w, rng.uniform(0.0, 0.35))


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    a = _random_color(rng, val=(0.1, 1.0))
    b = _random_color(rng, val=(0.1, 1.0))
    if rng.uniform() < 0.7:
        t = _ramp(rng, h, w)
    else:
        y, x = _coords(h, w)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        t = np.clip(r / (rng.uniform(0.5, 1.5) * max(h, w)), 0.0, 1.0)
    t = t ** rng.uniform(0.5, 2.0)
    return _lerp(a, b, t.astype(np.float32))


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(5)
    a = _random_color(rng, sat=(0.0, 0.9), val=(0.1, 1.0))
    b = np.clip(a + rng.normal(0, 60, size=3), 0, 255).astype(np.float32)
    y, x = _coords(h, w)
    if kind == 0:  # fractal noise: stone, plaster, camouflage
        n = _fractal_noise(rng, h, w, rng.uniform(4, max(h, w, 24) / 3), octaves=4)
        t = np.clip(0.5 + rng.uniform(0.3, 0.9) * n, 0, 1)
        return _lerp(a, b, t)
    if kind == 1:  # stripes, warped or straight
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(4, max(h, w, 32) / 4)
        warp = rng.uniform(0, 3) * _smooth_noise(rng, h, w, max(h, w) / 3)
        phase = (np.cos(ang) * x + np.sin(ang) * y) / period * 2 * np.pi + warp
        t = 0.5 + 0.5 * np.sin(phase)
        if rng.uniform() < 0.5:
            t = (t > 0.5).astype(np.float32)
        return _lerp(a, b, t)
    if kind == 2:  # tiles with grout
        tw = rng.uniform(8, max(h, w, 48) / 3)
        th = tw * rng.uniform(0.5, 2.0)
        ix = np.floor(x / tw).astype(np.int32)
        iy = np.floor(y / th).astype(np.int32)
        jitter = rng.normal(0, 12, size=(int(h / th) + 2, int(w / tw) + 2, 3)).astype(np.float32)
        img = a + jitter[iy, ix]
        grout = ((x % tw) < rng.uniform(1, 3)) | ((y % th) < rng.uniform(1, 3))
        img[grout] = b
        return img
    if kind == 3:  # grass or fur: vertical streaks and patches
        a = _random_color(rng, sat=(0.3, 0.9), val=(0.2, 0.8))
        n = rng.standard_normal((h, w), dtype=np.float32)
        n = cv2.blur(n, (1, int(rng.integers(3, 9)))) * 2.0
        patches = _smooth_noise(rng, h, w, max(h, w) / 5)
        t = np.clip(0.5 + 0.35 * n + 0.3 * patches, 0, 1)
        return _lerp(a * 0.55, np.minimum(a * 1.35, 255), t)
    # knitted fabric: a small periodic weave plus noise
    period = rng.uniform(3, 8)
    weave = np.sin(x * 2 * np.pi / period) * np.sin(y * 2 * np.pi / (period * 1.3))
    n = _smooth_noise(rng, h, w, max(h, w) / 4)
    t = np.clip(0.5 + 0.3 * weave + 0.25 * n, 0, 1)
    return _lerp(a, b, t)


def _base(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A cheap base layer for the composite families."""
    kind = rng.integers(3)
    return (_plain, _gradient, _texture)[kind](rng, h, w)


def _random_shape(rng: np.random.Generator, img: np.ndarray, color: np.ndarray, scale: float):
    """Draw one random shape (rectangle, ellipse, polygon, thick line, text) on ``img``."""
    h, w = img.shape[:2]
    cx, cy = rng.uniform(-0.1 * w, 1.1 * w), rng.uniform(-0.1 * h, 1.1 * h)
    size = scale * rng.uniform(0.3, 1.0)
    kind = rng.integers(5)
    if kind == 0:
        box = cv2.boxPoints(((cx, cy), (size * rng.uniform(0.3, 2), size), rng.uniform(0, 180)))
        pts = box.astype(np.float32)
    elif kind == 1:
        pts = _ellipse_pts(cx, cy, size / 2, size / 2 * rng.uniform(0.3, 1), rng.uniform(0, 180))
    elif kind == 2:
        k = rng.integers(3, 8)
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = size / 2 * rng.uniform(0.5, 1.0, k)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.float32)
    elif kind == 3:
        p0 = np.array([cx, cy], np.float32)
        p1 = p0 + rng.normal(0, size, 2).astype(np.float32)
        r = max(1.0, size * rng.uniform(0.02, 0.1))
        pts = _capsule_pts(p0, p1, r, r)
    else:
        text = "".join(chr(c) for c in rng.integers(65, 91, rng.integers(2, 8)))
        font, fs = int(rng.integers(0, 8)), max(0.3, size / 40)
        thick = max(1, int(fs * 2))
        (tw, th), _ = cv2.getTextSize(text, font, fs, thick)
        pts = np.array([[cx, cy - th - thick], [cx + tw, cy + thick]], np.float32)

        def draw(canvas: np.ndarray, off: tuple[int, int]) -> None:
            org = (int(cx) - off[0], int(cy) - off[1])
            cv2.putText(canvas, text, org, font, fs, 255, thick, cv2.LINE_AA)

        _paint(img, pts, color, draw, pad=thick + 2)
        return
    _paint(img, pts, color, _poly_drawer(pts))


def _clutter(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = _base(rng, h, w)
    scale = max(h, w) * rng.uniform(0.1, 0.4)
    for _ in range(rng.integers(8, 40)):
        _random_shape(rng, img, _random_color(rng), scale)
    return img * _light_field(rng, h, w, rng.uniform(0, 0.3))


def _wood(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Wood grain: warped rings along a random direction, with plank seams; (H, W, 3)."""
    y, x = _coords(h, w)
    color = _wood_color(rng)
    ang = rng.uniform(0, np.pi)
    u = np.cos(ang) * x + np.sin(ang) * y  # along the grain
    v = -np.sin(ang) * x + np.cos(ang) * y  # across the grain
    warp = _smooth_noise(rng, h, w, max(h, w) / rng.uniform(1.5, 4)) * rng.uniform(5, 25)
    period = rng.uniform(3, 12)
    rings = 0.5 + 0.5 * np.sin((v + warp + 0.02 * u) * (2 * np.pi / period))
    rings = rings ** rng.uniform(1, 4)
    streak = cv2.blur(rng.standard_normal((h, w), dtype=np.float32), (9, 1))
    if abs(np.cos(ang)) < 0.7:
        streak = cv2.blur(rng.standard_normal((h, w), dtype=np.float32), (1, 9))
    shade = 1.0 - rng.uniform(0.1, 0.3) * rings + 0.04 * streak
    plank = rng.uniform(25, 90)
    seams = (np.abs(((v + plank / 2) % plank) - plank / 2) < 0.8).astype(np.float32)
    if rng.uniform() < 0.6:
        shade = shade * (1.0 - 0.35 * seams)
    return color * shade[:, :, None]


def _indoor(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A room: a wall, often a floor, 2-5 items on them, room light and maybe defocus."""
    wall = _random_color(rng, sat=(0.0, 0.35), val=(0.45, 1.0))
    img = _fill(h, w, wall) + rng.uniform(0, 6) * _smooth_noise(rng, h, w, 30)[:, :, None]
    horizon = int(h * rng.uniform(0.45, 1.1))
    if horizon < h:
        _indoor_floor(rng, img, wall, horizon)
    for _ in range(rng.integers(2, 6)):
        _indoor_item(rng, img, horizon)
    img = img * _light_field(rng, h, w, rng.uniform(0.1, 0.5))
    if rng.uniform() < 0.5:  # out-of-focus room behind the signer
        k = int(rng.integers(1, 4)) * 2 + 1
        img = cv2.GaussianBlur(img, (k, k), 0)
    return img


def _indoor_floor(rng: np.random.Generator, img: np.ndarray, wall: np.ndarray, horizon: int):
    """Paint a floor (wood, a texture or one colour) below ``horizon``, in place, darker
    towards the wall, and a skirting board in a shade of the wall colour above it."""
    h, w = img.shape[:2]
    floor_kind = rng.integers(3)
    fh = h - horizon
    if floor_kind == 0:
        floor = _wood(rng, fh, w)
    elif floor_kind == 1:
        floor = _texture(rng, fh, w)
    else:
        floor = _fill(fh, w, _random_color(rng, sat=(0, 0.6), val=(0.15, 0.8)))
    img[horizon:] = floor * np.linspace(0.8, 1.1, fh, dtype=np.float32)[:, None, None]
    base = np.clip(wall * rng.uniform(0.5, 1.2), 0, 255)
    img[max(0, horizon - max(2, h // 40)) : horizon] = base


def _rect_pts(x0: float, y0: float, iw: float, ih: float) -> np.ndarray:
    """Corners of an axis-aligned rectangle, clockwise from the top left; (4, 2) float32."""
    return np.array([[x0, y0], [x0 + iw, y0], [x0 + iw, y0 + ih], [x0, y0 + ih]], np.float32)


def _indoor_item(rng: np.random.Generator, img: np.ndarray, horizon: int) -> None:
    """Paint one random room item in a random box, in place: a window, a door (down to the
    floor at ``horizon``), a bookshelf, a picture, a piece of furniture or a plant."""
    h, w = img.shape[:2]
    item = rng.integers(6)
    iw, ih = w * rng.uniform(0.12, 0.4), h * rng.uniform(0.15, 0.6)
    x0, y0 = rng.uniform(-0.1 * w, w), rng.uniform(-0.1 * h, 0.9 * h)
    if item == 0:
        _window(rng, img, x0, y0, iw, ih)
    elif item == 1:
        _door(rng, img, x0, y0, iw, ih, horizon if horizon < h else h)
    elif item == 2:
        _bookshelf(rng, img, x0, y0, iw, ih)
    elif item == 3:
        _picture(rng, img, x0, y0, iw, ih)
    elif item == 4:
        _furniture(rng, img, x0, y0, iw, ih)
    else:
        _plant(rng, img, x0, y0, iw, ih)


def _window(rng: np.random.Generator, img: np.ndarray, x0, y0, iw, ih) -> None:
    """A window: frame, bright pane with a sky-like colour, cross bars."""
    rect = _rect_pts(x0, y0, iw, ih)
    frame = _random_color(rng, sat=(0, 0.3), val=(0.3, 1))
    _paint(img, rect, frame, _poly_drawer(rect))
    inner = rect + np.array([[3, 3], [-3, 3], [-3, -3], [3, -3]], np.float32)
    sky = _random_color(rng, sat=(0, 0.4), val=(0.8, 1))
    _paint(img, inner, sky, _poly_drawer(inner))
    bar = max(1.0, min(iw, ih) * 0.04)
    mx, my = x0 + iw / 2, y0 + ih / 2
    _line(img, (mx, y0), (mx, y0 + ih), bar, frame)
    _line(img, (x0, my), (x0 + iw, my), bar, frame)


def _door(rng: np.random.Generator, img: np.ndarray, x0, y0, iw, ih, bottom) -> None:
    """A door with a knob, reaching down to ``bottom`` (the floor or the frame's edge)."""
    rect = _rect_pts(x0, y0, iw, ih)
    rect[2:, 1] = bottom
    door = _random_color(rng, sat=(0, 0.5), val=(0.2, 0.9))
    _paint(img, rect, door, _poly_drawer(rect))
    kr = max(1.0, iw * 0.05)
    _ellipse(img, x0 + iw * 0.85, (y0 + rect[2, 1]) / 2, kr, kr, 0, _KNOB)


def _bookshelf(rng: np.random.Generator, img: np.ndarray, x0, y0, iw, ih) -> None:
    """A shelf of books of random widths, heights and colours, standing on the box's bottom."""
    w = img.shape[1]
    x = x0
    while x < x0 + iw:
        bw = rng.uniform(3, 10) * w / 320
        bh = ih * rng.uniform(0.6, 1.0)
        book = np.array(
            [[x, y0 + ih - bh], [x + bw, y0 + ih - bh], [x + bw, y0 + ih], [x, y0 + ih]],
            np.float32,
        )
        _paint(img, book, _random_color(rng, val=(0.2, 0.9)), _poly_drawer(book))
        x += bw + 0.5


def _picture(rng: np.random.Generator, img: np.ndarray, x0, y0, iw, ih) -> None:
    """A picture frame with an abstract (sine-wave) picture."""
    rect = _rect_pts(x0, y0, iw, ih)
    frame = _random_color(rng, val=(0.1, 0.8))
    _paint(img, rect, frame, _poly_drawer(rect))
    b = max(2.0, min(iw, ih) * 0.08)
    inner = rect + np.array([[b, b], [-b, b], [-b, -b], [b, -b]], np.float32)
    pic = _random_color(rng)
    _paint(
        img,
        inner,
        lambda ys, xs, c=pic: c + 40 * np.sin(xs / 7 + ys / 11)[..., None],
        _poly_drawer(inner),
    )


def _furniture(rng: np.random.Generator, img: np.ndarray, x0, y0, iw, ih) -> None:
    """Furniture: a rounded box (sofa, cabinet, table), lit from above."""
    color = _random_color(rng, val=(0.15, 0.9))
    pts = _capsule_pts(
        np.array([x0, y0 + ih / 2], np.float32),
        np.array([x0 + iw * 1.5, y0 + ih / 2], np.float32),
        ih / 3,
        ih / 3,
    )
    _paint(img, pts, _vertical_shade(color, y0, ih, rng.uniform(0.1, 0.4)), _poly_drawer(pts))


def _plant(rng: np.random.Generator, img: np.ndarray, x0, y0, iw, ih) -> None:
    """A plant: a pot at the box's bottom and green leaf blobs above it."""
    pot = _random_color(rng, sat=(0.2, 0.8), val=(0.3, 0.8))
    px, py = x0 + iw / 2, y0 + ih
    potp = np.array(
        [
            [px - iw / 5, py - ih / 4],
            [px + iw / 5, py - ih / 4],
            [px + iw / 7, py],
            [px - iw / 7, py],
        ],
        np.float32,
    )
    _paint(img, potp, pot, _poly_drawer(potp))
    green = _random_color(rng, sat=(0.4, 0.9), val=(0.2, 0.6))
    green[1] = max(green[1], green[0] + 30, green[2] + 20)
    for _ in range(rng.integers(4, 10)):
        lx = px + rng.normal(0, iw / 5)
        ly = py - ih / 4 - abs(rng.normal(0, ih / 3))
        leaf = _ellipse_pts(lx, ly, iw / 8, iw / 20, rng.uniform(0, 180))
        _paint(img, leaf, green * rng.uniform(0.7, 1.2), _poly_drawer(leaf))


def _vertical_shade(color: np.ndarray, top: float, height: float, strength: float):
    """A colour function for :func:`_paint`: darker towards the bottom of an object."""

    def shade(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        t = np.clip((ys - top) / max(height, 1.0), 0, 1) + 0 * xs
        return color * (1.0 - strength * t)[..., None]

    return shade


def _cylinder_shade(
    color: np.ndarray, a: np.ndarray, normal: np.ndarray, radius: float, light: float
):
    """A colour function for :func:`_paint`: a lit cylinder along a line through ``a``
    with unit ``normal``; darker towards the silhouette, brighter on the ``light`` side."""

    def shade(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        s = ((xs - a[0]) * normal[0] + (ys - a[1]) * normal[1]) / radius  # -1..1 across
        return color * (1.0 - 0.25 * s * s + 0.12 * light * s)[..., None]

    return shade


def _face(rng: np.random.Generator, img: np.ndarray) -> None:
    """A face-like skin oval with hair, eyes, brows, mouth, neck and shoulders."""
    h, w = img.shape[:2]
    tone = random_skin_tone(rng)
    ax = min(h, w) * rng.uniform(0.12, 0.3)
    ay = ax * rng.uniform(1.2, 1.45)
    cx, cy = rng.uniform(0.0, w), rng.uniform(0.1 * h, 0.9 * h)
    tilt = rng.normal(0, 10)
    # shoulders/shirt and neck down to the bottom of the frame
    shirt = _random_color(rng, val=(0.1, 0.9))
    sh = np.array(
        [
            [cx - 2.6 * ax, h + 5],
            [cx - 2.2 * ax, cy + 1.6 * ay],
            [cx + 2.2 * ax, cy + 1.6 * ay],
            [cx + 2.6 * ax, h + 5],
        ],
        np.float32,
    )
    if cy + 1.6 * ay < h:
        _paint(img, sh, shirt, _poly_drawer(sh))
    neck = np.array(
        [
            [cx - 0.5 * ax, cy],
            [cx + 0.5 * ax, cy],
            [cx + 0.55 * ax, cy + 1.7 * ay],
            [cx - 0.55 * ax, cy + 1.7 * ay],
        ],
        np.float32,
    )
    _paint(img, neck, tone * 0.8, _poly_drawer(neck))
    hair = _random_color(rng, sat=(0.1, 0.7), val=(0.03, 0.5))
    if rng.uniform() < 0.85:
        hp = _ellipse_pts(cx, cy - 0.18 * ay, ax * 1.12, ay * 0.95, tilt)
        _paint(img, hp, hair, _poly_drawer(hp))
    face = _ellipse_pts(cx, cy, ax, ay, tilt)
    lx, ly = rng.normal(0, 1, 2)

    def shaded(ys, xs):
        dx, dy = (xs - cx) / ax, (ys - cy) / ay
        r2 = dx * dx + dy * dy
        s = 1.05 - 0.25 * r2 + 0.1 * (lx * dx + ly * dy)
        return tone * s[..., None]

    _paint(img, face, shaded, _poly_drawer(face))
    if rng.uniform() < 0.7:  # fringe of hair over the forehead
        fp = _ellipse_pts(cx, cy - 0.75 * ay, ax * 0.9, ay * 0.3, tilt)
        _paint(img, fp, hair, _poly_drawer(fp))
    for side in (-1, 1):
        ex, ey = cx + side * 0.38 * ax, cy - 0.1 * ay
        _ellipse(img, ex, ey, ax * 0.14, ax * 0.06, tilt, tone * 0.35)
        brow = hair * 0.8
        _line(
            img, (ex - 0.15 * ax, ey - 0.18 * ay), (ex + 0.15 * ax, ey - 0.2 * ay), ax * 0.05, brow
        )
    _line(img, (cx, cy - 0.05 * ay), (cx + 0.05 * ax, cy + 0.25 * ay), ax * 0.04, tone * 0.75)
    lips = np.clip(tone * np.array([0.85, 0.55, 0.55], np.float32), 0, 255)
    _ellipse(img, cx, cy + 0.5 * ay, 0.3 * ax, 0.07 * ay, tilt, lips)


def _arm(rng: np.random.Generator, img: np.ndarray) -> None:
    """A bare arm without a hand: enters from a frame edge, may bend at the elbow, and
    either leaves the frame again or ends in a rounded elbow/stump or a sleeve cuff."""
    h, w = img.shape[:2]
    tone = random_skin_tone(rng)
    r = min(h, w) * rng.uniform(0.04, 0.1)
    p0 = _edge_point(rng, h, w, 3 * r)
    centre = np.array([w / 2, h / 2], np.float32)
    d = centre - p0 + rng.normal(0, 0.3 * max(h, w), 2).astype(np.float32)
    d /= np.hypot(*d) + 1e-6
    length = max(h, w) * rng.uniform(0.4, 1.2)
    p1 = p0 + d * length
    segs = [(p0, p1, r * 1.1, r)]
    if rng.uniform() < 0.5:  # elbow bend
        ang = rng.uniform(-2.0, 2.0)
        d2 = np.array(
            [d[0] * np.cos(ang) - d[1] * np.sin(ang), d[0] * np.sin(ang) + d[1] * np.cos(ang)],
            np.float32,
        )
        p2 = p1 + d2 * max(h, w) * rng.uniform(0.3, 1.0)
        segs.append((p1, p2, r, r * 0.8))
    lx = rng.uniform(-1, 1)
    for a, b, ra, rb in segs:
        pts = _capsule_pts(a, b, ra, rb)
        ab = b - a
        n = np.array([-ab[1], ab[0]], np.float32) / (np.hypot(*ab) + 1e-6)

        _paint(img, pts, _cylinder_shade(tone, a, n, max(ra, rb), lx), _poly_drawer(pts))
    if rng.uniform() < 0.3:  # a sleeve covering the far end
        a, b, ra, rb = segs[-1]
        cuff = _capsule_pts(b - (b - a) * 0.25, b + (b - a), rb * 1.3, rb * 1.4)
        _paint(img, cuff, _random_color(rng, val=(0.05, 0.9)), _poly_drawer(cuff))


def _skin_blob(rng: np.random.Generator, img: np.ndarray) -> None:
    """A skin-toned object: a rounded polygon or ellipse with soft shading."""
    h, w = img.shape[:2]
    tone = random_skin_tone(rng) * rng.uniform(0.85, 1.1)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    size = min(h, w) * rng.uniform(0.08, 0.35)
    if rng.uniform() < 0.5:
        pts = _ellipse_pts(cx, cy, size, size * rng.uniform(0.3, 1.0), rng.uniform(0, 180))
    else:
        k = rng.integers(4, 9)
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = size * rng.uniform(0.5, 1.0, k)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.float32)
    g = rng.normal(0, 1, 2)

    def shade(ys, xs):
        s = 1.0 + 0.15 * ((xs - cx) * g[0] + (ys - cy) * g[1]) / size
        return tone * s[..., None]

    _paint(img, pts, shade, _poly_drawer(pts))


def _skin(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    u = rng.uniform()
    if u < 0.2:  # a skin-toned wall
        img = _fill(h, w, random_skin_tone(rng) * rng.uniform(0.8, 1.1))
        img *= _light_field(rng, h, w, rng.uniform(0.1, 0.4))
    elif u < 0.4:  # a wooden table or door filling the frame
        img = _wood(rng, h, w)
    elif u < 0.55:
        img = _indoor(rng, h, w)
    else:
        img = _base(rng, h, w)
    if rng.uniform() < 0.3:  # a wooden panel in part of the frame
        x0, y0 = rng.uniform(-0.2 * w, w), rng.uniform(-0.2 * h, h)
        pw, ph = rng.uniform(0.3, 1.0) * w, rng.uniform(0.3, 1.0) * h
        rect = np.array([[x0, y0], [x0 + pw, y0], [x0 + pw, y0 + ph], [x0, y0 + ph]], np.float32)
        _paint(img, rect, _wood(rng, h, w), _poly_drawer(rect))
    for _ in range(rng.integers(1, 4)):
        kind = rng.choice(3, p=(0.35, 0.35, 0.3))
        (_face, _arm, _skin_blob)[kind](rng, img)
    return img


_RENDERERS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "plain": _plain,
    "gradient": _gradient,
    "texture": _texture,
    "clutter": _clutter,
    "indoor": _indoor,
    "skin": _skin,
}


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise HandsegError(f"background size must be positive (H, W), got {tuple(size)}")
    return h, w


def _check_family(family: str) -> str:
    if family not in _RENDERERS:
        raise HandsegError(
            f"unknown background family {family!r}; choose from: {', '.join(FAMILIES)}"
        )
    return family


def render_background(
    rng: np.random.Generator, size: tuple[int, int], family: str | None = None
) -> np.ndarray:
    """Render one built-in background.

    Args:
        rng: the random generator; the same generator state gives the same image.
        size: (H, W) in pixels.
        family: one of :data:`FAMILIES`; None picks one at random.

    Returns:
        (H, W, 3) uint8 RGB image, with mild sensor noise. It never contains a hand.
    """
    h, w = _check_size(size)
    if family is None:
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    img = render_float(rng, h, w, _check_family(family))
    img += rng.uniform(0.5, 4.0) * rng.standard_normal((h, w, 1), dtype=np.float32)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def render_float(rng: np.random.Generator, h: int, w: int, family: str) -> np.ndarray:
    """A background without sensor noise; (H, W, 3) float32, a new writable array.

    For :mod:`handseg.synthetic`, which composites in float and adds its own noise.
    """
    img = _RENDERERS[family](rng, h, w)
    if img.dtype != np.float32 or not img.flags.writeable:
        img = img.astype(np.float32)
    return img


def _natural_key(path: Path) -> list[int | str]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


class BackgroundSource:
    """A source of random backgrounds: the user's own photos and/or built-in generators.

    Args:
        folder: a folder of background photos (any of :data:`IMAGE_EXTENSIONS`; other
            files are ignored), read in natural sort order. Each sample is a random crop
            with the requested aspect ratio (30-100 % of the largest such crop), randomly
            mirrored, resized to the requested size.
        families: built-in generators to use (names from :data:`FAMILIES`); None = all,
            an empty sequence = none (then ``folder`` is required).
        folder_prob: the probability of drawing from the folder when both are available.

    Raises:
        HandsegError: missing or empty folder, unknown family, or nothing to draw from.
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        families: Sequence[str] | None = None,
        folder_prob: float = 0.5,
    ) -> None:
        self.families: tuple[str, ...] = (
            FAMILIES if families is None else tuple(_check_family(f) for f in families)
        )
        self.files: list[Path] = []
        if folder is not None:
            folder = Path(folder)
            if not folder.is_dir():
                raise HandsegError(
                    f"background folder {folder} does not exist; pass a folder of photos"
                )
            self.files = sorted(
                (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                key=_natural_key,
            )
            if not self.files:
                raise HandsegError(
                    f"background folder {folder} holds no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}); add some background photos"
                )
        if not self.files and not self.families:
            raise HandsegError("no backgrounds to draw from: give a folder or some families")
        if not 0.0 <= folder_prob <= 1.0:
            raise HandsegError(f"folder_prob must be within 0..1, got {folder_prob}")
        self.folder_prob = folder_prob if self.families else 1.0
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cache_size = 32

    def __repr__(self) -> str:
        return (
            f"BackgroundSource(files={len(self.files)}, families={self.families}, "
            f"folder_prob={self.folder_prob})"
        )

    def _load(self, path: Path) -> np.ndarray:
        """The photo as (H, W, 3) uint8, shorter side at most 1024; cached (LRU)."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.draft("RGB", (1024, 1024))
                im = ImageOps.exif_transpose(im).convert("RGB")
                if min(im.size) > 1024:
                    f = 1024 / min(im.size)
                    im = im.resize((round(im.width * f), round(im.height * f)))
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise HandsegError(
                f"cannot read background image {path} ({exc}); remove or replace it"
            ) from exc
        self._cache[path] = arr
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arr

    def _from_photo(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        photo = self._load(self.files[int(rng.integers(len(self.files)))])
        ph, pw = photo.shape[:2]
        # the largest crop with the target aspect ratio, then a random 30-100 % of it
        ch, cw = (ph, ph * w / h) if ph * w / h <= pw else (pw * h / w, pw)
        f = np.sqrt(rng.uniform(0.3, 1.0))
        ch, cw = max(1, round(ch * f)), max(1, round(cw * f))
        y0 = int(rng.integers(0, ph - ch + 1))
        x0 = int(rng.integers(0, pw - cw + 1))
        crop = photo[y0 : y0 + ch, x0 : x0 + cw]
        if rng.uniform() < 0.5:
            crop = crop[:, ::-1]
        interp = cv2.INTER_AREA if ch > h else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=interp)

    def sample(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        """Draw one background.

        Args:
            rng: the random generator (same state, same background).
            size: (H, W) in pixels.

        Returns:
            (H, W, 3) uint8 RGB image.
        """
        h, w = _check_size(size)
        if self.files and rng.uniform() < self.folder_prob:
            return self._from_photo(rng, h, w)
        family = self.families[int(rng.integers(len(self.families)))]
        return render_background(rng, (h, w), family)
