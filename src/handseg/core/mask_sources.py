"""Where masks come from: a folder of mask images, or an annotation tool's export.

``--masks`` may name
  - a folder of mask images (``png``; handseg's own format);
  - a COCO JSON (``coco``): RLE (compressed or not) or polygon segmentations;
  - a folder of LabelMe JSON files (``labelme``), e.g. the photo folder LabelMe saved into;
  - a CVAT "Segmentation mask 1.1" zip (``cvat``): ``SegmentationClass/*.png`` coloured by
    ``labelmap.txt``.

The format is told from the content, not the name. Each mask is then a path: a file, or a
*member* of an annotation file written as ``<file>/<member>``: ``labels.json/photo1.jpg``
is the annotation of image ``photo1.jpg`` inside the COCO file ``labels.json``, and
``cvat.zip/SegmentationClass/photo1.png`` the zip member. Such paths pair by their stem
like files, are stored in ``split.json`` relative to the ``--masks`` path, and
:func:`handseg.core.imaging.read_mask` decodes them (:func:`read_annotation_mask`).
Every unreadable or malformed file raises :class:`HandsegError` naming it.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from handseg.core.annotations import (
    decode_rle,
    fill_polygons,
    hand_from_colours,
    is_hand_label,
    parse_labelmap,
)
from handseg.core.constants import IMAGE_EXTS
from handseg.core.errors import HandsegError

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("png", "coco", "labelme", "cvat")
FORMAT_NAMES = {
    "png": "mask images",
    "coco": "COCO JSON",
    "labelme": "LabelMe JSON",
    "cvat": "CVAT Segmentation mask 1.1 zip",
}
CVAT_CLASS_DIR = "SegmentationClass"
CVAT_LABELMAP = "labelmap.txt"
CVAT_OBJECT_DIR = "SegmentationObject"
"""Instance masks in a CVAT zip (indices coloured by Pascal VOC's colour map); handseg
writes them and reads the class masks only."""


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise HandsegError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "re-export it from the annotation tool"
        ) from None
    except UnicodeDecodeError:
        raise HandsegError(f"{path} is not a text (JSON) file; check the path") from None
    except OSError as exc:
        raise HandsegError(f"cannot read {path}: {exc.strerror or exc}") from None


def _is_labelme(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("shapes"), list)


def _is_coco(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("images"), list)
        and isinstance(doc.get("annotations"), list)
    )


def stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


def detect_format(path: str | Path, *, what: str = "masks") -> str:
    """``"png"``, ``"coco"``, ``"labelme"`` or ``"cvat"``, told from the content of
    ``path``. A file that is none of them raises :class:`HandsegError` naming it."""
    path = Path(path)
    if path.is_dir():
        return "labelme" if labelme_files(path) else "png"
    if not path.exists():
        raise HandsegError(f"{what} {path} do not exist; check the path")
    if zipfile.is_zipfile(path):
        cvat_index(*stamp(path))  # raises when the zip is not a CVAT export
        return "cvat"
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"{"):
        doc = _load_json(path)
        if _is_coco(doc):
            return "coco"
        if _is_labelme(doc):
            return "labelme"
        raise HandsegError(
            f"{path} is JSON but neither COCO (needs 'images' and 'annotations' lists) nor "
            "LabelMe (needs a 'shapes' list)"
        )
    if path.suffix.lower() == ".zip" or head.startswith(b"PK"):
        raise HandsegError(f"{path} is not a readable zip file (truncated?); re-export it")
    raise HandsegError(
        f"{what} {path} is neither a folder of masks, a COCO JSON, a LabelMe JSON nor a CVAT "
        "Segmentation mask zip; pass one of those"
    )


def annotation_members(path: str | Path) -> list[str]:
    """The members (image names, zip member paths) of a COCO file or a CVAT zip."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return list(cvat_index(*stamp(path))[1])
    return list(coco_index(*stamp(path))[0])


def labelme_files(folder: Path) -> list[Path]:
    """The LabelMe JSON files in ``folder``; other JSON files are skipped with a warning.

    A JSON file that does not parse raises :class:`HandsegError` naming it when the folder
    holds LabelMe files or no images; beside mask images (a stray notes file) it is skipped
    with a warning.
    """
    jsons = [p for p in folder.glob("*.json") if p.is_file() and not p.name.startswith(".")]
    found, other, broken = [], [], []
    for p in jsons:
        try:
            (found if _is_labelme(_load_json(p)) else other).append(p)
        except HandsegError as exc:
            broken.append(exc)
    if broken:
        images = any(p.suffix.lower() in IMAGE_EXTS for p in folder.iterdir())
        if found or not images:
            raise broken[0]
        log.warning("skipping %d unreadable JSON file(s) in %s: %s", len(broken), folder, broken[0])
    if found and other:
        log.warning("skipping %d JSON file(s) that are not LabelMe in %s", len(other), folder)
    return found


def split_member(path: str | Path) -> tuple[Path, str] | None:
    """``(annotation file, member)`` when ``path`` is a ``<file>/<member>`` path, ``(file,
    "")`` when it is a LabelMe JSON file, else None (a mask image file)."""
    path = Path(path)
    if path.is_file():
        return (path, "") if path.suffix.lower() == ".json" else None
    for parent in path.parents:
        if parent.is_file():
            return parent, path.relative_to(parent).as_posix()
        if parent.is_dir():
            return None
    return None


def mask_exists(path: str | Path) -> bool:
    """True when ``path`` is a file, or a member its annotation file holds."""
    path = Path(path)
    if path.is_file():
        return True
    found = split_member(path)
    if found is None:
        return False
    try:
        return _lookup(found[0], found[1]) is not None
    except HandsegError:
        return False


def read_annotation_mask(path: str | Path) -> np.ndarray | None:
    """(H, W) uint8 {0, 1} of an annotation (a LabelMe file or a ``<file>/<member>``
    path), or None when ``path`` is a plain mask image."""
    found = split_member(path)
    if found is None:
        return None
    container, member = found
    if member == "" and container.suffix.lower() == ".json":
        return _labelme_mask(container, _load_json(container))
    entry = _lookup(container, member)
    if entry is None:
        raise HandsegError(f"{container} holds no annotation of {member}")
    return entry()


def _lookup(container: Path, member: str):
    """A function returning the mask of ``member`` in ``container``, or None."""
    if zipfile.is_zipfile(container):
        labelmap, names = cvat_index(*stamp(container))
        if member not in names:
            return None
        return functools.partial(_cvat_mask, container, member, labelmap)
    names, _ = coco_index(*stamp(container))
    return functools.partial(_coco_mask, container, member) if member in names else None


# --- COCO ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def coco_index(path: str, _mtime: int, _size: int) -> tuple[dict[str, Any], set[int]]:
    """``({file_name: (H, W, [segmentation, ...])}, hand category ids)`` of a COCO file;
    cached per file version."""
    p = Path(path)
    doc = _load_json(p)
    if not _is_coco(doc):
        raise HandsegError(f"{p} is not a COCO JSON (needs 'images' and 'annotations' lists)")
    try:
        cats = doc.get("categories") or []
        hand_ids = {int(c["id"]) for c in cats if is_hand_label(c.get("name", ""))}
        if not cats:  # no categories: every annotation is hand
            hand_ids = {int(a.get("category_id", 0)) for a in doc["annotations"]}
        by_id: dict[int, str] = {}
        index: dict[str, Any] = {}
        for im in doc["images"]:
            name = str(im["file_name"])
            by_id[int(im["id"])] = name
            index[name] = (int(im["height"]), int(im["width"]), [])
        for a in doc["annotations"]:
            if int(a.get("category_id", -1)) in hand_ids:
                index[by_id[int(a["image_id"])]][2].append(a["segmentation"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HandsegError(
            f"{p} is not a valid COCO file: an image or annotation lacks or mistypes a field "
            f"({type(exc).__name__}: {exc}); COCO needs images[id, file_name, height, width] "
            "and annotations[image_id, category_id, segmentation]"
        ) from None
    return index, hand_ids


def _coco_mask(container: Path, member: str) -> np.ndarray:
    h, w, segs = coco_index(*stamp(container))[0][member]
    out = np.zeros((h, w), np.uint8)
    for seg in segs:
        try:
            if isinstance(seg, dict):
                part = decode_rle(seg)
            else:  # polygons: [[x0, y0, x1, y1, ...], ...]
                polys = [(True, np.asarray(p, float).reshape(-1, 2)) for p in seg]
                part = fill_polygons((h, w), polys)
        except (KeyError, TypeError, ValueError) as exc:
            raise HandsegError(
                f"{container}: a segmentation of {member} is malformed ({exc})"
            ) from None
        if part.shape != (h, w):
            raise HandsegError(
                f"{container}: a segmentation of {member} is {part.shape[1]} x {part.shape[0]} "
                f"but the image entry says {w} x {h} (W x H)"
            )
        out |= part
    return out


# --- CVAT ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def cvat_index(path: str, _mtime: int, _size: int) -> tuple[dict, list[str]]:
    """``(labelmap, mask member names)`` of a CVAT zip; cached per file version."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            lm = next((n for n in names if PurePosixPath(n).name == CVAT_LABELMAP), None)
            if lm is None or not any(f"{CVAT_CLASS_DIR}/" in n for n in names):
                raise HandsegError(
                    f"zip {p} is not a CVAT Segmentation mask 1.1 export: it needs "
                    f"{CVAT_LABELMAP} and {CVAT_CLASS_DIR}/*.png"
                )
            labelmap = parse_labelmap(z.read(lm).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, ValueError) as exc:
        raise HandsegError(f"cannot read CVAT zip {p}: {exc}") from None
    masks = [
        n
        for n in names
        # SegmentationClass/<name>.png, or deeper where the task's images sat in folders
        if CVAT_CLASS_DIR in PurePosixPath(n).parts[:-1] and n.lower().endswith(".png")
    ]
    return labelmap, masks


def _cvat_mask(container: Path, member: str, labelmap: dict) -> np.ndarray:
    from PIL import Image

    try:
        with zipfile.ZipFile(container) as z:
            data = z.read(member)
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise HandsegError(f"cannot read {member} in CVAT zip {container}: {exc}") from None
    return hand_from_colours(rgb, labelmap)


# --- LabelMe -------------------------------------------------------------------------------
def _labelme_mask(path: Path, doc: Any) -> np.ndarray:
    """Shapes drawn in file order: hand labels fill 1, background labels 0 (holes)."""
    import cv2

    try:
        h, w = int(doc["imageHeight"]), int(doc["imageWidth"])
        shapes = list(doc["shapes"])
    except (KeyError, TypeError, ValueError):
        raise HandsegError(
            f"LabelMe file {path} lacks imageHeight, imageWidth or shapes; re-save it in LabelMe"
        ) from None
    out = np.zeros((h, w), np.uint8)
    for k, s in enumerate(shapes):
        try:
            kind = s.get("shape_type") or "polygon"
            pts = np.asarray(s["points"], float).reshape(-1, 2)
            value = 1 if is_hand_label(s.get("label", "")) else 0
        except (KeyError, TypeError, ValueError, AttributeError):
            raise HandsegError(f"LabelMe file {path}: shape {k} has no valid points") from None
        if kind == "polygon":
            layer = fill_polygons((h, w), [(True, pts)])
            out[layer.astype(bool)] = value
        elif kind == "rectangle" and len(pts) == 2:
            (x0, y0), (x1, y1) = np.round(pts).astype(int)
            cv2.rectangle(out, (x0, y0), (x1, y1), value, thickness=cv2.FILLED)
        elif kind == "circle" and len(pts) == 2:
            centre = tuple(int(v) for v in np.round(pts[0]))
            cv2.circle(out, centre, int(round(np.hypot(*(pts[1] - pts[0])))), value, cv2.FILLED)
        elif kind in ("point", "line", "linestrip", "points"):
            continue  # no area
        else:
            raise HandsegError(
                f"LabelMe file {path}: shape {k} is a {kind!r}; handseg reads polygon, "
                "rectangle and circle shapes"
            )
    return out
