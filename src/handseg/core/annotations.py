"""Masks <-> annotation-tool encodings: pure array code, no files.

- COCO run-length encoding (RLE), column-major as pycocotools encodes it, with counts as
  pycocotools' compressed string or as a plain list;
- polygons traced from a mask for LabelMe (holes and islands inside holes kept as layers:
  hand polygons, then "background" polygons that cut holes, then hand polygons inside the
  holes, ...) and their rasterisation in file order; COCO polygons' rasterisation (pixel
  squares, centres inside: pycocotools' convention);
- CVAT's ``labelmap.txt`` (``label:r,g,b:parts:actions``) and the colours of its masks.

Masks are (H, W) uint8 with 0 = background, 1 = hand (any non-zero value counts as hand
when encoding). The file formats themselves (which JSON keys, which zip members) live in
:mod:`handseg.core.mask_sources` (reading) and :mod:`handseg.data.convert` (writing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from handseg.core.constants import CLASS_NAMES

BACKGROUND_LABELS: frozenset[str] = frozenset(
    {CLASS_NAMES[0], "_background_", "__background__", "bg", "hole"}
)
"""Label names that mean background in an annotation file (case-insensitive). Any other
label (``hand``, ``left_hand``, ...) is hand."""

HAND_COLOUR: tuple[int, int, int] = (255, 0, 0)
"""The colour of ``hand`` in the CVAT and palette masks handseg writes."""

DEFAULT_TOLERANCE = 1.0
"""Polygon simplification tolerance in pixels (Douglas-Peucker), LabelMe export."""


def is_hand_label(name: Any) -> bool:
    return str(name).strip().lower() not in BACKGROUND_LABELS


# --- COCO RLE ------------------------------------------------------------------------------
def rle_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of ``mask != 0`` in column-major (Fortran) order, starting with a run of
    zeros (0 when the first pixel is hand), as COCO stores them."""
    flat = (np.asarray(mask) != 0).ravel(order="F").astype(np.int8)
    if flat.size == 0:
        return []
    change = np.flatnonzero(np.diff(flat)) + 1  # index where each new run starts
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    return [0, *counts] if flat[0] else counts


def counts_to_string(counts: Sequence[int]) -> str:
    """pycocotools' compressed counts (``rleToString`` in maskApi.c): each count, after the
    first two as the difference to the count two before, in 5-bit groups with a
    continuation bit, offset by 48 into printable ASCII."""
    out = []
    for i, value in enumerate(counts):
        x = int(value) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as C's on a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_counts(text: str, max_counts: int | None = None) -> list[int]:
    """Inverse of :func:`counts_to_string` (``rleFrString``). Raises ValueError on
    characters outside pycocotools' alphabet, on a number longer than any run can be
    (:data:`_MAX_GROUPS` 5-bit groups), and on more than ``max_counts`` counts (checked as
    they are decoded, so a hostile string costs no more than ``max_counts`` numbers)."""
    counts: list[int] = []
    p, n = 0, len(text)
    while p < n:
        if max_counts is not None and len(counts) >= max_counts:
            raise ValueError(f"compressed RLE counts hold more than {max_counts} runs")
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("compressed RLE counts end in the middle of a number")
            if k >= _MAX_GROUPS:
                raise ValueError(f"compressed RLE count {len(counts)} is too long to be a run")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[p]!r} is not in COCO's RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


_MAX_GROUPS = 13
"""5-bit groups in one compressed count: 65 bits, more than any image's pixel count."""


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """``{"size": [H, W], "counts": str}``: the RLE pycocotools' ``mask.encode`` gives
    (with counts decoded from bytes to text, as COCO JSON files hold them)."""
    h, w = np.asarray(mask).shape[:2]
    return {"size": [int(h), int(w)], "counts": counts_to_string(rle_counts(mask))}


def rle_size(rle: dict[str, Any]) -> tuple[int, int]:
    """(H, W) of a COCO RLE's ``size``; ValueError unless it is two positive integers."""
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise ValueError(f"RLE size ({_shown(size)}) is not [height, width]")
    h, w = (as_int(v, "RLE size") for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"RLE size {h} x {w} (H x W) is not positive")
    return h, w


def _run_lengths(counts: Any, pixels: int) -> list[int]:
    """The run lengths of an RLE's ``counts`` (compressed text or bytes, or a list), each
    checked: integers, none negative, at most ``pixels + 1`` of them, summing to ``pixels``.
    Raises ValueError naming the first bad count."""
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        runs = string_to_counts(counts, max_counts=pixels + 1)
    elif isinstance(counts, list):
        if len(counts) > pixels + 1:
            raise ValueError(f"RLE holds {len(counts)} runs, more than H x W + 1 = {pixels + 1}")
        runs = [as_int(c, f"RLE count {i}") for i, c in enumerate(counts)]
    else:
        raise ValueError(f"RLE counts are {_shown(counts)}, not a string or a list")
    bad = next((i for i, c in enumerate(runs) if not 0 <= c <= pixels), None)
    if bad is not None:
        why = "negative" if runs[bad] < 0 else f"more than the image's {pixels} pixels"
        raise ValueError(f"RLE count {bad} is {why} ({runs[bad]}); the counts are corrupt")
    if sum(runs) != pixels:
        raise ValueError(f"RLE counts sum to {sum(runs)}, not H x W = {pixels}")
    return runs


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """(H, W) uint8 {0, 1} of a COCO RLE whose ``counts`` is the compressed string (or
    bytes) or the uncompressed list. Raises ValueError when the size or a count is not a
    non-negative integer or the counts do not sum to H x W, before allocating the mask
    (callers check the size against the pixel budget first: :func:`rle_size`)."""
    h, w = rle_size(rle)
    counts = _run_lengths(rle["counts"], h * w)
    values = np.zeros(len(counts), np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, np.asarray(counts, np.int64))
    return flat.reshape((w, h)).T.copy()  # column-major -> (H, W)


def as_int(value: Any, what: str) -> int:
    """An integer field of an annotation file: an int, or a float or text holding one
    exactly. Anything else (bool, 1.5, NaN, inf, a list, digits beyond Python's int
    conversion limit) raises ValueError naming ``what``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{what} is {_shown(value)}, not an integer")


def _shown(value: Any, k: int = 40) -> str:
    """``repr`` of a value from a file, cut to ``k`` characters for a one-line message."""
    if isinstance(value, (list, dict)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= k else text[: k - 3] + "..."


def bbox_area(mask: np.ndarray) -> tuple[list[float], int]:
    """COCO ``bbox`` [x, y, w, h] (pixels, as pycocotools' ``toBbox``) and ``area``."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [0.0, 0.0, 0.0, 0.0], 0
    x0, y0 = int(xs.min()), int(ys.min())
    box = [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]
    return box, int(xs.size)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """One (H, W) uint8 {0, 1} mask per 8-connected hand region, largest first."""
    import cv2

    binary = (np.asarray(mask) != 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    order = sorted(range(1, n), key=lambda i: -int(stats[i, cv2.CC_STAT_AREA]))
    return [(labels == i).astype(np.uint8) for i in order]


# --- polygons (LabelMe) --------------------------------------------------------------------
def trace_polygons(
    mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE
) -> list[tuple[bool, list[list[float]]]]:
    """``[(is_hand, [[x, y], ...]), ...]`` that :func:`fill_polygons` turns back into the mask.

    Layer 0 is the outline of every hand region (holes filled); layer 1 the outline of every
    hole (background pixels inside a region, traced on those pixels so that erasing them
    erases nothing else); layer 2 hand regions inside holes; and so on. Polygons come layer
    by layer, so drawing them in order (hand = 1, background = 0) rebuilds the mask.
    ``tolerance`` (pixels) simplifies each outline (Douglas-Peucker, ``cv2.approxPolyDP``;
    0 keeps every corner). Specks of 1-2 pixels repeat a point to make the 3 a polygon
    needs. Points are pixel centres (x right, y down), as LabelMe stores them.
    """
    import cv2

    remaining = (np.asarray(mask) != 0).astype(np.uint8)
    target = remaining.copy()  # pixels of this layer's class still to draw
    out: list[tuple[bool, list[list[float]]]] = []
    hand = True
    for _ in range(64):  # nesting depth; real masks stop after 2-4 layers
        if not target.any():
            break
        contours, _ = cv2.findContours(target, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        filled = np.zeros_like(target)
        for c in sorted(contours, key=lambda c: -cv2.contourArea(c)):
            cv2.drawContours(filled, [c], -1, 1, thickness=cv2.FILLED)
            poly = cv2.approxPolyDP(c, tolerance, True) if tolerance > 0 else c
            points = poly.reshape(-1, 2).astype(float).tolist()
            points += [points[0]] * (3 - len(points))  # specks: a polygon needs 3 points
            out.append((hand, points))
        # next layer: pixels inside this layer's outlines that belong to the other class
        target = (filled & (remaining if not hand else 1 - remaining)).astype(np.uint8)
        hand = not hand
    return out


MAX_POLYGON_POINTS = 1_000_000
"""Most points of one polygon read from an annotation file."""


def polygon_points(points: Any, shape: tuple[int, int], *, flat: bool = False) -> np.ndarray:
    """(N, 2) float64 of a polygon read from a file: ``[[x, y], ...]``, or ``[x0, y0, x1,
    ...]`` (COCO) when ``flat``. Raises ValueError (TypeError for mistyped points) unless
    it has at most :data:`MAX_POLYGON_POINTS` points, all finite and within one image size
    of the (H, W) ``shape`` (points slightly outside the image are common; far outside, a
    corrupt file)."""
    h, w = shape
    if not isinstance(points, list):
        raise ValueError("a polygon is not a list of points")
    if len(points) > MAX_POLYGON_POINTS * (2 if flat else 1):
        raise ValueError(f"a polygon has more than {MAX_POLYGON_POINTS} points")
    pts = np.asarray(points, np.float64)
    if pts.size % 2:
        raise ValueError("a polygon has an odd number of coordinates")
    pts = pts.reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise ValueError("a polygon has a NaN or infinite coordinate")
    margin = max(h, w)
    far = (pts < -margin) | (pts > np.array([w, h]) + margin)
    if far.any():
        x, y = pts[np.flatnonzero(far.any(axis=1))[0]]
        raise ValueError(f"polygon point ({x:g}, {y:g}) lies far outside the {w} x {h} image")
    return pts


def fill_polygons(
    shape: tuple[int, int],
    polygons: Iterable[tuple[bool, Sequence[Sequence[float]]]],
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W) uint8 {0, 1}: each polygon drawn in order, filled with 1 (hand) or 0; drawn
    onto ``out`` (an (H, W) uint8 mask, returned) when given, at a cost of the polygons'
    area rather than of the whole mask."""
    import cv2

    out = np.zeros(shape, np.uint8) if out is None else out
    for is_hand, points in polygons:
        pts = np.round(np.asarray(points, np.float64)).astype(np.int32).reshape(-1, 1, 2)
        if len(pts):
            cv2.fillPoly(out, [pts], 1 if is_hand else 0)
            cv2.polylines(out, [pts], True, 1 if is_hand else 0)  # edges are pixels too
    return out


def fill_area_polygon(out: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Fill one polygon onto ``out`` ((H, W) uint8, set to 1 inside; returned) in COCO's
    pixel convention: pixel (row i, column j) is the unit square [j, j + 1] x [i, i + 1], so
    its centre is (j + 0.5, i + 0.5), and it is filled when that centre lies inside the
    polygon (even-odd rule). A square with corners (10, 10) and (20, 20) fills the 100
    pixels of rows and columns 10..19, as pycocotools' ``frPyObjects`` + ``decode`` do
    (LabelMe's points are pixel centres instead: :func:`fill_polygons`).

    ``points``: (N, 2) x, y. Costs the polygon's row crossings plus its bounding box; a
    polygon that crosses the image's rows more often than the image has pixels is corrupt
    (ValueError), since no outline of a mask does.
    """
    h, w = out.shape
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    # rows whose centre line y = r + 0.5 an edge crosses: lo <= r + 0.5 < hi (half-open, so
    # a vertex on the line counts once and horizontal edges not at all)
    first = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, h).astype(np.int64)
    stop = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, h).astype(np.int64)
    rows_per_edge = stop - first
    crossings = int(rows_per_edge.sum())
    if crossings == 0:
        return out
    if crossings > h * w:
        raise ValueError(f"a polygon crosses the rows {crossings} times, more than the "
                         f"{w} x {h} image has pixels")  # fmt: skip
    top, bottom = int(first[rows_per_edge > 0].min()), int(stop.max())
    # parity: each crossing flips every pixel whose centre lies right of it, in its row
    flips = np.zeros((bottom - top, w + 1), np.uint8)
    ends = np.cumsum(rows_per_edge)
    for lo in range(0, len(points), 1 << 16):  # edges in chunks: bounded memory
        hi = min(lo + (1 << 16), len(points))
        n = rows_per_edge[lo:hi]
        if not n.any():
            continue
        edge = np.repeat(np.arange(lo, hi), n)
        rank = np.arange(int(n.sum())) - np.repeat(ends[lo:hi] - n - (ends[lo - 1] if lo else 0), n)
        row = first[edge] + rank
        t = (row + 0.5 - y0[edge]) / (y1[edge] - y0[edge])
        x = x0[edge] + t * (x1[edge] - x0[edge])
        col = np.clip(np.ceil(x - 0.5), 0, w).astype(np.int64)  # first centre right of x
        np.add.at(flips, (row - top, col), 1)
    inside = (np.cumsum(flips, axis=1, dtype=np.uint8)[:, :w] & 1).astype(bool)
    out[top:bottom][inside] = 1
    return out


# --- CVAT labelmap and colour masks --------------------------------------------------------
def format_labelmap(colours: dict[str, tuple[int, int, int]] | None = None) -> str:
    """``labelmap.txt`` of CVAT's "Segmentation mask 1.1": a header, then
    ``label:r,g,b:parts:actions`` per class."""
    colours = colours or {CLASS_NAMES[0]: (0, 0, 0), CLASS_NAMES[1]: HAND_COLOUR}
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{name}:{','.join(str(int(v)) for v in rgb)}::" for name, rgb in colours.items()]
    return "\n".join(lines) + "\n"


def parse_labelmap(text: str) -> dict[str, tuple[int, int, int]]:
    """``{label: (r, g, b)}`` of a ``labelmap.txt``. Raises ValueError on a malformed line."""
    out: dict[str, tuple[int, int, int]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        try:
            rgb = tuple(int(v) for v in parts[1].split(","))
        except (IndexError, ValueError):
            raise ValueError(f"line {n} is not 'label:r,g,b:parts:actions': {line!r}") from None
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError(f"line {n}: colour {parts[1]!r} is not r,g,b in 0..255")
        out[parts[0]] = rgb  # type: ignore[assignment]
    if not out:
        raise ValueError("no labels")
    return out


def colour_mask(mask: np.ndarray, colour: tuple[int, int, int] = HAND_COLOUR) -> np.ndarray:
    """(H, W, 3) uint8 RGB: black background, hand in ``colour``."""
    rgb = np.zeros((*np.asarray(mask).shape[:2], 3), np.uint8)
    rgb[np.asarray(mask) != 0] = colour
    return rgb


def voc_palette(n: int = 256) -> list[int]:
    """Pascal VOC's colour map (the colours of ``SegmentationObject`` instance indices),
    flattened [r0, g0, b0, r1, ...]: index 0 black, 1 (128, 0, 0), 2 (0, 128, 0), ..."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def instance_index(parts: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8: 0 background, i + 1 where ``parts[i]`` is hand (later parts on top)."""
    out = np.zeros(shape, np.uint8)
    for i, part in enumerate(parts[:255]):
        out[np.asarray(part) != 0] = i + 1
    return out


def hand_from_colours(rgb: np.ndarray, labelmap: dict[str, tuple[int, int, int]]) -> np.ndarray:
    """(H, W) uint8 {0, 1}: pixels whose colour is one of the hand labels' in ``labelmap``."""
    out = np.zeros(rgb.shape[:2], bool)
    for name, colour in labelmap.items():
        if is_hand_label(name):
            out |= np.all(rgb[..., :3] == np.asarray(colour, np.uint8), axis=-1)
    return out.astype(np.uint8)
