"""Where masks come from: a folder of mask images, or an annotation tool's export.

``--masks`` may name
  - a folder of mask images (``png``; handseg's own format);
  - a COCO JSON (``coco``): RLE (compressed or not) or polygon segmentations (drawn in
    COCO's pixel convention, as pycocotools draws them);
  - a folder of LabelMe JSON files (``labelme``), e.g. the photo folder LabelMe saved into
    (polygon, rectangle, circle and mask shapes; points and lines have no area);
  - a CVAT "Segmentation mask 1.1" zip (``cvat``): ``SegmentationClass/*.png`` coloured by
    ``labelmap.txt``.

The format is told from the content, not the name. Each mask is then a path: a file, or a
*member* of an annotation file written as ``<file>/<member>``: ``labels.json/photo1.jpg``
is the annotation of image ``photo1.jpg`` inside the COCO file ``labels.json``, and
``cvat.zip/SegmentationClass/photo1.png`` the zip member. Such paths pair by their stem
like files, are stored in ``split.json`` relative to the ``--masks`` path, and
:func:`handseg.core.imaging.read_mask` decodes them (:func:`read_annotation_mask`).
Every unreadable or malformed file raises :class:`HandsegError` naming it (and the member
or annotation at fault), before anything is allocated for it: sizes are checked against the
pixel budget (:func:`~handseg.core.errors.check_pixels`) and the file's structure against
the limits below (JSON size, zip members and their sizes, shapes per image, polygon points;
every count, size and coordinate a finite integer or number in range).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import struct
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from handseg.core.annotations import (
    as_int,
    decode_rle,
    fill_area_polygon,
    fill_polygons,
    hand_from_colours,
    is_hand_label,
    parse_labelmap,
    polygon_points,
    rle_size,
)
from handseg.core.constants import IMAGE_EXTS
from handseg.core.errors import HandsegError, check_pixels, max_pixels

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

# Structural limits of annotation files (the pixel budget is core.constants.MAX_MEGAPIXELS).
MAX_JSON_MB = 256
"""Largest COCO or LabelMe JSON read, in MiB (parsed, a JSON file takes several times its
size in memory)."""
MAX_ZIP_MEMBERS = 100_000
"""Most members of a CVAT zip (a class and an object mask per photo: 50 000 photos)."""
MAX_ZIP_DIRECTORY_BYTES = 256 * MAX_ZIP_MEMBERS
"""Largest zip central directory, which Python's zipfile parses whole on opening."""
MAX_ZIP_TOTAL_GB = 32
"""Most uncompressed bytes (GiB) that the members of a CVAT zip may declare in all."""
MAX_LABELMAP_BYTES = 1 << 20
"""Largest ``labelmap.txt``."""
MAX_SHAPES = 2_000
"""Most shapes of one LabelMe file, and most hand segmentations of one COCO image."""


def _member_limit() -> int:
    """Largest uncompressed zip member read as a mask: a PNG of the pixel budget at 4
    bytes a pixel, and 1 MiB of headers."""
    return 4 * max_pixels() + (1 << 20)


def _load_json(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_JSON_MB << 20:
            raise HandsegError(
                f"{path} is {size / 2**20:.0f} MiB, more than the {MAX_JSON_MB} MiB handseg "
                "reads as one annotation file; split it (e.g. one COCO file per folder)"
            )
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise HandsegError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "re-export it from the annotation tool"
        ) from None
    except UnicodeDecodeError:
        raise HandsegError(f"{path} is not a text (JSON) file; check the path") from None
    except ValueError as exc:  # e.g. a number of more digits than Python converts
        raise HandsegError(f"{path} is not valid JSON ({exc}); re-export it") from None
    except RecursionError:
        raise HandsegError(
            f"{path} nests lists or objects too deeply to be an annotation file; re-export it"
        ) from None
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
    """``({file_name: (H, W, [(annotation label, segmentation), ...])}, hand category
    ids)`` of a COCO file; cached per file version. Duplicate image ids or file names, an
    annotation whose image the file does not list, and fields of the wrong type raise
    :class:`HandsegError` naming the file and the entry."""
    p = Path(path)
    doc = _load_json(p)
    if not _is_coco(doc):
        raise HandsegError(f"{p} is not a COCO JSON (needs 'images' and 'annotations' lists)")
    try:
        hand_ids = _coco_hand_ids(doc)
        by_id, index = _coco_images(doc["images"])
        for k, a in enumerate(doc["annotations"]):
            if not isinstance(a, dict):
                raise ValueError(f"annotations[{k}] is not an object")
            label = f"annotation {_shown_id(a.get('id'), k)}"
            image_id = as_int(a.get("image_id"), f"the image_id of {label}")
            if image_id not in by_id:
                raise ValueError(f"{label} is of image id {image_id}, which 'images' lacks")
            if as_int(a.get("category_id", -1), f"the category_id of {label}") not in hand_ids:
                continue
            if "segmentation" not in a:
                raise ValueError(f"{label} has no segmentation")
            segs = index[by_id[image_id]][2]
            segs.append((label, a["segmentation"]))
            if len(segs) > MAX_SHAPES:
                raise ValueError(f"image {by_id[image_id]} has more than {MAX_SHAPES} hands")
    except (KeyError, TypeError, ValueError) as exc:
        raise HandsegError(
            f"{p} is not a valid COCO file: {_reason(exc)}; COCO needs images[id, file_name, "
            "height, width] and annotations[image_id, category_id, segmentation]"
        ) from None
    return index, hand_ids


def _coco_hand_ids(doc: dict) -> set[int]:
    """The category ids whose names are hand labels (every id when there are no categories)."""
    cats = doc.get("categories") or []
    if not isinstance(cats, list):
        raise ValueError("'categories' is not a list")
    if not cats:  # no categories: every annotation is hand
        return {
            as_int(a.get("category_id", 0), f"annotations[{k}].category_id")
            for k, a in enumerate(doc["annotations"])
            if isinstance(a, dict)
        }
    ids = set()
    for k, c in enumerate(cats):
        if not isinstance(c, dict):
            raise ValueError(f"categories[{k}] is not an object")
        if is_hand_label(c.get("name", "")):
            ids.add(as_int(c.get("id"), f"categories[{k}].id"))
    return ids


def _coco_images(images: list) -> tuple[dict[int, str], dict[str, Any]]:
    """``({image id: file name}, {file name: (H, W, [])})``; raises ValueError on a
    duplicate id or name, a missing or mistyped field, or a size that is not positive."""
    by_id: dict[int, str] = {}
    index: dict[str, Any] = {}
    for k, im in enumerate(images):
        if not isinstance(im, dict):
            raise ValueError(f"images[{k}] is not an object")
        image_id = as_int(im.get("id"), f"images[{k}].id")
        name = im.get("file_name")
        if not isinstance(name, str) or not name.strip() or "\0" in name:
            raise ValueError(f"images[{k}].file_name is not a file name")
        if image_id in by_id:
            raise ValueError(f"image id {image_id} is used twice ({by_id[image_id]}, {name})")
        if name in index:
            raise ValueError(f"two images are called {name}")
        h, w = (as_int(im.get(key), f"the {key} of image {name}") for key in ("height", "width"))
        if h < 1 or w < 1:
            raise ValueError(f"image {name} is {w} x {h} (W x H), not a positive size")
        by_id[image_id] = name
        index[name] = (h, w, [])
    return by_id, index


def _shown_id(value: Any, k: int) -> str:
    """An annotation's id as a message names it (its position when the id is unusable)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"id {value}"
    return f"annotations[{k}]"


def _reason(exc: Exception) -> str:
    """One line for a KeyError/TypeError/ValueError raised while reading a file's fields."""
    if isinstance(exc, KeyError):
        return f"a field is missing ({exc})"
    if isinstance(exc, RuntimeError) and "encrypted" in str(exc):  # zipfile's wording
        return "a member is encrypted; export the task without a password"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"a field has the wrong type ({text})" if isinstance(exc, TypeError) else text


def _coco_mask(container: Path, member: str) -> np.ndarray:
    h, w, segs = coco_index(*stamp(container))[0][member]
    check_pixels(w, h, f"{container}: image {member}")
    out = np.zeros((h, w), np.uint8)
    for label, seg in segs:
        try:
            if isinstance(seg, dict):  # RLE
                rh, rw = rle_size(seg)
                if (rh, rw) != (h, w):
                    raise HandsegError(
                        f"{container}: {label} of {member} is an RLE of {rw} x {rh} but the "
                        f"image entry says {w} x {h} (W x H); re-export the file"
                    )
                out |= decode_rle(seg)
            elif isinstance(seg, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
                for poly in seg:  # COCO's pixel squares, as pycocotools rasterises them
                    fill_area_polygon(out, polygon_points(poly, (h, w), flat=True))
            else:
                raise ValueError("it is neither an RLE object nor a list of polygons")
        except (KeyError, TypeError, ValueError) as exc:
            raise HandsegError(
                f"{container}: {label} of {member} is malformed: {_reason(exc)}"
            ) from None
    return out


# --- CVAT ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def cvat_index(path: str, _mtime: int, _size: int) -> tuple[dict, list[str]]:
    """``(labelmap, mask member names)`` of a CVAT zip; cached per file version. A zip of
    more members, a larger directory or more uncompressed bytes than the limits above is
    refused from its directory, before the members are listed."""
    p = Path(path)
    _check_zip_directory(p)
    try:
        with zipfile.ZipFile(p) as z:
            infos = z.infolist()
            if len(infos) > MAX_ZIP_MEMBERS:
                raise HandsegError(
                    f"zip {p} holds {len(infos)} members, more than the {MAX_ZIP_MEMBERS} "
                    "of a CVAT export handseg reads; split the task"
                )
            total = sum(i.file_size for i in infos)
            if total > MAX_ZIP_TOTAL_GB << 30:
                raise HandsegError(
                    f"zip {p} declares {total / 2**30:.0f} GiB uncompressed, more than the "
                    f"{MAX_ZIP_TOTAL_GB} GiB of a CVAT export handseg reads; split the task"
                )
            names = [i.filename for i in infos]
            lm = next((i for i in infos if PurePosixPath(i.filename).name == CVAT_LABELMAP), None)
            if lm is None or not any(f"{CVAT_CLASS_DIR}/" in n for n in names):
                raise HandsegError(
                    f"zip {p} is not a CVAT Segmentation mask 1.1 export: it needs "
                    f"{CVAT_LABELMAP} and {CVAT_CLASS_DIR}/*.png"
                )
            if lm.file_size > MAX_LABELMAP_BYTES:
                raise HandsegError(
                    f"{lm.filename} in zip {p} declares {lm.file_size} bytes, more than a "
                    f"labelmap's {MAX_LABELMAP_BYTES}; re-export the task"
                )
            labelmap = parse_labelmap(z.read(lm).decode("utf-8"))
    except HandsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile and zlib raise many types on bad bytes
        raise HandsegError(f"cannot read CVAT zip {p}: {_reason(exc)}; re-export it") from None
    masks = [
        n
        for n in names
        # SegmentationClass/<name>.png, or deeper where the task's images sat in folders
        if CVAT_CLASS_DIR in PurePosixPath(n).parts[:-1] and n.lower().endswith(".png")
    ]
    return labelmap, masks


def _check_zip_directory(path: Path) -> None:
    """Refuse a zip whose end record declares more members or a larger central directory
    than the limits, before :class:`zipfile.ZipFile` parses that directory into memory. A
    zip without a readable end record is left to zipfile to refuse."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - (22 + 0xFFFF)))
            tail = f.read()
    except OSError as exc:
        raise HandsegError(f"cannot read {path}: {exc.strerror or exc}") from None
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return
    *_, members, directory, _offset, _comment = struct.unpack("<4s4H2LH", tail[at : at + 22])
    if (members == 0xFFFF or directory == 0xFFFFFFFF) and at >= 76:  # zip64: its own record
        record = tail[at - 76 : at - 20]
        if record[:4] == b"PK\x06\x06":
            *_, members, directory, _offset = struct.unpack("<4sQ2H2L4Q", record)
    if members > MAX_ZIP_MEMBERS or directory > MAX_ZIP_DIRECTORY_BYTES:
        raise HandsegError(
            f"zip {path} declares {members} members in a {directory / 2**20:.0f} MiB "
            f"directory, more than the {MAX_ZIP_MEMBERS} members of a CVAT export handseg "
            "reads; split the task"
        )


def _cvat_mask(container: Path, member: str, labelmap: dict) -> np.ndarray:
    from PIL import Image

    what = f"{member} in CVAT zip {container}"
    try:
        with zipfile.ZipFile(container) as z:
            info = z.getinfo(member)
            if info.file_size > _member_limit():
                raise HandsegError(
                    f"{what} declares {info.file_size / 2**20:.0f} MiB uncompressed, more "
                    "than a mask within the pixel limit; re-export the task"
                )
            data = z.read(info)
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            check_pixels(*struct.unpack(">II", data[16:24]), what)  # before PIL's own check
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                check_pixels(*im.size, what)
                rgb = np.asarray(im.convert("RGB"))
    except HandsegError:
        raise
    except Image.DecompressionBombError as exc:
        raise HandsegError(f"{what} is too large to decode safely ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - zipfile, zlib and PIL raise many types
        raise HandsegError(f"cannot read {what}: {_reason(exc)}; re-export it") from None
    return hand_from_colours(rgb, labelmap)


# --- LabelMe -------------------------------------------------------------------------------
def _labelme_mask(path: Path, doc: Any) -> np.ndarray:
    """Shapes drawn in file order: hand labels fill 1, background labels 0 (holes)."""
    import cv2

    h, w, shapes = _labelme_header(path, doc)
    check_pixels(w, h, f"LabelMe file {path}")
    out = np.zeros((h, w), np.uint8)
    for k, s in enumerate(shapes):
        try:
            kind = s.get("shape_type") or "polygon"
            pts = polygon_points(s["points"], (h, w))
            value = 1 if is_hand_label(s.get("label", "")) else 0
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            why = "" if isinstance(exc, (KeyError, AttributeError)) else f" ({_reason(exc)})"
            raise HandsegError(f"LabelMe file {path}: shape {k} has no valid points{why}") from None
        if kind in ("rectangle", "circle") and len(pts) != 2:
            raise HandsegError(
                f"LabelMe file {path}: shape {k} is a {kind} of {len(pts)} points, not 2"
            )
        if kind == "polygon":
            fill_polygons((h, w), [(value == 1, pts)], out=out)
        elif kind == "rectangle":
            (x0, y0), (x1, y1) = np.round(pts).astype(int)
            cv2.rectangle(out, (x0, y0), (x1, y1), value, thickness=cv2.FILLED)
        elif kind == "circle":
            centre = tuple(int(v) for v in np.round(pts[0]))
            cv2.circle(out, centre, int(round(np.hypot(*(pts[1] - pts[0])))), value, cv2.FILLED)
        elif kind == "mask":  # LabelMe's AI masks: a PNG of the box points[0] .. points[1]
            _paste_labelme_mask(out, path, k, s.get("mask"), pts, value)
        elif kind in ("point", "line", "linestrip", "points"):
            continue  # no area
        else:
            raise HandsegError(
                f"LabelMe file {path}: shape {k} is a {str(kind)[:40]!r}; handseg reads "
                "polygon, rectangle, circle and mask shapes"
            )
    return out


def _paste_labelme_mask(out: np.ndarray, path: Path, k: int, data: Any, pts, value: int):
    """A LabelMe ``mask`` shape (LabelMe 5.3+): ``mask`` is a base64 PNG (0/1) of the box
    whose top-left corner is ``points[0]``; its pixels set to ``value`` where non-zero."""
    from PIL import Image

    what = f"LabelMe file {path}: shape {k} (a mask)"
    if len(pts) < 1 or not isinstance(data, str) or not data:
        raise HandsegError(f"{what} lacks its base64 'mask' or its box; re-save it in LabelMe")
    try:
        raw = base64.b64decode(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as im:
                check_pixels(*im.size, what)
                crop = np.asarray(im.convert("L")) > 0
    except HandsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - base64 and PIL raise many types on bad bytes
        raise HandsegError(f"{what} is not a readable PNG ({_reason(exc)}); re-save it") from None
    h, w = out.shape
    x0, y0 = (int(v) for v in np.floor(np.asarray(pts[0]) + 0.5))  # round half up
    ys, xs = (
        slice(max(0, y0), min(h, y0 + crop.shape[0])),
        slice(max(0, x0), min(w, x0 + crop.shape[1])),
    )
    if ys.start < ys.stop and xs.start < xs.stop:
        part = crop[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        out[ys, xs][part] = value


def _labelme_header(path: Path, doc: Any) -> tuple[int, int, list]:
    """``(H, W, shapes)`` of a LabelMe document. The size is ``imageHeight``/``imageWidth``;
    an embedded photo (``imageData``) must have the same size (read from its header), and
    gives the size where the two fields are missing."""
    try:
        shapes = list(doc["shapes"])
        h, w = doc.get("imageHeight"), doc.get("imageWidth")
    except (KeyError, TypeError, AttributeError):
        shapes = None
    if shapes is None or ((h is None or w is None) and not doc.get("imageData")):
        raise HandsegError(
            f"LabelMe file {path} lacks imageHeight, imageWidth or shapes; re-save it in LabelMe"
        )
    if len(shapes) > MAX_SHAPES:
        raise HandsegError(
            f"LabelMe file {path} holds {len(shapes)} shapes, more than the {MAX_SHAPES} of "
            "one photo handseg reads"
        )
    try:
        if h is not None and w is not None:
            h, w = as_int(h, "imageHeight"), as_int(w, "imageWidth")
            if h < 1 or w < 1:
                raise ValueError(f"imageWidth x imageHeight is {w} x {h}, not a positive size")
    except ValueError as exc:
        raise HandsegError(f"LabelMe file {path}: {exc}; re-save it in LabelMe") from None
    embedded = _embedded_size(path, doc.get("imageData"))
    if embedded is not None:
        if h is None or w is None:
            h, w = embedded
        elif embedded != (h, w):
            raise HandsegError(
                f"LabelMe file {path}: imageWidth x imageHeight say {w} x {h} but its "
                f"imageData is a {embedded[1]} x {embedded[0]} photo; re-save it in LabelMe"
            )
    return h, w, shapes


def _embedded_size(path: Path, data: Any) -> tuple[int, int] | None:
    """(H, W) of a LabelMe file's ``imageData`` (base64 photo; EXIF orientation applied, as
    LabelMe applies it), read from the header only; None when there is none."""
    from PIL import Image

    if data is None or data == "":
        return None
    what = f"LabelMe file {path}: its imageData"
    try:
        if not isinstance(data, str):
            raise ValueError(f"it is a {type(data).__name__}, not base64 text")
        raw = base64.b64decode(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as im:
                w, h = im.size
                try:
                    turned = int(im.getexif().get(0x0112, 1)) in (5, 6, 7, 8)
                except Exception:  # noqa: BLE001 - malformed EXIF: upright, as viewers do
                    turned = False
    except Image.DecompressionBombError as exc:
        raise HandsegError(f"{what} is too large to decode safely ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - base64 and PIL raise many types on bad bytes
        raise HandsegError(
            f"{what} is not a readable image ({_reason(exc)}); re-save the file in LabelMe"
        ) from None
    check_pixels(w, h, what)
    return (w, h) if turned else (h, w)
