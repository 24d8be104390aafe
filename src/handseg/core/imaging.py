"""core.imaging."""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from handseg.core.constants import IMAGE_EXTS, IMAGENET_MEAN, IMAGENET_STD, SKIN_CB, SKIN_CR
from handseg.core.errors import HandsegError, check_pixels
from handseg.core.mask_sources import read_annotation_mask
from handseg.core.outputs import is_side_file

_EXIF_ORIENTATION = 0x0112
log = logging.getLogger(__name__)


HAND_VALUE_HINT = "pass hand_value (CLI: --hand-value V) to say which value is hand"


def natural_key(s: str) -> list:
    """Sort key that orders embedded numbers by value: ``img2`` < ``img10`` (case-insensitive)."""
    parts = re.split(r"(\d+)", str(s).lower())
    # re.split with a capture group alternates text, number, text, ...: positions always
    # hold the same type, so keys of different strings compare without a TypeError.
    return [int(p) if i % 2 else p for i, p in enumerate(parts)]


def short_list(items: Sequence[Any], k: int = 5) -> str:
    names = [getattr(x, "name", str(x)) for x in items]
    text = ", ".join(names[:k])
    if len(names) > k:
        text += f", ... ({len(names)} in all)"
    return text


def list_images(folder: str | Path, *, what: str = "images") -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), in natural sort order.

    Files with other extensions are skipped with one warning; hidden files (``.DS_Store``),
    sub-folders and the non-image files ``handseg predict`` writes (hands JSON, manifest)
    are skipped silently. A missing folder, a path that is not a folder,
    or a folder without images raises :class:`HandsegError`.
    """
    folder = Path(folder)
    if not folder.exists():
        raise HandsegError(f"{what} folder {folder} does not exist; check the path")
    if not folder.is_dir():
        raise HandsegError(f"{what} folder {folder} is not a folder; pass the folder itself")
    images, skipped = [], []
    try:
        entries = list(folder.iterdir())
    except OSError as exc:  # e.g. a folder without read permission
        raise HandsegError(
            f"cannot list {what} folder {folder}: {exc.strerror or exc}; check its permissions"
        ) from None
    for p in entries:
        if p.name.startswith(".") or not p.is_file() or is_side_file(p):
            continue  # hidden files, folders, handseg predict's JSON and manifest
        (images if p.suffix.lower() in IMAGE_EXTS else skipped).append(p)
    if skipped:
        skipped.sort(key=lambda p: natural_key(p.name))
        log.warning(
            "skipping %d non-image file(s) in %s: %s", len(skipped), folder, short_list(skipped)
        )
    if not images:
        raise HandsegError(
            f"no images in {what} folder {folder} (looked for {', '.join(IMAGE_EXTS)}); "
            "check the path"
        )
    images.sort(key=lambda p: natural_key(p.name))
    return images


def _open(
    path: Path, what: str, *, draft_hw: tuple[int, int] | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Open and decode ``path`` fully; every decoding failure becomes a HandsegError.

    Returns the decoded image and its stored (W, H) before any draft reduction.

    The size the header declares is checked against the pixel budget
    (:func:`~handseg.core.errors.check_pixels`) before any pixel is decoded. PIL's own
    decompression-bomb guard stays on behind it (~179 MP, a ceiling for a raised budget);
    its warning between ~89 and ~179 MP is silenced as big camera photos are fine.
    With ``draft_hw`` (H, W) a JPEG may decode at 1/2, 1/4 or 1/8 scale, never below it.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise HandsegError(f"{what} {path} is a folder, not an image file; check the path")
        if path.is_symlink():
            raise HandsegError(
                f"{what} {path} is a broken or looping symbolic link; fix or remove the link"
            )
        raise HandsegError(f"{what} {path} does not exist; check the path")
    if path.stat().st_size == 0:
        raise HandsegError(f"{what} {path} is an empty (zero-byte) file; replace or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                stored_wh = im.size
                check_pixels(*stored_wh, f"{what} {path}")
                if draft_hw is not None and im.format == "JPEG":
                    _draft(im, draft_hw)
                im.load()
                return im, stored_wh
    except Image.DecompressionBombError as exc:
        raise HandsegError(
            f"{what} {path} is too large to decode safely ({exc}); downscale it first"
        ) from None
    except PermissionError:
        raise HandsegError(
            f"cannot read {what} {path}: permission denied; make it readable or remove it"
        ) from None
    except HandsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL's decoders raise many types on bad bytes
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HandsegError(
            f"cannot read {what} {path}: {reason}; the file is truncated, corrupt or not an "
            "image: replace or remove it"
        ) from None


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF: treat as upright, as viewers do
        return 1


def _draft(im: Image.Image, draft_hw: tuple[int, int]) -> None:
    """Let a JPEG decode at reduced scale when the target is at most half its size."""
    h, w = draft_hw
    if _orientation(im) in (5, 6, 7, 8):  # stored sideways: draft in stored coordinates
        h, w = w, h
    if 2 * w <= im.width and 2 * h <= im.height:
        im.draft("RGB" if im.mode == "RGB" else None, (w, h))


def _exif_transpose(im: Image.Image, path: Path, what: str) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF must not crash a training run
        log.warning("ignoring unreadable EXIF orientation of %s %s: %s", what, path, exc)
        return im


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB; 16-bit and float images are scaled to 8 bits."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode in ("I", "F") or mode.startswith("I;16"):
        a = np.asarray(im)
        if mode == "F":
            a = a * 255.0 if np.nanmax(a) <= 1.0 else a
        elif mode.startswith("I;16") or a.max() > 255:
            a = a / 257.0  # 16-bit range -> 8-bit
        g = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode in ("P", "PA"):
        im = im.convert("RGBA")  # via RGBA: palette transparency converts without a warning
    return np.asarray(im.convert("RGB"))


def read_image_full(
    path: str | Path, *, exif: bool = True, draft_hw: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """``read_image`` that may decode a JPEG at reduced scale; also returns the full (H, W)."""
    path = Path(path)
    im, (w, h) = _open(path, "image", draft_hw=draft_hw)
    if exif:
        if _orientation(im) in (5, 6, 7, 8):
            w, h = h, w
        im = _exif_transpose(im, path, "image")
    return _to_rgb(im), (h, w)


def read_image(path: str | Path, *, exif: bool = True) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Grayscale, RGB, RGBA (alpha dropped), palette, 16-bit and float images are accepted.
    EXIF orientation is applied unless ``exif=False``. Unreadable, truncated, zero-byte or
    non-image files (and decompression bombs) raise :class:`HandsegError` naming the file.
    """
    return read_image_full(path, exif=exif)[0]


def _values_text(values: np.ndarray, k: int = 8) -> str:
    if values.ndim == 3:
        vals = np.unique(values.reshape(-1, values.shape[-1]), axis=0)
        shown = ", ".join("(" + ",".join(str(int(c)) for c in v) + ")" for v in vals[:k])
    else:
        vals = np.unique(values)
        shown = ", ".join(f"{v:g}" for v in vals[:k].tolist())
    more = f", ... ({len(vals)} distinct)" if len(vals) > k else ""
    return shown + more


def _ambiguous(path: Path, values: np.ndarray, why: str) -> HandsegError:
    return HandsegError(
        f"mask {path}: cannot tell which value is hand ({why}); values found: "
        f"{_values_text(values)}; {HAND_VALUE_HINT}"
    )


def _classify_grey(grey: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Decode an 8-bit grey mask (H, W) to {0, 1}, or (None, reason) when ambiguous.

    Accepted: index masks {0, 1}; bright hands on black thresholded at >= 128, including
    0/250, anti-aliased edges and JPEG noise. JPEG noise and anti-aliasing put values other
    than the two main levels only in thin bands along edges; several label levels instead
    fill regions. So a mask is ambiguous when pixels outside the main dark and bright level
    form flat areas (all four neighbours equal) on more than 0.1 % of the image, or when it
    holds several values but nothing bright.
    """
    hist = np.bincount(grey.ravel(), minlength=256)
    present = np.flatnonzero(hist)
    if present.max() <= 1:  # index mask (or all background / all hand)
        return grey.astype(np.uint8, copy=True), ""
    dark_mass, bright_mass = hist[:128].sum(), hist[128:].sum()
    if bright_mass == 0:
        if len(present) == 1:
            return np.zeros(grey.shape, np.uint8), ""
        return None, "several values, none of them bright (>= 128)"
    if dark_mass == 0 and len(present) == 1:
        return np.ones(grey.shape, np.uint8), ""
    levels = [int(np.argmax(hist[128:])) + 128]
    if dark_mass:
        levels.append(int(np.argmax(hist[:128])))
    stray = grey != levels[0]
    for level in levels[1:]:
        stray &= grey != level
    ys, xs = np.nonzero(stray)
    if ys.size:
        h, w = grey.shape
        v = grey[ys, xs]
        flat = np.ones(ys.shape, bool)
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):  # 4-neighbours, edge-replicated
            flat &= grey[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] == v
        if np.count_nonzero(flat) > max(4, 0.001 * grey.size):
            return None, "more than two levels fill regions, as in a multi-label mask"
    return (grey >= 128).astype(np.uint8), ""


def _colour_clusters(rgb: np.ndarray) -> int:
    """Number of well-populated colour clusters in (H, W, 3) uint8 (8 levels per channel)."""
    q = (rgb >> 5).astype(np.int32)
    code = (q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).ravel()
    hist = np.bincount(code, minlength=512)
    bins = np.flatnonzero(hist >= max(4, 0.005 * code.size))
    bins = bins[np.argsort(-hist[bins])]
    reps: list[np.ndarray] = []
    for b in bins:  # merge neighbouring bins (noise straddling a bin edge)
        c = np.array([b // 64, (b // 8) % 8, b % 8])
        if all(np.abs(c - r).max() > 1 for r in reps):
            reps.append(c)
    return len(reps)


def parse_hand_value(hand_value: Any) -> int | tuple[int, int, int] | None:
    """``--hand-value`` as :func:`read_mask` takes it: None, an int, or an RGB triple (from
    a sequence or an "R,G,B" / "R G B" string); anything else raises :class:`HandsegError`."""
    if hand_value is None:
        return None
    if isinstance(hand_value, str):
        parts = [p for p in re.split(r"[,\s]+", hand_value.strip()) if p]
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise HandsegError(
                f"hand value {hand_value!r} is not a number; give an integer such as 255 or "
                "an RGB colour such as 255,0,0"
            ) from None
        hand_value = nums[0] if len(nums) == 1 else tuple(nums)
    if isinstance(hand_value, Sequence):
        if len(hand_value) != 3:
            raise HandsegError(
                f"hand value {hand_value!r} must be one integer or an RGB colour of 3 integers"
            )
        return tuple(int(v) for v in hand_value)  # type: ignore[return-value]
    return int(hand_value)


def _mask_by_value(path: Path, im: Image.Image, value: int | tuple[int, int, int]) -> np.ndarray:
    mode = im.mode
    if isinstance(value, tuple):
        if mode == "L" or mode == "1" or mode.startswith("I") or mode == "F":
            raise HandsegError(
                f"mask {path} is single-channel ({mode}) but hand value {value} is a colour; "
                "pass one integer"
            )
        rgb = np.asarray(im.convert("RGB"))
        return np.all(rgb == np.array(value, np.uint8), axis=-1).astype(np.uint8)
    if mode in ("P", "PA"):  # palette masks: an integer means a palette index (label id)
        return (np.asarray(im.convert("P") if mode == "PA" else im) == value).astype(np.uint8)
    if mode in ("RGB", "RGBA"):  # grey level: all three channels equal to it
        rgb = np.asarray(im)[..., :3]
        return np.all(rgb == value, axis=-1).astype(np.uint8)
    if mode == "LA":
        im = im.getchannel("L")
    elif mode not in ("L", "1", "F") and not mode.startswith("I"):
        im = im.convert("L")
    return (np.asarray(im) == value).astype(np.uint8)


@functools.cache
def _hand_value_ignored(where: str) -> None:
    """Say once per annotation file or folder that ``--hand-value`` does not apply."""
    log.warning(
        "ignoring --hand-value for the annotations in %s: their labels say what is hand "
        "(every label but background)",
        where,
    )


def _palette_mask(path: Path, im: Image.Image) -> np.ndarray:
    """A palette PNG: decoded through its colours, or indices 0/1 when they say nothing."""
    idx = np.asarray(im.getchannel("P") if im.mode == "PA" else im)
    pal = np.asarray(im.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
    lut = np.zeros(256, np.uint8)
    lut[: len(pal)] = pal.max(axis=1)
    out, why = _classify_grey(lut[idx])
    if out is None and idx.max() <= 1:
        out = idx.astype(np.uint8)
    if out is None:
        raise _ambiguous(path, idx, f"palette mask, {why}")
    return out


def _wide_mask(path: Path, im: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit integer or float mask: floats in 0..1 scaled to 8 bits, integers
    beyond 255 divided by 257, then read as an 8-bit grey mask."""
    raw, mode = np.asarray(im), im.mode
    if mode == "F" and raw.max() <= 1.0 and raw.min() >= 0 and np.any((raw > 0) & (raw < 1)):
        grey = (raw * 255).round().astype(np.uint8)
    else:
        if raw.min() < 0 or raw.max() > 65535 or np.any(raw != np.round(raw)):
            raise _ambiguous(path, raw, f"{mode} values outside 0..65535")
        grey = raw if raw.max() <= 255 else np.round(raw / 257.0)
        grey = grey.astype(np.uint8)
    out, why = _classify_grey(grey)
    if out is None:
        raise _ambiguous(path, raw, why)
    return out


def read_mask(
    path: str | Path, *, hand_value: int | Sequence[int] | str | None = None
) -> np.ndarray:
    """Read a ground-truth mask as (H, W) uint8 with 0 = background, 1 = hand.

    Encodings understood without help:
      - index masks holding 0/1 (8- or 16-bit);
      - 8-bit bright hand on black: 0/255, 0/250, anti-aliased grey edges, JPEG noise;
        thresholded at >= 128 (16-bit masks beyond 255 are scaled to 8 bits first);
      - RGB(A) masks with a white (or one bright colour) hand: channel maximum, >= 128;
      - palette PNGs (decoded through their colours; indices 0/1 when the colours say
        nothing) and 1-bit PNGs.
    Any other mask (several label values or colours, nothing bright) raises
    :class:`HandsegError` naming the file and the values found. ``hand_value`` then says
    which value is hand: ``hand = (value == hand_value)`` on the stored values (palette
    index for palette PNGs; all channels equal to it for RGB), or an RGB triple / "R,G,B"
    string for colour masks. EXIF orientation is applied, as for photos.

    ``path`` may also be an annotation (:mod:`handseg.core.mask_sources`): a LabelMe JSON
    file or a ``<COCO file or CVAT zip>/<member>`` path, decoded by its hand labels
    (``hand_value`` does not apply).
    """
    path = Path(path)
    annotated = read_annotation_mask(path)
    if annotated is not None:
        if hand_value is not None:
            _hand_value_ignored(str(path.parent))
        return annotated
    value = parse_hand_value(hand_value)
    im = _exif_transpose(_open(path, "mask")[0], path, "mask")
    if value is not None:
        return _mask_by_value(path, im, value)

    mode = im.mode
    if mode == "1":
        return np.asarray(im).astype(np.uint8)
    if mode in ("P", "PA"):
        return _palette_mask(path, im)
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _wide_mask(path, im)
    if mode == "LA":
        im = im.getchannel("L")
        mode = "L"
    if mode == "L":
        grey = np.asarray(im)
        out, why = _classify_grey(grey)
        if out is None:
            raise _ambiguous(path, grey, why)
        return out

    rgba = np.asarray(im if mode in ("RGB", "RGBA") else im.convert("RGB"))
    rgb = rgba[..., :3]
    if rgba.shape[-1] == 4 and rgb.min() == rgb.max() and rgba[..., 3].min() < 255:
        grey = rgba[..., 3]  # mask drawn in the alpha channel of a flat-colour layer
    elif np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        grey = rgb[..., 0]
    else:
        if _colour_clusters(rgb) > 2:
            raise _ambiguous(path, rgb, "several colours, as in a multi-label mask")
        grey = rgb.max(axis=-1)
    out, why = _classify_grey(grey)
    if out is None:
        raise _ambiguous(path, rgb, why)
    return out


def skin_pixels(
    rgb: np.ndarray, cr: Sequence[float] = SKIN_CR, cb: Sequence[float] = SKIN_CB
) -> np.ndarray:
    """(H, W) uint8 1 where an (H, W, 3) uint8 RGB image's Cr and Cb (OpenCV full-range
    YCrCb) lie in the inclusive ranges ``cr`` and ``cb``: skin colour."""
    import cv2

    ycc = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YCrCb)
    c_r, c_b = ycc[..., 1], ycc[..., 2]
    return ((c_r >= cr[0]) & (c_r <= cr[1]) & (c_b >= cb[0]) & (c_b <= cb[1])).astype(np.uint8)


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (H, W) uint8 to ``hw``, pixel-centre aligned."""
    import cv2

    if mask.shape[:2] == tuple(hw):
        return mask
    return cv2.resize(mask, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def resize_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, 3) uint8: area averaging when shrinking, bilinear otherwise."""
    import cv2

    h, w = hw
    if image.shape[:2] == (h, w):
        return image
    shrink = h <= image.shape[0] and w <= image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def check_aspect(
    mask_hw: tuple[int, int], image_hw: tuple[int, int], name: str, *, target: str = "its image"
) -> None:
    """Raise :class:`HandsegError` unless a (h, w) mask can be resized onto (H, W): same
    size, or aspect ratios within 1 %. The message names the mask (``name``), ``target``
    (e.g. "its image photo.jpg") and both sizes (W x H)."""
    (mh, mw), (ih, iw) = mask_hw, image_hw
    if (mh, mw) == (ih, iw):
        return
    if abs((mw / mh) / (iw / ih) - 1.0) > 0.01:
        raise HandsegError(
            f"mask {name} is {mw} x {mh} (W x H) but {target} is {iw} x {ih}: the aspect "
            "ratios differ, so the mask cannot be resized to fit; check the pairing or "
            "re-export the mask at the right size"
        )


def fit_mask_to_image(
    mask: np.ndarray, image_hw: tuple[int, int], *, name: str = "mask"
) -> np.ndarray:
    """Fit a (h, w) mask to its image's (H, W).

    Same size: returned unchanged. Same aspect ratio within 1 %: nearest-neighbour resize
    (labels are never interpolated). Otherwise :class:`HandsegError` naming ``name`` and
    both sizes (W x H).
    """
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    check_aspect(mask.shape[:2], image_hw, name)
    return resize_mask(mask, image_hw)


def normalize(
    image: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """The network's input: (H, W, 3) uint8 RGB -> (3, H, W) float32, ``(x / 255 - mean) /
    std`` per channel. The one normalisation of handseg: training, prediction and int8
    calibration all call it, with the mean and std stored in the model card.

    Computed as ``(x - 255 mean) * (1 / (255 std))``: two float32 operations per value.
    """
    offset = np.asarray(mean, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(std, np.float32) * 255.0)
    x = (np.asarray(image, np.float32) - offset) * inv_std  # (H, W, 3), a fresh array
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, H, W)
