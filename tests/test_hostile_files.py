"""Hostile annotation files and images: bounded memory, one-line errors (issue 25).

Every reader checks the size a file declares against one pixel budget
(``core.constants.MAX_MEGAPIXELS``, ``--max-megapixels``, ``$HANDSEG_MAX_MEGAPIXELS``)
before it allocates anything, and the structure of COCO, LabelMe and CVAT files against
the limits of :mod:`handseg.core.mask_sources`. Here:

- the four files of the issue's table, through ``handseg inspect``: exit 2, one line that
  names the file, almost no memory;
- a file at the limit reads and one pixel over it is refused, for photos, mask images,
  COCO, LabelMe, CVAT and video, by the environment variable and by the flag;
- each structural limit gives its own one-line error naming the file and the entry;
- ``convert`` leaves nothing in its output when a mask cannot be read;
- a fuzz test per format: valid files built here are mutated (truncated, bytes flipped,
  sizes inflated, values swapped for hostile ones, nested deeply, members broken) and
  every case goes through ``inspect``, ``evaluate --pred-masks`` and ``convert`` (and,
  for a sample, one training step), each ending in success or exit 2 with exactly one
  ``error:`` line naming the file, within ``_GUARD_S`` seconds, with the process's peak
  resident memory at most ``PEAK_EXTRA_MB`` above where it started: a fresh ``handseg``
  process (1.2 GB resident after its imports) then stays under the issue's 2 GB.
  ``pytest -m slow`` runs 400 cases per format.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import os
import random
import struct
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import handseg.core.annotations
import handseg.core.mask_sources
from guards import time_guard
from handseg.app.cli import main
from handseg.core.constants import MAX_MEGAPIXELS, MAX_MEGAPIXELS_ENV
from handseg.core.errors import HandsegError, max_pixels
from handseg.core.imaging import read_image, read_mask
from handseg.core.mask_sources import split_member
from handseg.data.convert import convert_masks
from handseg.data.inspect import inspect_data
from handseg.data.pairs import find_pairs
from handseg.infer.media import predict_video

H, W = 64, 80  # the photos and masks the valid files describe
_GUARD_S = 30  # per command; generous, the test machine may be loaded
PEAK_EXTRA_MB = 800
"""Bound on the growth of the process's peak resident memory over the fuzz cases (the issue
asks for 2 GB in all; ``handseg`` itself takes 1.2 GB once torch is imported)."""
DEFAULT_CASES = 50  # per format in the default run
SLOW_CASES = 400  # per format under -m slow


# --- the valid files -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(synth_dir, tmp_path_factory) -> Path:
    """4 synthetic photos and their PNG masks (64 x 80): ``images/``, ``masks/``."""
    root = tmp_path_factory.mktemp("hostile") / "data"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        for p in sorted((synth_dir / sub).iterdir())[:4]:
            (root / sub / p.name).write_bytes(p.read_bytes())
    return root


@pytest.fixture(scope="module")
def valid(data, tmp_path_factory) -> dict[str, Path]:
    """The masks as a COCO JSON, a LabelMe folder and a CVAT zip (``handseg convert``)."""
    out = tmp_path_factory.mktemp("valid")
    return {
        to: Path(
            convert_masks(data / "masks", to, out / to, images=data / "images", progress=False)[
                "out"
            ]
        )  # fmt: skip
        for to in ("coco", "labelme", "cvat")
    }


def _cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def _error_line(code: int, err: str, named: Path | str) -> str | None:
    """None for a success; the one ``error:`` line (which names ``named``) for exit 2.
    Anything else raises AssertionError."""
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if code == 0:
        assert not lines, err[-1000:]
        return None
    assert code == 2, f"exit status {code}: {err[-1000:]}"
    assert len(lines) == 1, f"expected one 'error:' line, got {err[-1000:]!r}"
    assert str(named) in lines[0], f"the error does not name {named}: {lines[0]}"
    return lines[0]


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(key + ":"))
    return int(line.split()[1]) / 1024


@contextlib.contextmanager
def _peak() -> Iterator[dict[str, float]]:
    """``{"base", "peak"}`` resident MB: now, and the highest during the block (Linux:
    the kernel's peak is reset first; elsewhere both stay 0)."""
    stats = {"base": 0.0, "peak": 0.0}
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
        stats["base"] = _status_mb("VmRSS")
    except OSError:
        yield stats
        return
    yield stats
    stats["peak"] = _status_mb("VmHWM")


# --- PNG and zip building blocks -----------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_1bit(w: int, h: int) -> bytes:
    """A black 1-bit PNG of w x h, streamed through zlib: a few KB for 30000 x 30000."""
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (w + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))  # fmt: skip


def _with_size(png: bytes, w: int, h: int) -> bytes:
    """``png`` with its IHDR claiming w x h (CRC fixed): a header that lies."""
    ihdr = struct.pack(">II", w, h) + png[24:29]
    return png[:8] + _png_chunk(b"IHDR", ihdr) + png[33:]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _zip(members: dict[str, bytes] | list[tuple[str, bytes]], path: Path) -> Path:
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in items:
            z.writestr(name, data)
    return path


def _copy_labelme(folder: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in folder.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


def _first_labelme(folder: Path) -> Path:
    return sorted(folder.glob("*.json"))[0]


def _coco_doc(valid) -> dict:
    return json.loads(valid["coco"].read_text())


def _write_json(doc, path: Path) -> Path:
    path.write_text(json.dumps(doc))
    return path


# --- the issue's table ---------------------------------------------------------------------


def _table_coco(valid, tmp: Path) -> Path:
    doc = _coco_doc(valid)
    doc["images"][0].update(height=200_000, width=200_000)
    ann = next(a for a in doc["annotations"] if a["image_id"] == doc["images"][0]["id"])
    ann["segmentation"] = {"size": [200_000, 200_000], "counts": [40_000_000_000]}
    return _write_json(doc, tmp / "big.json")


def _table_labelme(valid, tmp: Path) -> Path:
    folder = _copy_labelme(valid["labelme"], tmp / "lm")
    first = _first_labelme(folder)
    doc = json.loads(first.read_text())
    doc.update(imageHeight=100_000, imageWidth=100_000)
    doc["shapes"][0]["points"] = [[0, 0], [1e12, 0], [1e12, 1e12]]
    _write_json(doc, first)
    return folder


def _table_cvat(valid, tmp: Path) -> Path:
    members = _members(valid["cvat"])
    name = next(n for n in members if n.startswith("SegmentationClass/"))
    members[name] = _png_1bit(30_000, 30_000)
    return _zip(members, tmp / "bomb.zip")


def _table_negative(valid, tmp: Path) -> Path:
    doc = _coco_doc(valid)
    doc["annotations"][0]["segmentation"] = {"size": [H, W], "counts": [3, -2, 4, H * W - 5]}
    return _write_json(doc, tmp / "negative.json")


TABLE = {
    "COCO 200000 x 200000": (_table_coco, "too large to decode safely"),
    "LabelMe 100000 x 100000, coordinates 1e12": (_table_labelme, "too large to decode safely"),
    "CVAT zip, 30000 x 30000 1-bit PNG": (_table_cvat, "too large to decode safely"),
    "COCO RLE with a negative count": (_table_negative, "count 1 is negative (-2)"),
}


@pytest.mark.parametrize("row", list(TABLE))
def test_the_issues_files_are_refused_in_one_line_and_little_memory(row, data, valid, tmp_path):
    build, expected = TABLE[row]
    target = build(valid, tmp_path)
    with _peak() as mem:
        code, err = _cli(["inspect", "--images", str(data / "images"), "--masks", str(target)])
    line = _error_line(code, err, target)
    assert line is not None and expected in line, line
    if mem["peak"]:
        assert mem["peak"] - mem["base"] < 100, mem  # MB; the sizes are read, never allocated


# --- the pixel budget: at the limit, one pixel over ----------------------------------------


def _first_mask(data: Path, masks: Path) -> Path:
    return find_pairs(data / "images", masks)[0][1]


@pytest.mark.parametrize("source", ["png", "photo", "coco", "labelme", "cvat"])
def test_a_file_at_the_limit_reads_and_one_pixel_over_is_refused(source, data, valid, monkeypatch):
    if source == "photo":
        path, read = find_pairs(data / "images", data / "masks")[0][0], read_image
    else:
        path = _first_mask(data, data / "masks" if source == "png" else valid[source])
        read = read_mask
    monkeypatch.setenv(MAX_MEGAPIXELS_ENV, str(H * W / 1e6))
    assert max_pixels() == H * W
    assert read(path).shape[:2] == (H, W)
    monkeypatch.setenv(MAX_MEGAPIXELS_ENV, str((H * W - 1) / 1e6))
    with pytest.raises(HandsegError, match="too large to decode safely") as err:
        read(path)
    message = str(err.value)
    assert f"{W} x {H}" in message and "--max-megapixels" in message and "\n" not in message
    found = split_member(path)
    assert str(found[0] if found else path) in message, message


def test_the_default_budget_is_serves_and_the_variable_must_be_a_number(monkeypatch):
    monkeypatch.delenv(MAX_MEGAPIXELS_ENV, raising=False)
    assert MAX_MEGAPIXELS == 50.0 and max_pixels() == 50_000_000
    for bad in ("lots", "-3", "0", "nan", "inf"):
        monkeypatch.setenv(MAX_MEGAPIXELS_ENV, bad)
        with pytest.raises(HandsegError, match=MAX_MEGAPIXELS_ENV):
            max_pixels()


def test_the_flag_sets_the_budget_for_one_command(data, valid, monkeypatch):
    monkeypatch.delenv(MAX_MEGAPIXELS_ENV, raising=False)
    args = ["inspect", "--images", str(data / "images"), "--masks", str(valid["coco"])]
    code, err = _cli([*args, "--max-megapixels", str((H * W - 1) / 1e6)])
    assert "too large to decode safely" in _error_line(code, err, data / "images")  # photo 1
    assert MAX_MEGAPIXELS_ENV not in os.environ  # restored after the command
    assert _cli([*args, "--max-megapixels", str(H * W / 1e6)])[0] == 0
    code, err = _cli([*args, "--max-megapixels", "-1"])
    assert code == 2 and "--max-megapixels" in err
    monkeypatch.setenv(MAX_MEGAPIXELS_ENV, "nonsense")
    code, err = _cli(args)
    assert code == 2 and err.count("error:") == 1 and MAX_MEGAPIXELS_ENV in err


def test_a_video_whose_frames_are_over_the_budget_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v")
    for _ in range(3):
        writer.write(np.full((H, W, 3), 100, np.uint8))
    writer.release()
    monkeypatch.setenv(MAX_MEGAPIXELS_ENV, str((H * W - 1) / 1e6))
    with pytest.raises(HandsegError, match="too large to decode safely") as err:
        predict_video(None, path, None, progress=False)  # refused before the model runs
    assert str(path) in str(err.value) and f"{W} x {H}" in str(err.value)


# --- structural limits ---------------------------------------------------------------------


def _coco_case(change: Callable[[dict], None]) -> Callable:
    def build(valid, tmp: Path) -> Path:
        doc = _coco_doc(valid)
        change(doc)
        return _write_json(doc, tmp / "coco.json")

    return build


def _labelme_case(change: Callable[[dict], None]) -> Callable:
    def build(valid, tmp: Path) -> Path:
        folder = _copy_labelme(valid["labelme"], tmp / "lm")
        first = _first_labelme(folder)
        doc = json.loads(first.read_text())
        change(doc)
        first.write_text(json.dumps(doc))
        return folder

    return build


def _cvat_case(change: Callable[[dict], object]) -> Callable:
    def build(valid, tmp: Path) -> Path:
        members = _members(valid["cvat"])
        changed = change(members)
        return _zip(members if changed is None else changed, tmp / "cvat.zip")

    return build


def _rle(doc: dict, counts) -> None:
    doc["annotations"][0]["segmentation"] = {"size": [H, W], "counts": counts}


def _seg(doc: dict, seg) -> None:
    doc["annotations"][0]["segmentation"] = seg


def _class_member(members: dict) -> str:
    return next(n for n in members if n.startswith("SegmentationClass/"))


def _tiny_png_b64(w: int, h: int) -> str:
    return base64.b64encode(_png(np.zeros((h, w), np.uint8))).decode("ascii")


STRUCTURE = {
    # COCO
    "RLE count not an integer": (_coco_case(lambda d: _rle(d, [1.5, H * W - 1.5])),
                                 "RLE count 0 is 1.5, not an integer"),
    "RLE count NaN": (_coco_case(lambda d: _rle(d, [float("nan"), H * W])), "not an integer"),
    "RLE count overflowing": (_coco_case(lambda d: _rle(d, [10**30, 0])),
                              "more than the image's 5120 pixels"),
    "RLE more runs than pixels": (_coco_case(lambda d: _rle(d, [0] * (H * W + 2))),
                                  "5122 runs, more than H x W + 1"),
    "RLE counts too long a number": (_coco_case(lambda d: _rle(d, "o" * 20 + "0")), "too long"),
    "RLE size differs from the image": (
        _coco_case(lambda d: _seg(d, {"size": [32, 40], "counts": [1280]})),
        "an RLE of 40 x 32 but the image entry says 80 x 64"),
    "image height not an integer": (
        _coco_case(lambda d: d["images"][0].update(height=64.5)), "is 64.5, not an integer"),
    "image width negative": (_coco_case(lambda d: d["images"][0].update(width=-80)),
                             "not a positive size"),
    "duplicate image id": (_coco_case(lambda d: d["images"][1].update(id=d["images"][0]["id"])),
                           "is used twice"),
    "duplicate file name": (
        _coco_case(lambda d: d["images"][1].update(file_name=d["images"][0]["file_name"])),
        "two images are called"),
    "annotation of a missing image": (
        _coco_case(lambda d: d["annotations"][0].update(image_id=999)),
        "is of image id 999, which 'images' lacks"),
    "polygon with NaN": (_coco_case(lambda d: _seg(d, [[0, 0, float("nan"), 5, 9, 9]])),
                         "NaN or infinite coordinate"),
    "polygon with 1e12": (_coco_case(lambda d: _seg(d, [[0, 0, 1e12, 5, 9, 9]])),
                          "lies far outside the 80 x 64 image"),
    "polygon with an odd count": (_coco_case(lambda d: _seg(d, [[0, 0, 5, 5, 9]])),
                                  "odd number of coordinates"),
    "segmentation of another type": (_coco_case(lambda d: _seg(d, "hand")),
                                     "neither an RLE object nor a list of polygons"),
    "deeply nested": (None, "nests lists or objects too deeply"),  # built in the test
    # LabelMe
    "LabelMe width NaN": (_labelme_case(lambda d: d.update(imageWidth=float("nan"))),
                          "imageWidth is nan, not an integer"),
    "LabelMe height text": (_labelme_case(lambda d: d.update(imageHeight="tall")),
                            "imageHeight is 'tall', not an integer"),
    "LabelMe point infinite": (
        _labelme_case(lambda d: d["shapes"][0].update(points=[[0, 0], [float("inf"), 1], [2, 2]])),
        "NaN or infinite coordinate"),
    "LabelMe rectangle of 3 points": (
        _labelme_case(lambda d: d["shapes"][0].update(shape_type="rectangle")),
        "rectangle of"),
    "LabelMe imageData of another size": (
        _labelme_case(lambda d: d.update(imageData=_tiny_png_b64(W // 2, H // 2))),
        "imageData is a 40 x 32 photo"),
    "LabelMe imageData that lies about its size": (
        _labelme_case(lambda d: d.update(imageData=base64.b64encode(
            _with_size(_png(np.zeros((H, W), np.uint8)), 20_000, 20_000)).decode())),
        "imageData is too large to decode safely"),
    "LabelMe imageData not an image": (
        _labelme_case(lambda d: d.update(imageData=base64.b64encode(b"hello").decode())),
        "imageData is not a readable image"),
    # CVAT
    "CVAT PNG header claims 20000 x 20000": (
        _cvat_case(lambda m: m.update({_class_member(m): _with_size(m[_class_member(m)],
                                                                    20_000, 20_000)})),
        "too large to decode safely"),
    "CVAT mask truncated": (
        _cvat_case(lambda m: m.update({_class_member(m): m[_class_member(m)][:60]})),
        "cannot read SegmentationClass/"),
    "CVAT labelmap colour out of range": (
        _cvat_case(lambda m: m.update({"labelmap.txt": b"hand:300,0,0::\n"})),
        "is not r,g,b in 0..255"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(STRUCTURE))
def test_each_structural_fault_is_one_line_naming_the_file(name, data, valid, tmp_path):
    build, expected = STRUCTURE[name]
    if build is None:
        target = tmp_path / "deep.json"
        target.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + ', "annotations": []}')
    else:
        target = build(valid, tmp_path)
    with pytest.raises(HandsegError) as err:
        inspect_data(data / "images", target)
    message = str(err.value)
    assert expected in message and str(target) in message and "\n" not in message, message


def test_labelme_imagedata_of_the_right_size_reads_and_gives_a_missing_size(valid, tmp_path):
    folder = _copy_labelme(valid["labelme"], tmp_path / "lm")
    first = _first_labelme(folder)
    want = read_mask(first)
    doc = json.loads(first.read_text())
    doc["imageData"] = _tiny_png_b64(W, H)
    _write_json(doc, first)
    assert np.array_equal(read_mask(first), want)
    del doc["imageHeight"], doc["imageWidth"]
    _write_json(doc, first)
    assert np.array_equal(read_mask(first), want)  # the size comes from the photo's header


@pytest.mark.parametrize(
    ("limit", "value", "fmt", "expected"),
    [
        ("MAX_JSON_MB", 0, "coco", "MiB, more than the 0 MiB"),
        ("MAX_SHAPES", 1, "labelme", "shapes, more than the 1"),
        ("MAX_ZIP_MEMBERS", 3, "cvat", "members"),
        ("MAX_ZIP_DIRECTORY_BYTES", 100, "cvat", "directory"),
        ("MAX_ZIP_TOTAL_GB", 0, "cvat", "GiB uncompressed"),
        ("MAX_LABELMAP_BYTES", 10, "cvat", "more than a labelmap's 10"),
    ],
)
def test_the_size_limits_of_annotation_files(limit, value, fmt, expected, data, valid, monkeypatch):
    """Each limit lowered so that the valid file breaks it (the real limits are far above
    what the tests can afford to build)."""
    monkeypatch.setattr(handseg.core.mask_sources, limit, value)
    handseg.core.mask_sources.cvat_index.cache_clear()
    handseg.core.mask_sources.coco_index.cache_clear()
    with pytest.raises(HandsegError, match=expected) as err:
        inspect_data(data / "images", valid[fmt])
    assert str(valid[fmt]) in str(err.value)
    handseg.core.mask_sources.cvat_index.cache_clear()


def test_too_many_hands_polygon_points_and_a_large_member(data, valid, tmp_path, monkeypatch):
    monkeypatch.setattr(handseg.core.mask_sources, "MAX_SHAPES", 0)
    with pytest.raises(HandsegError, match="more than 0 hands"):
        inspect_data(data / "images", _coco_case(lambda d: None)(valid, tmp_path))
    monkeypatch.undo()
    monkeypatch.setattr(handseg.core.annotations, "MAX_POLYGON_POINTS", 2)
    with pytest.raises(HandsegError, match="more than 2 points"):
        read_mask(_first_labelme(valid["labelme"]))
    monkeypatch.undo()
    # a member larger than a mask within the budget can be is not even decompressed
    monkeypatch.setenv(MAX_MEGAPIXELS_ENV, "0.000001")  # 1 pixel: members up to 1 MiB
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    members = _members(valid["cvat"])
    members[_class_member(members)] = _png(noise)  # ~1.4 MB, incompressible
    big = _zip(members, tmp_path / "big-member.zip")
    with pytest.raises(HandsegError, match="MiB uncompressed, more than a mask"):
        read_mask(big / _class_member(members))


def test_zip_members_that_cannot_be_read(valid, tmp_path):
    """An encrypted member and an unknown compression method: one line each."""
    for offset, value, expected in ((8, 1, "encrypted"), (10, 99, "compression")):
        raw = bytearray(valid["cvat"].read_bytes())
        for sig in (b"PK\x01\x02", b"PK\x03\x04"):
            at = raw.find(sig)
            while at >= 0:
                o = offset if sig == b"PK\x01\x02" else offset - 2
                raw[at + o : at + o + 2] = struct.pack("<H", value)
                at = raw.find(sig, at + 4)
        path = tmp_path / f"{expected}.zip"
        path.write_bytes(bytes(raw))
        with pytest.raises(HandsegError, match=expected) as err:
            read_mask(path / _class_member(_members(valid["cvat"])))
        assert str(path) in str(err.value) and "\n" not in str(err.value), err.value


@pytest.mark.parametrize("to", ["png", "labelme", "coco"])
def test_convert_writes_nothing_when_a_mask_is_refused(to, data, valid, tmp_path):
    doc = _coco_doc(valid)
    last = doc["images"][-1]["id"]
    ann = next(a for a in doc["annotations"] if a["image_id"] == last)
    ann["segmentation"] = {"size": [H, W], "counts": [5, -1]}  # the last mask is refused
    bad = _write_json(doc, tmp_path / "bad.json")
    out = tmp_path / ("out.json" if to == "coco" else "out")
    code, err = _cli(["convert", str(bad), "--to", to, "--out", str(out)])
    assert "negative" in _error_line(code, err, bad)
    assert not out.exists()
    # an output folder that holds files already keeps exactly those
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert _cli(["convert", str(bad), "--to", to, "--out", str(folder)])[0] == 2
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


# --- fuzzing -------------------------------------------------------------------------------

HOSTILE: list = [
    -1, 0, 1, 7, 2**31, 2**63, 10**30, -(10**30), 1.5, -0.5, 1e308, float("nan"),
    float("inf"), float("-inf"), "", "x", "12", "\u0000", "../../etc/passwd", "a" * 5000,
    None, True, False, [], {}, [1, 2], [[[[1]]]], {"a": 1}, [float("nan")] * 6,
    200_000, 10**6, 7071,
]  # fmt: skip
"""Values a field may be swapped for: negative, overflowing, fractional and non-finite
numbers, wrong types, odd strings, sizes above (and one just under) the budget."""
BIG_SIZES = [200_000, 10**6, 2**31 - 1, 2**40, 100_000, 7072, 7071, 0, -5, 3]
_DEEP, _BIG = "\u0001deep", "\u0001big"  # sentinels replaced after json.dumps


def _json_paths(node, prefix=()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _json_paths(v, (*prefix, i))


def _set(doc, path: tuple, value) -> None:
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _get(doc, path: tuple):
    for key in path:
        doc = doc[key]
    return doc


def _dumps(doc, rng: random.Random) -> bytes:
    text = json.dumps(doc)
    depth = rng.choice([40, 3000, 200_000])
    text = text.replace(json.dumps(_DEEP), "[" * depth + "]" * depth)
    n = rng.choice([1000, 300_000, 2_100_000])
    return text.replace(json.dumps(_BIG), "[" + "3," * (n - 1) + "3]").encode()


def _mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    op = rng.choice(["truncate", "flip", "insert", "repeat"])
    b = bytearray(raw)
    if op == "truncate":
        return bytes(b[: rng.randrange(len(b))])
    if op == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    at = rng.randrange(len(b))
    if op == "insert":
        return bytes(b[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + b[at:])
    chunk = b[at : at + rng.randint(1, 64)]
    return bytes(b[:at] + chunk * rng.randint(2, 50) + b[at:])


def _mutate_json(doc, rng: random.Random, sizes: Callable[[dict, random.Random], None]) -> bytes:
    """One mutation of a JSON document: bytes, a field's value or type, a deletion, a
    duplicated entry, a size inflated (``sizes``), deep nesting or a huge list."""
    raw = json.dumps(doc).encode()
    op = rng.choice(["bytes", "bytes", "value", "value", "value", "delete", "duplicate",
                     "sizes", "sizes", "nest", "big", "type"])  # fmt: skip
    if op == "bytes":
        return _mutate_bytes(raw, rng)
    doc = copy.deepcopy(doc)
    paths = list(_json_paths(doc))[1:]
    # half the time a field near the top (a size, an id, a shape's type), not one of the
    # many polygon coordinates or RLE counts
    path = rng.choice([p for p in paths if len(p) <= 3] if rng.random() < 0.5 else paths)
    if op == "value":
        _set(doc, path, copy.deepcopy(rng.choice(HOSTILE)))
    elif op == "delete":
        node = _get(doc, path[:-1])
        del node[path[-1]]
    elif op == "duplicate":
        lists = [p for p in paths if isinstance(_get(doc, p), list) and _get(doc, p)]
        if lists:
            target = _get(doc, rng.choice(lists))
            target.extend(copy.deepcopy(target[: rng.randint(1, 3)]) * rng.choice([1, 2, 3000]))
    elif op == "sizes":
        sizes(doc, rng)
    elif op == "nest":
        _set(doc, path, _DEEP)
    elif op == "big":
        _set(doc, path, _BIG)
    else:  # a container becomes another type: its text, a list <-> an object, a number
        containers = [p for p in paths if isinstance(_get(doc, p), (dict, list))]
        p = rng.choice(containers or [path])
        value = _get(doc, p)
        swapped = (
            list(value.values())
            if isinstance(value, dict)
            else {str(k): v for k, v in enumerate(value)}
            if isinstance(value, list)
            else 0
        )
        _set(doc, p, rng.choice([json.dumps(value), swapped, 3.5, None]))
    return _dumps(doc, rng)


def _coco_sizes(doc: dict, rng: random.Random) -> None:
    im = rng.choice(doc["images"])
    h, w = rng.choice(BIG_SIZES), rng.choice(BIG_SIZES + [H, W])
    im.update(height=h, width=w)
    for a in doc["annotations"]:
        if a["image_id"] == im["id"] and isinstance(a["segmentation"], dict) and rng.random() < 0.7:
            a["segmentation"]["size"] = [h, w]
            if rng.random() < 0.5:
                a["segmentation"]["counts"] = [h * w] if rng.random() < 0.5 else [0, h * w]


def _labelme_sizes(doc: dict, rng: random.Random) -> None:
    op = rng.choice(["size", "size", "points", "image"])
    if op == "size":
        doc.update(imageHeight=rng.choice(BIG_SIZES), imageWidth=rng.choice(BIG_SIZES + [W]))
    elif op == "points" and doc["shapes"]:
        shape = rng.choice(doc["shapes"])
        big = rng.choice([1e12, -1e12, 3e5, 2**31, float("nan"), 1e308])
        shape["points"][rng.randrange(len(shape["points"]))] = [big, rng.choice([big, 3])]
    else:  # an embedded photo: right size, wrong size, a lying header, garbage
        png = _png(np.zeros((H, W), np.uint8))
        doc["imageData"] = base64.b64encode(rng.choice([
            png, _png(np.zeros((H // 2, W), np.uint8)), _with_size(png, 30_000, 30_000),
            _with_size(png, 7000, 7000), png[:40], b"\xff\xd8 not a jpeg",
        ])).decode() if rng.random() < 0.9 else "%%% not base64 %%%"  # fmt: skip


def _coco_case_file(valid, tmp: Path, rng: random.Random) -> Path:
    path = tmp / "coco.json"
    path.write_bytes(_mutate_json(_coco_doc(valid), rng, _coco_sizes))
    return path


def _labelme_case_folder(valid, tmp: Path, rng: random.Random) -> Path:
    folder = _copy_labelme(valid["labelme"], tmp / "lm")
    victim = rng.choice(sorted(folder.glob("*.json")))
    victim.write_bytes(_mutate_json(json.loads(victim.read_text()), rng, _labelme_sizes))
    return folder


def _mutate_png(png: bytes, rng: random.Random) -> bytes:
    op = rng.choice(["bytes", "bytes", "size", "other"])
    if op == "bytes":
        return _mutate_bytes(png, rng)
    if op == "size":
        sizes = [v for v in BIG_SIZES if 0 <= v < 2**32]  # what a PNG header can hold
        return _with_size(png, rng.choice([*sizes, W * 2, 1]), rng.choice([*sizes, H]))
    other = [
        lambda: b"",
        lambda: b"not a png",
        lambda: _png_1bit(20_000, 20_000),
        lambda: _png(np.zeros((H, W), np.uint16)),
        lambda: _png(np.zeros((H // 2, W), np.uint8)),
        lambda: _png(np.full((H, W, 3), 255, np.uint8)),
    ]
    return rng.choice(other)()


def _cvat_case_file(valid, tmp: Path, rng: random.Random) -> Path:
    path = tmp / "cvat.zip"
    op = rng.choice(["zip bytes", "zip tail", "mask", "mask", "labelmap", "members", "flags"])
    if op in ("zip bytes", "zip tail"):
        raw = bytearray(valid["cvat"].read_bytes())
        if op == "zip bytes":
            raw = _mutate_bytes(bytes(raw), rng)
        else:  # the central directory and end record, where sizes and offsets live
            for _ in range(rng.randint(1, 6)):
                raw[len(raw) - 1 - rng.randrange(min(300, len(raw)))] = rng.randrange(256)
        path.write_bytes(bytes(raw))
        return path
    members = _members(valid["cvat"])
    names = [n for n in members if n.startswith("SegmentationClass/")]
    if op == "mask":
        name = rng.choice(names)
        members[name] = _mutate_png(members[name], rng)
    elif op == "labelmap" and rng.random() < 0.1:
        members.pop("labelmap.txt")
    elif op == "labelmap":
        members["labelmap.txt"] = rng.choice([
            _mutate_bytes(members["labelmap.txt"], rng), b"", b"hand:1,2::\n", b"hand:-1,0,0::\n",
            b"\xff\xfe\x00bad", b"hand:255,0,0::\n" * 50_000, b"hand:9,9,9,9,9,9::\n",
        ])  # fmt: skip
    elif op == "members":
        kind = rng.choice(["drop", "rename", "duplicate", "many"])
        if kind == "drop":
            members.pop(rng.choice(list(members)))
        elif kind == "rename":
            old = rng.choice(names)
            members[rng.choice(["SegmentationClass/", "SegmentationClass/../", "x/SegmentationClass/",
                                "SegmentationClass/a/b/", "/"]) + "q.png"] = members.pop(old)  # fmt: skip
        elif kind == "duplicate":
            name = rng.choice(names)
            return _zip([*members.items(), (name, members[name])], path)
        else:
            for i in range(rng.choice([50, 2000])):
                members[f"SegmentationClass/extra{i}.png"] = b"x"
    else:  # general-purpose flags / compression method of every entry
        _zip(members, path)
        raw = bytearray(path.read_bytes())
        field, value = rng.choice([(8, 1), (10, 99), (10, 14), (10, 12), (8, 0x41)])
        for sig, off in ((b"PK\x01\x02", field), (b"PK\x03\x04", field - 2)):
            at = raw.find(sig)
            while at >= 0:
                raw[at + off : at + off + 2] = struct.pack("<H", value)
                at = raw.find(sig, at + 4)
        path.write_bytes(bytes(raw))
        return path
    return _zip(members, path)


BUILDERS = {"coco": _coco_case_file, "labelme": _labelme_case_folder, "cvat": _cvat_case_file}
CONVERT_TO = ("png", "coco", "labelme", "cvat", "palette")


def _train_argv(data: Path, target: Path, run: Path) -> list[str]:
    return ["train", "--images", str(data / "images"), "--masks", str(target), "--out", str(run),
            "--preset", "scratch", "--epochs", "1", "--max-steps", "1", "--image-size", "32", "40",
            "--batch-size", "2", "--backbone-weights", "none", "--workers", "0", "--device", "cpu",
            "--no-test", "--split-fractions", "0.75", "0.25", "0"]  # fmt: skip


def _fuzz(fmt: str, n: int, data: Path, valid, tmp_path: Path, trained: int) -> Counter:
    """``n`` mutants of the valid ``fmt`` file, each through inspect, evaluate
    --pred-masks and convert; train on the first ``trained`` mutants that read (a full
    step each) and on every mutant that does not (refused before training starts).
    Returns the outcomes; raises AssertionError listing every case that broke the contract."""
    tally: Counter = Counter()
    seconds: Counter = Counter()
    broken: list[str] = []
    for i in range(n):
        rng = random.Random(f"{fmt}-{i}")
        case = tmp_path / f"case{i}"
        case.mkdir()
        target = BUILDERS[fmt](valid, case, rng)
        to = CONVERT_TO[i % len(CONVERT_TO)]
        out = case / {"coco": "out.json", "cvat": "out.zip"}.get(to, "out")
        images = ["--images", str(data / "images")] if i % 2 else []
        commands = {
            "inspect": ["inspect", "--images", str(data / "images"), "--masks", str(target)],
            "evaluate": ["evaluate", "--pred-masks", str(target), "--masks", str(data / "masks")],
            "convert": ["convert", str(target), "--to", to, "--out", str(out), *images],
        }
        read = None
        for op, argv in commands.items():
            try:
                t0 = time.perf_counter()
                with time_guard(_GUARD_S):
                    code, err = _cli(argv)
                seconds[op] += time.perf_counter() - t0
                # evaluate's size check names the two masks by their member names only
                # (eval/evaluate.py): the case's file is then named by its photo's name
                aspect = op == "evaluate" and "the aspect ratios differ" in err
                line = _error_line(code, err, "its ground truth" if aspect else target)
                if op == "convert" and line is not None:
                    assert not out.exists(), f"convert failed but wrote {out}"
            except BaseException as exc:  # noqa: BLE001 - every victim is listed at the end
                broken.append(f"{fmt} case {i} {op}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            tally[f"{op} {'error' if line else 'ok'}"] += 1
            read = (line is None) if op == "inspect" else read
        if read is False or (read and trained > 0):
            trained -= bool(read)
            try:
                t0 = time.perf_counter()
                with time_guard(4 * _GUARD_S):
                    code, err = _cli(_train_argv(data, target, case / "run"))
                seconds[f"train {read}"] += time.perf_counter() - t0
                line = _error_line(code, err, target)
                tally[f"train {'error' if line else 'ok'}"] += 1
            except BaseException as exc:  # noqa: BLE001
                broken.append(f"{fmt} case {i} train: {type(exc).__name__}: {str(exc)[:300]}")
    print({k: round(v, 1) for k, v in seconds.items()})
    assert not broken, f"{len(broken)} broken case(s):\n" + "\n".join(broken)
    return tally


def _run_fuzz(fmt: str, n: int, data: Path, valid, tmp_path: Path) -> None:
    with _peak() as mem:
        tally = _fuzz(fmt, n, data, valid, tmp_path, trained=1)
    peak = f", peak RSS {mem['peak']:.0f} MB (start {mem['base']:.0f} MB)" if mem["peak"] else ""
    print(f"\n{fmt}: {n} cases{peak}: {dict(sorted(tally.items()))}")
    assert tally["inspect error"] > n // 2, tally  # the mutants are hostile enough to bite
    assert tally["inspect ok"] + tally["inspect error"] == n
    assert tally["train ok"] >= 1, tally  # one training step ran on an accepted mutant
    if mem["peak"]:
        assert mem["peak"] - mem["base"] < PEAK_EXTRA_MB, mem


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_fuzz_every_case_succeeds_or_fails_in_one_line(fmt, data, valid, tmp_path):
    _run_fuzz(fmt, DEFAULT_CASES, data, valid, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_fuzz_many_cases(fmt, data, valid, tmp_path):
    _run_fuzz(fmt, SLOW_CASES, data, valid, tmp_path)


def test_training_on_an_over_budget_photo_writes_nothing(synth_dir, tmp_path):
    """The photos' declared sizes are checked before the run folder gets split.json: a
    refused photo leaves no run behind (a folder that existed keeps what it held)."""
    out = tmp_path / "run"
    args = ["train", "--images", str(synth_dir / "images"), "--masks", str(synth_dir / "masks"),
            "--epochs", "1", "--max-megapixels", "0.001"]  # fmt: skip
    code, err = _cli([*args, "--out", str(out)])
    line = _error_line(code, err, "synth")
    assert line is not None and "too large to decode safely" in line
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    code, err = _cli([*args, "--out", str(kept)])
    assert code == 2 and sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
