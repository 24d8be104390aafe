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

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from handseg.core.constants import CLASS_NAMES, IGNORE_INDEX
from handseg.core.errors import HandsegError
from handseg.core.imaging import (
    check_aspect,
    normalize,
    parse_hand_value,
    read_image_full,
    read_mask,
    resize_image,
    resize_mask,
)
from handseg.data.pairs import load_pair

log = logging.getLogger(__name__)


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
        self.hand_value = parse_hand_value(hand_value)
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
            image, full_hw = read_image_full(image_path, exif=self.exif, draft_hw=self.image_size)
            mask = read_mask(mask_path, hand_value=self.hand_value)
            check_aspect(mask.shape[:2], full_hw, str(mask_path))
            image = resize_image(image, self.image_size)
            mask = resize_mask(mask, self.image_size)
        if self.cache:
            image.setflags(write=False)
            mask.setflags(write=False)
            self._cache[i] = (image, mask)
        return image, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load_resized(i)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        x = torch.from_numpy(normalize(image))  # (3, H, W) float32, ImageNet mean/std
        y = torch.from_numpy(np.asarray(mask).astype(np.int64))  # (H, W), a fresh array
        return x, y
