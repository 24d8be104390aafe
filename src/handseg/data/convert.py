"""Masks out to annotation tools: ``handseg convert MASKS --to FORMAT --out PATH``.

``MASKS`` is anything ``--masks`` takes (a folder of mask images such as ``handseg
predict`` writes, a COCO JSON, a LabelMe folder, a CVAT zip); the output is one of

  - ``coco``: one JSON (``images``, ``categories``, ``annotations``) with an RLE per
    connected hand region, or per detected hand where ``handseg predict --instances``
    wrote ``<name>_hand<i>.png`` beside ``<name>_mask.png``;
  - ``cvat``: a CVAT "Segmentation mask 1.1" zip (``labelmap.txt``,
    ``SegmentationClass/<name>.png``, ``SegmentationObject/<name>.png`` with one instance
    per hand as above, ``ImageSets/Segmentation/default.txt``);
  - ``labelme``: one LabelMe JSON per photo, polygons traced from the mask (holes as
    ``background`` polygons drawn after the hand's);
  - ``png`` (0/255) or ``palette`` (indexed PNG, black background, red hand) masks.

With ``images`` the masks are paired with their photos (the rules of
:func:`~handseg.data.pairs.pair_files`): the files then carry the photos' real names and
sizes (masks of another size are resized, nearest neighbour). Without it a mask
``<name>_mask.png`` stands for photo ``<name>.jpg`` at the mask's size.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from handseg.core.annotations import (
    DEFAULT_TOLERANCE,
    HAND_COLOUR,
    bbox_area,
    colour_mask,
    components,
    encode_rle,
    format_labelmap,
    instance_index,
    trace_polygons,
    voc_palette,
)
from handseg.core.constants import CLASS_NAMES, __version__
from handseg.core.errors import HandsegError
from handseg.core.imaging import fit_mask_to_image, list_images, read_image_full, read_mask
from handseg.core.io import (
    atomic_save_image,
    atomic_write_bytes,
    atomic_write_json,
    write_error,
)
from handseg.core.mask_sources import (
    CVAT_CLASS_DIR,
    CVAT_LABELMAP,
    CVAT_OBJECT_DIR,
    FORMAT_NAMES,
)
from handseg.core.outputs import PredictFolder, split_predict_folder
from handseg.core.viz import save_mask_png
from handseg.data.pairs import MASK_SUFFIXES, list_masks, pair_files

log = logging.getLogger(__name__)

TARGETS: tuple[str, ...] = ("coco", "cvat", "labelme", "png", "palette")
LABELME_VERSION = "5.4.1"
"""The LabelMe file version handseg writes (the fields of LabelMe 5.x)."""


@dataclass
class _Item:
    """One photo: its file name, the mask (at the photo's size), per-hand masks if any."""

    file_name: str
    mask: np.ndarray
    image_path: Path | None = None
    instances: list[np.ndarray] = field(default_factory=list)

    @property
    def base(self) -> str:
        return Path(self.file_name).stem


def _base_name(mask: Path) -> str:
    stem = mask.stem
    for s in MASK_SUFFIXES:
        if stem.lower().endswith(s) and len(stem) > len(s):
            return stem[: -len(s)]
    return stem


def _items(
    masks: str | Path, images: str | Path | None
) -> tuple[str, list[tuple[str, Path, Path | None, list[Path]]]]:
    """``(source format, [(file name, mask path, image path, per-hand paths), ...])``."""
    fmt, paths = list_masks(masks)
    found = split_predict_folder(paths) if fmt == "png" else PredictFolder(masks=paths)
    paths = found.masks
    if images is None:
        log.warning(
            "no --images: photo names are guessed as <name>.jpg and sizes are the masks'; "
            "pass --images DIR for the photos' real names and sizes"
        )
        out = []
        for p in paths:
            name = p.name if fmt != "png" else _base_name(p) + ".jpg"
            out.append((name, p, None, found.hands_of(p)))
        return fmt, out
    pairs = pair_files(
        list_images(images, what="images"), paths, images_dir=images, masks_dir=masks
    )
    return fmt, [(i.name, m, i, found.hands_of(m)) for i, m in pairs]


def _load(name: str, mask_path: Path, image_path: Path | None, hand_paths: list[Path]) -> _Item:
    mask = read_mask(mask_path)
    if image_path is not None:
        _, hw = read_image_full(image_path, draft_hw=(1, 1))  # the size, decoded small
        mask = fit_mask_to_image(mask, hw, name=str(mask_path))
    hands = [fit_mask_to_image(read_mask(p), mask.shape[:2], name=str(p)) for p in hand_paths]
    return _Item(name, mask, image_path, hands)


def convert_masks(
    masks: str | Path,
    to: str,
    out: str | Path,
    *,
    images: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the masks of ``masks`` in format ``to`` (:data:`TARGETS`) to ``out``.

    ``out`` is a file for ``coco`` (``out/annotations.json`` when it is not a ``.json``)
    and ``cvat`` (``out/cvat-masks.zip`` when it is not a ``.zip``), a folder for the
    others. ``tolerance`` (pixels) simplifies LabelMe polygons (0: every corner kept).
    Returns ``{"from", "to", "out", "images", "annotations"}``.
    """
    if to not in TARGETS:
        raise HandsegError(f"unknown format {to!r}; choose one of {', '.join(TARGETS)}")
    if tolerance < 0:
        raise HandsegError(f"tolerance {tolerance} must be >= 0 pixels")
    fmt, entries = _items(masks, images)
    out = Path(out)
    bar = tqdm(entries, desc=f"convert to {to}", unit="mask", disable=not progress)
    items = (_load(*e) for e in bar)
    with contextlib.closing(bar):  # closed before an error is printed, not over its line
        path, written, n_ann = _write(items, to, out, tolerance)
    log.info("read %s from %s", FORMAT_NAMES[fmt], masks)
    return {"from": fmt, "to": to, "out": str(path), "images": written, "annotations": n_ann}


def _write(items: Iterator[_Item], to: str, out: Path, tolerance: float) -> tuple[Path, int, int]:
    """Write ``items`` as ``to`` under ``out``; returns (path written, images, annotations)."""
    # coco and cvat are one file written at the end; the folder formats are written to a
    # hidden folder inside OUT and moved in at the end: a mask that cannot be read leaves
    # nothing of the run in OUT.
    if to == "coco":
        path = out if out.suffix.lower() == ".json" else out / "annotations.json"
        written, n_ann = write_coco(items, path)
    elif to == "cvat":
        path = out if out.suffix.lower() == ".zip" else out / "cvat-masks.zip"
        written, n_ann = write_cvat(items, path)
    elif to == "labelme":
        with _staged(out) as stage:
            path, (written, n_ann) = out, write_labelme(items, out, tolerance=tolerance, into=stage)
    else:
        path, n_ann, written = out, 0, 0
        with _staged(out) as stage:
            for item in items:
                target = stage / f"{item.base}_mask.png"
                if to == "png":
                    save_mask_png(item.mask, target)
                else:
                    save_palette_png(item.mask, target)
                written += 1
    return path, written, n_ann


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A hidden folder inside ``out`` to write into; its files are moved into ``out`` when
    the block succeeds. On any error it is removed, and so is ``out`` when this created it
    and it is still empty."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".handseg-convert-", dir=out))
    except OSError as exc:
        raise write_error(out, exc) from None
    done = False
    try:
        yield stage
        for f in sorted(stage.iterdir()):
            os.replace(f, out / f.name)
        done = True
    except OSError as exc:
        raise write_error(out, exc) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not done and created and not any(out.iterdir()):
            out.rmdir()


def save_palette_png(mask: np.ndarray, path: str | Path) -> Path:
    """An indexed PNG: index 0 black background, index 1 hand in :data:`HAND_COLOUR`."""
    im = Image.fromarray((np.asarray(mask) != 0).astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, *HAND_COLOUR])
    return atomic_save_image(im, path)


def write_coco(items, path: str | Path) -> tuple[int, int]:
    """A COCO JSON with RLE segmentations (column-major, compressed counts, as pycocotools
    writes them): one annotation per hand (per-hand masks) or per connected hand region.
    Returns (images, annotations)."""
    doc: dict[str, Any] = {
        "info": {"description": f"hand masks written by handseg {__version__}"},
        "licenses": [],
        "categories": [{"id": 1, "name": CLASS_NAMES[1], "supercategory": ""}],
        "images": [],
        "annotations": [],
    }
    for image_id, item in enumerate(items, 1):
        h, w = item.mask.shape[:2]
        doc["images"].append({"id": image_id, "file_name": item.file_name, "height": h, "width": w})
        for part in item.instances or components(item.mask):
            bbox, area = bbox_area(part)
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": encode_rle(part),
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
    atomic_write_json(path, doc)
    return len(doc["images"]), len(doc["annotations"])


def write_cvat(items, path: str | Path) -> tuple[int, int]:
    """A CVAT "Segmentation mask 1.1" zip. Returns (images, masks)."""
    buf = io.BytesIO()
    names = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(CVAT_LABELMAP, format_labelmap())
        for item in items:
            png = io.BytesIO()
            Image.fromarray(colour_mask(item.mask), mode="RGB").save(png, format="PNG")
            z.writestr(f"{CVAT_CLASS_DIR}/{item.base}.png", png.getvalue())
            # instances: one per hand (predict --instances) or per connected hand region
            parts = item.instances or components(item.mask)
            index = Image.fromarray(instance_index(parts, item.mask.shape[:2]), mode="P")
            index.putpalette(voc_palette())
            png = io.BytesIO()
            index.save(png, format="PNG")
            z.writestr(f"{CVAT_OBJECT_DIR}/{item.base}.png", png.getvalue())
            names.append(item.base)
        z.writestr("ImageSets/Segmentation/default.txt", "".join(f"{n}\n" for n in names))
    atomic_write_bytes(path, buf.getbuffer())
    return len(names), len(names)


def labelme_doc(mask: np.ndarray, image_path: str, *, tolerance: float = DEFAULT_TOLERANCE):
    """A LabelMe document for one photo: ``hand`` polygons, ``background`` polygons for the
    holes, in the order that rebuilds the mask (:func:`~handseg.core.annotations.trace_polygons`)."""
    h, w = mask.shape[:2]
    shapes = [
        {
            "label": CLASS_NAMES[1] if is_hand else CLASS_NAMES[0],
            "points": points,
            "group_id": None,
            "description": "",
            "shape_type": "polygon",
            "flags": {},
            "mask": None,
        }
        for is_hand, points in trace_polygons(mask, tolerance)
    ]
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": int(h),
        "imageWidth": int(w),
    }


def write_labelme(
    items, out: str | Path, *, tolerance: float = DEFAULT_TOLERANCE, into: Path | None = None
):
    """``out/<name>.json`` per photo; ``imagePath`` is relative to ``out`` when the photo
    is known. ``into``: the folder the files are written to, to be moved into ``out``
    later (default ``out`` itself). Returns (files, shapes)."""
    out = Path(out)
    into = out if into is None else Path(into)
    files = shapes = 0
    for item in items:
        image_path = item.file_name
        if item.image_path is not None:
            image_path = Path(os.path.relpath(item.image_path.resolve(), out.resolve())).as_posix()
        doc = labelme_doc(item.mask, image_path, tolerance=tolerance)
        atomic_write_json(into / f"{item.base}.json", doc)
        files += 1
        shapes += len(doc["shapes"])
    return files, shapes


def describe(result: dict[str, Any]) -> str:
    """One line for the terminal."""
    what = {"coco": "annotation(s)", "cvat": "mask(s)", "labelme": "polygon(s)"}
    extra = f", {result['annotations']} {what[result['to']]}" if result["to"] in what else ""
    return (
        f"read {FORMAT_NAMES[result['from']]}; wrote {result['images']} image(s){extra} as "
        f"{result['to']} to {result['out']}"
    )
