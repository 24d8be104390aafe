"""data.pairs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from handseg.core.errors import HandsegError
from handseg.core.imaging import fit_mask_to_image, list_images, read_image, read_mask, short_list

log = logging.getLogger(__name__)


MASK_SUFFIXES: tuple[str, ...] = ("_mask", "-mask", "_label", "_gt", "_seg")


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
        parts.append(f"{len(orphan_images)} image(s) without a mask: {short_list(orphan_images)}")
    if orphan_masks:
        parts.append(f"{len(orphan_masks)} mask(s) without an image: {short_list(orphan_masks)}")
    raise HandsegError(
        f"cannot pair {images_dir} with {masks_dir}: {'; '.join(parts)}; add the missing "
        "files or remove the orphans"
    )


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
