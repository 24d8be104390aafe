"""Files -> pairs -> arrays -> split -> ``Dataset``.

Finding (image, mask) pairs in two folders, decoding images to 8-bit RGB and masks to
{0 = background, 1 = hand}, fitting masks to their images, the seeded train/val/test
split (``split.json``), MATLAB-style class counts with median-frequency weights, and the
torch :class:`SegDataset` that feeds training.

Every problem a user can cause (missing folder, unreadable file, unknown mask encoding,
size mismatch, orphan files) raises :class:`~handseg.errors.HandsegError` with a one-line
message that names the file and says what to do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from handseg.errors import HandsegError

__all__ = [
    "IMAGE_EXTS",
    "MASK_SUFFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IGNORE_INDEX",
    "CLASS_NAMES",
    "natural_key",
    "list_images",
    "PairList",
    "find_pairs",
    "read_image",
    "read_mask",
    "fit_mask_to_image",
    "load_pair",
    "make_split",
    "save_split",
    "load_split",
    "label_counts",
    "median_frequency_weights",
    "SegDataset",
]

log = logging.getLogger(__name__)

IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES: tuple[str, ...] = ("_mask", "-mask", "_label", "_gt", "_seg")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
"""Mask value for undefined pixels (e.g. filled in by a translation); no loss, no metric."""
CLASS_NAMES = ("background", "hand")
SUBSETS = ("train", "val", "test")

_EXIF_ORIENTATION = 0x0112
_HAND_VALUE_HINT = "pass hand_value (CLI: --hand-value V) to say which value is hand"


# --- discovery ---------------------------------------------------------------------------


def natural_key(s: str) -> list:
    """Sort key that orders embedded numbers by value: ``img2`` < ``img10`` (case-insensitive)."""
    parts = re.split(r"(\d+)", str(s).lower())
    # re.split with a capture group alternates text, number, text, ...: positions always
    # hold the same type, so keys of different strings compare without a TypeError.
    return [int(p) if i % 2 else p for i, p in enumerate(parts)]


def _short_list(items: Sequence[Any], k: int = 5) -> str:
    names = [getattr(x, "name", str(x)) for x in items]
    text = ", ".join(names[:k])
    if len(names) > k:
        text += f", ... ({len(names)} in all)"
    return text


def list_images(folder: str | Path, *, what: str = "images") -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), in natural sort order.

    Files with other extensions are skipped with one warning; hidden files (``.DS_Store``)
    and sub-folders are skipped silently. A missing folder, a path that is not a folder,
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
        if p.name.startswith(".") or not p.is_file():
            continue
        (images if p.suffix.lower() in IMAGE_EXTS else skipped).append(p)
    if skipped:
        skipped.sort(key=lambda p: natural_key(p.name))
        log.warning(
            "skipping %d non-image file(s) in %s: %s", len(skipped), folder, _short_list(skipped)
        )
    if not images:
        raise HandsegError(
            f"no images in {what} folder {folder} (looked for {', '.join(IMAGE_EXTS)}); "
            "check the path"
        )
    images.sort(key=lambda p: natural_key(p.name))
    return images


class PairList(list):
    """A ``list[tuple[Path, Path]]`` of (image, mask) pairs that remembers how it was paired.

    ``rule`` is ``"stem"`` (matching file names) or ``"natural-order"`` (i-th image with the
    i-th mask in natural sort order, the seed workflow's rule).
    """

    def __init__(self, pairs: Iterable[tuple[Path, Path]] = (), rule: str = "stem") -> None:
        super().__init__(pairs)
        self.rule = rule


def _mask_keys(stem: str) -> list[str]:
    """Candidate image stems for a mask stem: itself, then with a mask suffix removed."""
    low = stem.lower()
    keys = [low]
    keys += [low[: -len(s)] for s in MASK_SUFFIXES if low.endswith(s) and len(low) > len(s)]
    return keys


def find_pairs(images_dir: str | Path, masks_dir: str | Path) -> PairList:
    """Pair every image in ``images_dir`` with its mask in ``masks_dir``.

    Rules, in order:
      1. by file stem (case-insensitive), allowing a mask suffix (``_mask``, ``-mask``,
         ``_label``, ``_gt``, ``_seg``) and any image extension on either side;
      2. when no stem matches and the counts are equal, by natural sort order
         (``img2`` before ``img10``), as the seed workflow does;
      3. otherwise :class:`HandsegError` naming the orphans on each side.

    Images and masks may share one folder (masks then need a mask suffix).
    Returns a :class:`PairList` in natural order of the image names; ``.rule`` says which
    rule was used (also logged).
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = list_images(images_dir, what="images")
    masks = list_images(masks_dir, what="masks")
    if images_dir.resolve() == masks_dir.resolve():
        masks = [p for p in images if len(_mask_keys(p.stem)) > 1]
        images = [p for p in images if len(_mask_keys(p.stem)) == 1]
        if not images or not masks:
            raise HandsegError(
                f"images and masks share folder {images_dir} but masks need a suffix "
                f"({', '.join(MASK_SUFFIXES)}); put them in separate folders"
            )

    by_stem: dict[str, Path] = {}
    for p in images:
        key = p.stem.lower()
        if key in by_stem:
            raise HandsegError(
                f"two images share the name {p.stem!r} in {images_dir}: {by_stem[key].name} "
                f"and {p.name}; rename or remove one"
            )
        by_stem[key] = p

    mask_for: dict[Path, Path] = {}
    orphan_masks: list[Path] = []
    for m in masks:
        img = next((by_stem[k] for k in _mask_keys(m.stem) if k in by_stem), None)
        if img is None:
            orphan_masks.append(m)
        elif img in mask_for:
            raise HandsegError(
                f"image {img.name} has two masks in {masks_dir}: {mask_for[img].name} and "
                f"{m.name}; remove one"
            )
        else:
            mask_for[img] = m
    orphan_images = [p for p in images if p not in mask_for]

    if not orphan_images and not orphan_masks:
        pairs = PairList(((p, mask_for[p]) for p in images), rule="stem")
        log.info("paired %d images with masks by file name", len(pairs))
        return pairs
    if not mask_for and len(images) == len(masks):
        pairs = PairList(zip(images, masks), rule="natural-order")
        log.info(
            "no image and mask names match: paired %d images with masks by natural sort order "
            "(first: %s <-> %s)",
            len(pairs),
            images[0].name,
            masks[0].name,
        )
        return pairs
    if not mask_for:
        raise HandsegError(
            f"no image name matches a mask name and the counts differ ({len(images)} images "
            f"in {images_dir}, {len(masks)} masks in {masks_dir}), so they cannot be paired "
            "by name or by order; remove the extra files or name masks after their images"
        )
    parts = []
    if orphan_images:
        parts.append(f"{len(orphan_images)} image(s) without a mask: {_short_list(orphan_images)}")
    if orphan_masks:
        parts.append(f"{len(orphan_masks)} mask(s) without an image: {_short_list(orphan_masks)}")
    raise HandsegError(
        f"cannot pair {images_dir} with {masks_dir}: {'; '.join(parts)}; add the missing "
        "files or remove the orphans"
    )


# --- reading -----------------------------------------------------------------------------


def _open(
    path: Path, what: str, *, draft_hw: tuple[int, int] | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Open and decode ``path`` fully; every decoding failure becomes a HandsegError.

    Returns the decoded image and its stored (W, H) before any draft reduction.

    PIL's decompression-bomb guard stays on (its default limit, ~179 MP, raises); the
    warning PIL gives between ~89 and ~179 MP is silenced as big camera photos are fine.
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
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
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


def _read_image_full(
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
    return _read_image_full(path, exif=exif)[0]


# --- masks -------------------------------------------------------------------------------


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
        f"{_values_text(values)}; {_HAND_VALUE_HINT}"
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


def _parse_hand_value(hand_value: Any) -> int | tuple[int, int, int] | None:
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
    """
    path = Path(path)
    value = _parse_hand_value(hand_value)
    im = _exif_transpose(_open(path, "mask")[0], path, "mask")
    if value is not None:
        return _mask_by_value(path, im, value)

    mode = im.mode
    if mode == "1":
        return np.asarray(im).astype(np.uint8)
    if mode in ("P", "PA"):
        idx = np.asarray(im.getchannel("P") if mode == "PA" else im)
        pal = np.asarray(im.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
        lut = np.zeros(256, np.uint8)
        lut[: len(pal)] = pal.max(axis=1)
        out, why = _classify_grey(lut[idx])
        if out is None and idx.max() <= 1:
            out = idx.astype(np.uint8)
        if out is None:
            raise _ambiguous(path, idx, f"palette mask, {why}")
        return out
    if mode in ("I", "F") or mode.startswith("I;16"):
        raw = np.asarray(im)
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


def _resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (H, W) uint8 to ``hw``, pixel-centre aligned."""
    import cv2

    if mask.shape[:2] == tuple(hw):
        return mask
    return cv2.resize(mask, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _resize_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, 3) uint8: area averaging when shrinking, bilinear otherwise."""
    import cv2

    h, w = hw
    if image.shape[:2] == (h, w):
        return image
    shrink = h <= image.shape[0] and w <= image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _check_aspect(mask_hw: tuple[int, int], image_hw: tuple[int, int], name: str) -> None:
    (mh, mw), (ih, iw) = mask_hw, image_hw
    if (mh, mw) == (ih, iw):
        return
    if abs((mw / mh) / (iw / ih) - 1.0) > 0.01:
        raise HandsegError(
            f"mask {name} is {mw} x {mh} (W x H) but its image is {iw} x {ih}: the aspect "
            "ratios differ, so the mask cannot be resized to fit; check the pairing or "
            "re-export the mask at the image's size"
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
    _check_aspect(mask.shape[:2], image_hw, name)
    return _resize_mask(mask, image_hw)


def load_pair(
    image_path: str | Path,
    mask_path: str | Path,
    *,
    exif: bool = True,
    hand_value: int | Sequence[int] | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair: image (H, W, 3) uint8 RGB and mask (H, W) uint8 {0, 1} at its size."""
    image = read_image(image_path, exif=exif)
    mask = read_mask(mask_path, hand_value=hand_value)
    return image, fit_mask_to_image(mask, image.shape[:2], name=str(mask_path))


# --- split -------------------------------------------------------------------------------


def _split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of n * fractions so the sizes sum to n (ties: in order)."""
    raw = [n * f for f in fractions]
    sizes = [int(np.floor(r + 1e-9)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - sizes[i]), i))
    for i in order[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def make_split(
    pairs: Sequence[tuple[Path, Path]],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> dict[str, list[tuple[Path, Path]]]:
    """Seeded random split into ``{"train", "val", "test"}`` (each in natural image order).

    ``fractions`` (train, val, test) must be >= 0 and sum to 1; sizes are rounded so that
    they sum to ``len(pairs)`` (30 at 0.6/0.2/0.2 -> 18/6/6). The same pairs and seed give
    the same split. A subset with a positive fraction that would be empty raises
    :class:`HandsegError` saying how many images are needed.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise HandsegError(
            f"split fractions {fractions} must be three non-negative numbers (train, val, "
            "test) that sum to 1, e.g. 0.6 0.2 0.2"
        )
    pairs = [(Path(i), Path(m)) for i, m in pairs]
    n = len(pairs)
    sizes = _split_sizes(n, fractions)
    if any(s == 0 and f > 0 for s, f in zip(sizes, fractions)):
        need = next(
            k
            for k in range(1, 10_000)
            if all(s > 0 or f == 0 for s, f in zip(_split_sizes(k, fractions), fractions))
        )
        empty = [name for name, s, f in zip(SUBSETS, sizes, fractions) if s == 0 and f > 0]
        raise HandsegError(
            f"{n} image pair(s) are too few for the split {fractions}: the {'/'.join(empty)} "
            f"set would be empty; at least {need} pairs are needed (add images or change the "
            "fractions)"
        )
    perm = np.random.default_rng(seed).permutation(n)
    out: dict[str, list[tuple[Path, Path]]] = {}
    start = 0
    for name, size in zip(SUBSETS, sizes):
        chosen = [pairs[j] for j in perm[start : start + size]]
        out[name] = sorted(chosen, key=lambda p: natural_key(p[0].name))
        start += size
    return out


def _common_parent(paths: Iterable[Path]) -> Path | None:
    parents = {Path(p).parent for p in paths}
    return parents.pop() if len(parents) == 1 else None


def save_split(
    split: dict[str, Sequence[tuple[Path, Path]]],
    path: str | Path,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    seed: int | None = None,
    fractions: Sequence[float] | None = None,
) -> None:
    """Write ``split.json``: the folders (absolute), seed, fractions and per subset a list
    of ``{"image": name, "mask": name}``. Names are relative to the folders, which default
    to the pairs' common parent folders (absolute paths are stored when there is none)."""
    every = [p for name in SUBSETS for p in split.get(name, [])]
    img_dir = Path(images_dir) if images_dir else _common_parent(i for i, _ in every)
    msk_dir = Path(masks_dir) if masks_dir else _common_parent(m for _, m in every)

    def absolute(p: Path) -> Path:  # absolute, but symlinks kept (unlike resolve())
        return Path(os.path.abspath(p))

    def rel(p: Path, base: Path | None) -> str:
        if base is not None:
            try:
                return absolute(p).relative_to(absolute(base)).as_posix()
            except ValueError:
                pass
        return str(absolute(p))

    doc = {
        "images_dir": str(absolute(img_dir)) if img_dir else None,
        "masks_dir": str(absolute(msk_dir)) if msk_dir else None,
        "seed": seed,
        "fractions": list(fractions) if fractions is not None else None,
    }
    for name in SUBSETS:
        doc[name] = [
            {"image": rel(i, img_dir), "mask": rel(m, msk_dir)} for i, m in split.get(name, [])
        ]
    from handseg.io_safety import atomic_write_json

    atomic_write_json(path, doc)  # a run killed mid-write must not leave half a split.json


def load_split(
    path: str | Path,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
) -> dict[str, list[tuple[Path, Path]]]:
    """Read a ``split.json`` written by :func:`save_split`.

    ``images_dir``/``masks_dir`` override the folders stored in the file (e.g. after moving
    the data). Raises :class:`HandsegError` when the file is missing or malformed or when
    listed files do not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise HandsegError(f"split file {path} does not exist; check the path")
    try:
        doc = json.loads(path.read_text())
        entries = {name: list(doc.get(name, [])) for name in SUBSETS}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise HandsegError(f"split file {path} is not a valid split.json ({exc})") from None
    img_dir = images_dir if images_dir is not None else doc.get("images_dir")
    msk_dir = masks_dir if masks_dir is not None else doc.get("masks_dir")
    out: dict[str, list[tuple[Path, Path]]] = {}
    missing: list[Path] = []
    for name, items in entries.items():
        subset = []
        for item in items:
            try:
                i, m = Path(item["image"]), Path(item["mask"])
            except (KeyError, TypeError):
                raise HandsegError(
                    f"split file {path}: each {name} entry needs 'image' and 'mask'"
                ) from None
            i = i if i.is_absolute() or img_dir is None else Path(img_dir) / i
            m = m if m.is_absolute() or msk_dir is None else Path(msk_dir) / m
            missing += [p for p in (i, m) if not p.is_file()]
            subset.append((i, m))
        out[name] = subset
    if missing:
        raise HandsegError(
            f"split file {path} lists {len(missing)} file(s) that do not exist: "
            f"{_short_list([str(p) for p in missing], 3)}; pass the images and masks folders"
        )
    return out


# --- class statistics --------------------------------------------------------------------


def label_counts(
    masks: Iterable[np.ndarray], num_classes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Class pixel counts over masks, like MATLAB's ``countEachLabel``.

    Returns ``(pixel_count, image_pixel_count)``, each (num_classes,) int64:
    ``pixel_count[c]`` = pixels of class c; ``image_pixel_count[c]`` = total pixels of
    the masks that contain class c. ``IGNORE_INDEX`` pixels count in neither.
    """
    pixel = np.zeros(num_classes, np.int64)
    image_pixel = np.zeros(num_classes, np.int64)
    for mask in masks:
        v = np.asarray(mask).ravel()
        v = v[v != IGNORE_INDEX]
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"mask values must be in 0..{num_classes - 1} or {IGNORE_INDEX}")
        counts = np.bincount(v.astype(np.int64), minlength=num_classes)
        pixel += counts
        image_pixel[counts > 0] += v.size
    return pixel, image_pixel


def median_frequency_weights(pixel_count: np.ndarray, image_pixel_count: np.ndarray) -> np.ndarray:
    """Median-frequency class weights: ``freq_c = pixel_c / image_pixel_c``,
    ``w_c = median(freq) / freq_c`` (median over the classes present), float32 (C,).
    A class with no pixels gets weight 0 and a logged warning."""
    pixel = np.asarray(pixel_count, np.float64)
    image_pixel = np.asarray(image_pixel_count, np.float64)
    present = (pixel > 0) & (image_pixel > 0)
    weights = np.zeros(pixel.shape, np.float32)
    if not present.any():
        log.warning("no labelled pixels: all class weights are 0")
        return weights
    freq = pixel[present] / image_pixel[present]
    weights[present] = (np.median(freq) / freq).astype(np.float32)
    for c in np.flatnonzero(~present):
        name = CLASS_NAMES[c] if c < len(CLASS_NAMES) else str(c)
        log.warning("class %r has no pixels: its weight is 0", name)
    return weights


# --- dataset -----------------------------------------------------------------------------


class SegDataset(Dataset):
    """(image, mask) pairs as training tensors.

    ``__getitem__(i)`` returns ``image`` float32 (3, H, W) normalised with ImageNet mean/std
    and ``mask`` int64 (H, W) holding 0, 1 or ``IGNORE_INDEX``. Steps: read the pair, resize
    image (area when shrinking, else bilinear) and mask (nearest only) to ``image_size``
    (H, W; ``None`` keeps the image's size), apply ``transform(image_uint8, mask_uint8)``,
    normalise. JPEGs at least twice the target size decode at reduced scale (PIL draft).

    ``cache=True`` keeps the decoded, resized uint8 arrays in memory after the first load
    (before the random transform); with DataLoader workers each worker holds its own cache,
    so use ``persistent_workers=True``.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        image_size: tuple[int, int] | None = (720, 960),
        transform: Any = None,
        *,
        exif: bool = True,
        hand_value: int | Sequence[int] | str | None = None,
        cache: bool = False,
    ) -> None:
        self.pairs = [(Path(i), Path(m)) for i, m in pairs]
        if image_size is not None:
            if len(image_size) != 2 or any(int(s) < 1 for s in image_size):
                raise HandsegError(f"image size {image_size} must be two positive ints (H, W)")
            image_size = (int(image_size[0]), int(image_size[1]))
        self.image_size = image_size
        self.transform = transform
        self.exif = exif
        self.hand_value = _parse_hand_value(hand_value)
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def load_resized(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair ``i`` at ``image_size``, no transform: image (H, W, 3) uint8, mask (H, W)
        uint8 {0, 1}. Cached arrays are returned read-only."""
        if i in self._cache:
            return self._cache[i]
        image_path, mask_path = self.pairs[i]
        if self.image_size is None:
            image, mask = load_pair(
                image_path, mask_path, exif=self.exif, hand_value=self.hand_value
            )
        else:
            image, full_hw = _read_image_full(image_path, exif=self.exif, draft_hw=self.image_size)
            mask = read_mask(mask_path, hand_value=self.hand_value)
            _check_aspect(mask.shape[:2], full_hw, str(mask_path))
            image = _resize_image(image, self.image_size)
            mask = _resize_mask(mask, self.image_size)
        if self.cache:
            image.setflags(write=False)
            mask.setflags(write=False)
            self._cache[i] = (image, mask)
        return image, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load_resized(i)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        mean = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(IMAGENET_STD, np.float32) * 255.0)
        x = (np.asarray(image, np.float32) - mean) * inv_std  # (H, W, 3), a fresh array
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))  # (3, H, W)
        y = torch.from_numpy(np.asarray(mask).astype(np.int64))  # (H, W), a fresh array
        return x, y
