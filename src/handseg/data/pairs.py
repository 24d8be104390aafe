"""data.pairs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from handseg.core.errors import HandsegError
from handseg.core.imaging import (
    fit_mask_to_image,
    list_images,
    natural_key,
    read_image,
    read_mask,
    short_list,
)
from handseg.core.mask_sources import (
    FORMAT_NAMES,
    annotation_members,
    detect_format,
    labelme_files,
)

log = logging.getLogger(__name__)


MASK_SUFFIXES: tuple[str, ...] = ("_mask", "-mask", "_label", "_gt", "_seg")


class PairList(list):
    """A ``list[tuple[Path, Path]]`` of (image, mask) pairs that remembers how it was paired.

    ``rule`` is ``"stem"`` (matching file names) or ``"natural-order"`` (i-th image with the
    i-th mask in natural sort order, the seed workflow's rule); ``mask_format`` where the
    masks came from (:data:`handseg.core.mask_sources.FORMATS`: ``png``, ``coco``,
    ``labelme`` or ``cvat``).
    """

    def __init__(
        self,
        pairs: Iterable[tuple[Path, Path]] = (),
        rule: str = "stem",
        mask_format: str = "png",
    ) -> None:
        super().__init__(pairs)
        self.rule = rule
        self.mask_format = mask_format


def list_masks(masks: str | Path, *, what: str = "masks") -> tuple[str, list[Path]]:
    """``(format, masks)`` of a ``--masks`` path: a folder of mask images, a COCO JSON, a
    folder of LabelMe JSON files (or one such file) or a CVAT mask zip, told from the
    content (:func:`handseg.core.mask_sources.detect_format`). Annotations inside a file
    are ``<file>/<member>`` paths that :func:`~handseg.core.imaging.read_mask` decodes;
    the list is in natural order of the names. ``what`` names them in messages."""
    masks = Path(masks)
    fmt = detect_format(masks, what=what)
    if fmt == "png":
        return fmt, list_images(masks, what=what)
    if fmt == "labelme":
        found = labelme_files(masks) if masks.is_dir() else [masks]
    else:
        found = [masks / name for name in annotation_members(masks)]
    if not found:
        raise HandsegError(f"{masks} ({FORMAT_NAMES[fmt]}) holds no masks")
    return fmt, sorted(found, key=lambda p: natural_key(p.name))


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

    Images and masks may share one folder (masks then need a mask suffix; LabelMe JSON
    files saved beside their photos need none). ``masks_dir`` may also be an annotation
    tool's export (:func:`list_masks`).
    Returns a :class:`PairList` in natural order of the image names; ``.rule`` says which
    rule was used (also logged).
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = list_images(images_dir, what="images")
    fmt, masks = list_masks(masks_dir)
    if fmt == "png" and images_dir.resolve() == masks_dir.resolve():
        masks = [p for p in images if len(_mask_keys(p.stem)) > 1]
        images = [p for p in images if len(_mask_keys(p.stem)) == 1]
        if not images or not masks:
            raise HandsegError(
                f"images and masks share folder {images_dir} but masks need a suffix "
                f"({', '.join(MASK_SUFFIXES)}); put them in separate folders"
            )
    pairs = pair_files(images, masks, images_dir=images_dir, masks_dir=masks_dir)
    pairs.mask_format = fmt
    return pairs


def pair_files(
    images: Sequence[Path],
    masks: Sequence[Path],
    *,
    images_dir: str | Path,
    masks_dir: str | Path,
    kinds: tuple[str, str] = ("image", "mask"),
) -> PairList:
    """Pair two lists of files (each in natural order) by the rules of :func:`find_pairs`.

    ``images_dir`` and ``masks_dir`` name the folders in messages; ``kinds`` names the two
    sides (e.g. ``("ground-truth mask", "prediction")`` when scoring predicted masks).
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    mask_for, orphan_masks = _match_by_name(images, masks, images_dir, masks_dir, kinds)
    orphan_images = [p for p in images if p not in mask_for]
    if not orphan_images and not orphan_masks:
        pairs = PairList(((p, mask_for[p]) for p in images), rule="stem")
        log.info("paired %d %ss with %ss by file name", len(pairs), *kinds)
        return pairs
    if not mask_for and len(images) == len(masks):
        pairs = PairList(zip(images, masks), rule="natural-order")
        log.info(
            "no %s and %s names match: paired %d %ss with %ss by natural sort order "
            "(first: %s <-> %s)",
            *kinds,
            len(pairs),
            *kinds,
            images[0].name,
            masks[0].name,
        )
        return pairs
    a, b = kinds
    if not mask_for:
        raise HandsegError(
            f"no {a} name matches {_an(b)} name and the counts differ ({len(images)} {a}s "
            f"in {images_dir}, {len(masks)} {b}s in {masks_dir}), so they cannot be paired "
            f"by name or by order; remove the extra files or name {b}s after their {a}s"
        )
    parts = []
    if orphan_images:
        parts.append(f"{len(orphan_images)} {a}(s) without {_an(b)}: {short_list(orphan_images)}")
    if orphan_masks:
        parts.append(f"{len(orphan_masks)} {b}(s) without {_an(a)}: {short_list(orphan_masks)}")
    raise HandsegError(
        f"cannot pair {images_dir} with {masks_dir}: {'; '.join(parts)}; add the missing "
        "files or remove the orphans"
    )


def _an(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _match_by_name(
    images: Sequence[Path],
    masks: Sequence[Path],
    images_dir: Path,
    masks_dir: Path,
    kinds: tuple[str, str],
) -> tuple[dict[Path, Path], list[Path]]:
    """``({image: mask}, masks matching no image)``, by stem with a mask suffix allowed on
    either side: an exact stem match first, then a mask suffix removed from the image's.
    Two images with one stem, or two masks for one image, raise :class:`HandsegError`."""
    by_stem: dict[str, Path] = {}
    by_base: dict[str, Path | None] = {}  # stems without their mask suffix; None: ambiguous
    for p in images:
        key = p.stem.lower()
        if key in by_stem:
            raise HandsegError(
                f"two {kinds[0]}s share the name {p.stem!r} in {images_dir}: "
                f"{by_stem[key].name} and {p.name}; rename or remove one"
            )
        by_stem[key] = p
        for base in _mask_keys(p.stem)[1:]:
            by_base[base] = None if base in by_base else p
    mask_for: dict[Path, Path] = {}
    orphans: list[Path] = []
    for m in masks:
        keys = _mask_keys(m.stem)
        img = next((by_stem[k] for k in keys if k in by_stem), None)
        img = img or next((by_base[k] for k in keys if by_base.get(k) is not None), None)
        if img is None:
            orphans.append(m)
        elif img in mask_for:
            raise HandsegError(
                f"{kinds[0]} {img.name} has two {kinds[1]}s in {masks_dir}: "
                f"{mask_for[img].name} and {m.name}; remove one"
            )
        else:
            mask_for[img] = m
    return mask_for, orphans


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
