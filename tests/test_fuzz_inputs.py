"""Malformed and unusual inputs: every one ends in success or a clear one-line error.

More than 200 generated cases (broken, truncated, misnamed and non-image files;
decompression-bomb headers; 1-pixel, 16-bit, float, CMYK, palette and animated images;
masks with stray values or the wrong size; symlink loops, odd file names, unreadable
files and folders, empty folders, folders named like images) run through every
operation: the data layer (``find_pairs``, ``read_image``, ``read_mask``, ``load_pair``,
``SegDataset[i]``) and the ``predict`` / ``evaluate`` commands through ``cli.main`` with a
tiny untrained model. An operation may succeed (and its result is then checked: shapes,
value sets, written files) or fail with :class:`HandsegError` / exit status 2 and exactly
one ``error:`` line; anything else (another exception, a traceback on stderr, a logged
traceback, a multi-line message, more than ``_GUARD_S`` seconds) fails the test.

One test per operation loops over all cases and lists every case that broke the
contract, so a regression shows all its victims at once. The totals of each operation are
printed (``pytest -s``) and summarised in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import handseg.app.commands
import handseg.infer.pipeline
import handseg.infer.predictor
from guards import time_guard
from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.core.imaging import read_image, read_mask
from handseg.data.dataset import SegDataset
from handseg.data.pairs import find_pairs, load_pair
from handseg.model.checkpoint import save_model_file
from handseg.model.network import HandSegNet

H, W = 64, 80  # size of the well-formed partner file of each case
_GUARD_S = 20  # per-operation limit; generous because the test machine may be loaded
_IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- building blocks -------------------------------------------------------------------------


def _photo(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8: a gradient with a bright disc (the 'hand') and some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 90)], 2)
    img[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2] = (230, 190, 160)
    return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


def _mask01(h: int = H, w: int = W) -> np.ndarray:
    """(h, w) uint8 {0, 1}: the disc of :func:`_photo`."""
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2).astype(np.uint8)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(w: int, h: int, mode_byte: int = 2) -> bytes:
    """A PNG whose IHDR claims w x h (colour type ``mode_byte``) over a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, mode_byte, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_claiming(w: int, h: int) -> bytes:
    """A small JPEG with its SOF0 size fields patched to w x h."""
    data = bytearray(_encode(Image.fromarray(_photo(16, 16)), "JPEG"))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def _gif_claiming(w: int, h: int) -> bytes:
    data = bytearray(_encode(Image.fromarray(_photo(8, 8)).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", w, h)  # logical screen
    i = data.index(b"\x2c")  # image descriptor
    data[i + 5 : i + 9] = struct.pack("<HH", w, h)
    return bytes(data)


def _bmp_claiming(w: int, h: int) -> bytes:
    data = bytearray(_encode(Image.fromarray(_photo(8, 8)), "BMP"))
    data[18:26] = struct.pack("<ii", w, h)
    return bytes(data)


def _tiff_claiming(w: int, h: int) -> bytes:
    """A minimal little-endian grey TIFF whose tags claim w x h, over 64 bytes of pixels."""
    tags = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0),
            (278, 4, h), (279, 4, 64)]  # fmt: skip
    ifd_at = 8
    pixels_at = ifd_at + 2 + 12 * len(tags) + 4
    body = b""
    for tag, typ, val in tags:
        val = pixels_at if tag == 273 else val
        body += struct.pack("<HHI", tag, typ, 1) + (
            struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val)
        )
    return (
        b"II*\x00"
        + struct.pack("<I", ifd_at)
        + struct.pack("<H", len(tags))
        + body
        + (b"\x00\x00\x00\x00" + bytes(64))
    )


def _tiff_ifd_loop() -> bytes:
    """A TIFF whose first directory's 'next directory' points back at itself."""
    data = bytearray(_encode(Image.fromarray(_photo(8, 8)), "TIFF"))
    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd : ifd + 2])
    data[ifd + 2 + 12 * n : ifd + 6 + 12 * n] = struct.pack("<I", ifd)
    return bytes(data)


def _pil_image(mode: str, h: int, w: int, seed: int = 0) -> Image.Image:
    """An image of ``mode`` (PIL mode name) with real content."""
    rgb = Image.fromarray(_photo(h, w, seed))
    if mode in ("RGB", "L", "CMYK", "1", "LA", "RGBA", "YCbCr"):
        return rgb.convert(mode)
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode == "PT":  # palette with a transparent entry
        im = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        im.info["transparency"] = 0
        return im
    grey = np.asarray(rgb.convert("L"), np.float64)
    if mode == "I;16":
        return Image.fromarray((grey * 257).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((grey * 1000).astype(np.int32))
    if mode == "F":
        return Image.fromarray((grey / 255).astype(np.float32))
    if mode == "F255":
        return Image.fromarray(grey.astype(np.float32))
    if mode == "Fnan":
        a = (grey / 255).astype(np.float32)
        a.flat[:: max(1, a.size // 3)] = np.nan
        a.flat[1 :: max(2, a.size // 2)] = np.inf
        return Image.fromarray(a)
    raise ValueError(mode)


# --- the cases -------------------------------------------------------------------------------


@dataclass
class Files:
    """Where one case's files are; ``image`` and ``mask`` may be malformed or missing."""

    images_dir: Path
    masks_dir: Path
    image: Path
    mask: Path


@dataclass
class Case:
    name: str
    family: str
    build: Callable[[Path], Files]
    deny: tuple[str, ...] = ()  # "image", "mask", "images folder": unreadable (see _denied)


def _layout(root: Path, image_name: str = "a.png", mask_name: str = "a.png") -> Files:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    return Files(root / "images", root / "masks", root / "images" / image_name,
                 root / "masks" / mask_name)  # fmt: skip


def _good_image(path: Path, h: int = H, w: int = W) -> None:
    Image.fromarray(_photo(h, w)).save(path)


def _good_mask(path: Path, h: int = H, w: int = W) -> None:
    Image.fromarray(_mask01(h, w) * 255).save(path)


def _image_case(name: str, family: str, ext: str, data: Callable[[], bytes],
                mask_hw: tuple[int, int] = (H, W)) -> Case:  # fmt: skip
    """The image is the bytes ``data()`` saved as ``a<ext>``; the mask is a good PNG."""

    def build(root: Path) -> Files:
        f = _layout(root, "a" + ext)
        f.image.write_bytes(data())
        _good_mask(f.mask, *mask_hw)
        return f

    return Case(name, family, build)


def _mask_case(name: str, family: str, ext: str, data: Callable[[], bytes],
               image_hw: tuple[int, int] = (H, W)) -> Case:  # fmt: skip
    """The mask is ``data()`` saved as ``a<ext>``; the image is a good PNG."""

    def build(root: Path) -> Files:
        f = _layout(root, "a.png", "a" + ext)
        _good_image(f.image, *image_hw)
        f.mask.write_bytes(data())
        return f

    return Case(name, family, build)


def _cases() -> list[Case]:
    cases: list[Case] = []

    # 1. unusual but valid encodings, at odd sizes; the mask matches the size
    formats = {
        ".png": ("PNG", ["L", "LA", "RGB", "RGBA", "P", "PT", "1", "I;16", "I"]),
        ".jpg": ("JPEG", ["L", "RGB", "CMYK"]),
        ".tif": ("TIFF", ["L", "RGB", "RGBA", "CMYK", "I;16", "F", "F255", "Fnan", "1"]),
        ".bmp": ("BMP", ["RGB", "L", "P", "1"]),
        ".webp": ("WEBP", ["RGB", "RGBA"]),
        ".gif": ("GIF", ["P", "L"]),
    }
    for ext, (fmt, modes) in formats.items():
        for mode in modes:
            try:  # some combinations this PIL cannot write (e.g. 32-bit PNG): left out
                _encode(_pil_image(mode, 2, 2), fmt)
            except (OSError, ValueError, KeyError):
                continue
            for h, w in ((1, 1), (1, 9), (5, 3), (H, W)):
                data = lambda m=mode, h=h, w=w, f=fmt: _encode(_pil_image(m, h, w), f)  # noqa: E731
                cases.append(_image_case(f"{fmt} {mode} {w}x{h}", "encodings", ext, data, (h, w)))
    for h, w in ((2, 3000), (3000, 2)):  # extreme aspect ratios
        data = lambda h=h, w=w: _encode(Image.fromarray(_photo(h, w)), "PNG")  # noqa: E731
        cases.append(_image_case(f"PNG {w}x{h}", "encodings", ".png", data, (h, w)))

    def animated() -> bytes:
        frames = [Image.fromarray(_photo(H, W, s)).convert("P") for s in range(3)]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
        return buf.getvalue()

    def exif(orientation: int | None, raw: bytes | None = None) -> Callable[[], bytes]:
        def make() -> bytes:
            im = Image.fromarray(_photo())
            if raw is not None:
                return _encode(im, "JPEG", exif=raw)
            ex = Image.Exif()
            ex[0x0112] = orientation
            return _encode(im, "JPEG", exif=ex.tobytes())

        return make

    def apng() -> bytes:
        frames = [Image.fromarray(_photo(H, W, s)) for s in range(2)]
        buf = io.BytesIO()
        frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
        return buf.getvalue()

    cases += [
        _image_case("animated GIF", "encodings", ".gif", animated),
        _image_case("animated PNG", "encodings", ".png", apng),
        _image_case("JPEG EXIF orientation 6", "encodings", ".jpg", exif(6), (W, H)),
        _image_case("JPEG EXIF orientation 3", "encodings", ".jpg", exif(3)),
        _image_case("JPEG EXIF orientation 99", "encodings", ".jpg", exif(99)),
        _image_case("JPEG garbage EXIF", "encodings", ".jpg", exif(None, b"Exif\x00\x00MM\x00*junk")),
        _image_case("progressive JPEG", "encodings", ".jpg",
                    lambda: _encode(Image.fromarray(_photo()), "JPEG", progressive=True)),
        _image_case("16-bit RGB PNG", "encodings", ".png", lambda: _png16_rgb()),
        _image_case("JPEG 4:2:0 odd size", "encodings", ".jpg",
                    lambda: _encode(Image.fromarray(_photo(63, 81)), "JPEG"), (63, 81)),
    ]  # fmt: skip

    # 2. truncated, bit-flipped and padded files of every format
    def good(fmt: str) -> bytes:
        return _encode(Image.fromarray(_photo()), fmt)

    for ext, fmt in ((".png", "PNG"), (".jpg", "JPEG"), (".tif", "TIFF"), (".bmp", "BMP"),
                     (".webp", "WEBP"), (".gif", "GIF")):  # fmt: skip
        full = good(fmt)
        for cut in (0, 1, 8, 30, len(full) // 2, len(full) * 9 // 10, len(full) - 1):
            cases.append(
                _image_case(
                    f"{fmt} cut at {cut} bytes", "corrupt", ext, lambda f=full, c=cut: f[:c]
                )
            )
        for seed in range(3):

            def flipped(f: bytes = full, seed: int = seed) -> bytes:
                rng = np.random.default_rng(seed)
                a = bytearray(f)
                for i in rng.integers(len(a) // 8, len(a), 12):
                    a[i] ^= 0xFF
                return bytes(a)

            cases.append(_image_case(f"{fmt} bit flips #{seed}", "corrupt", ext, flipped))
        cases.append(
            _image_case(f"{fmt} + trailing junk", "corrupt", ext, lambda f=full: f + b"junk" * 50)
        )

    # 3. right content, wrong (or odd) extension
    for src, ext in (("PNG", ".jpg"), ("JPEG", ".png"), ("TIFF", ".bmp"), ("GIF", ".png"),
                     ("WEBP", ".tif"), ("BMP", ".webp"), ("PNG", ".PNG"), ("JPEG", ".JpEg"),
                     ("PNG", ".png.jpg"), ("JPEG", ".tiff")):  # fmt: skip
        cases.append(_image_case(f"{src} named *{ext}", "extension", ext, lambda s=src: good(s)))

    # 4. files that are not images at all
    not_images = {
        "text": b"hello, this is not an image\n",
        "json": json.dumps({"image": [1, 2, 3]}).encode(),
        "html": b"<!DOCTYPE html><html><body>404</body></html>",
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
        "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
        "npy": _npy_bytes(),
        "zip": _zip_bytes(),
        "png signature only": b"\x89PNG\r\n\x1a\n",
        "png signature + junk": b"\x89PNG\r\n\x1a\n" + os.urandom(0) + bytes(range(256)) * 4,
        "jpeg SOI + junk": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        "gif header only": b"GIF89a",
        "tiff header only": b"II*\x00",
        "tiff bad IFD offset": b"II*\x00" + struct.pack("<I", 10**9),
        "tiff IFD loop": _tiff_ifd_loop(),
        "bmp header only": b"BM" + bytes(12),
        "HEIC-like box": b"\x00\x00\x00\x18ftypheic" + bytes(100),
        "utf-16 text": "not an image".encode("utf-16"),
        "nul bytes": bytes(4096),
    }
    for label, blob in not_images.items():
        for ext in (".png", ".jpg"):
            cases.append(_image_case(f"{label} as *{ext}", "not-image", ext, lambda b=blob: b))
    for seed in range(4):
        cases.append(
            _image_case(f"random bytes #{seed}", "not-image", ".tif",
                        lambda s=seed: np.random.default_rng(s).bytes(2000))
        )  # fmt: skip

    # 5. headers that claim enormous sizes (decompression bombs)
    bombs = {
        "PNG 100000x100000": (".png", lambda: _png_claiming(100_000, 100_000)),
        "PNG 20000x20000": (".png", lambda: _png_claiming(20_000, 20_000)),
        "PNG 1x2147483647": (".png", lambda: _png_claiming(1, 2**31 - 1)),
        "PNG 2147483647x1": (".png", lambda: _png_claiming(2**31 - 1, 1)),
        "PNG 0x0": (".png", lambda: _png_claiming(0, 0)),
        "PNG grey 15000x15000": (".png", lambda: _png_claiming(15_000, 15_000, 0)),
        "JPEG 65500x65500": (".jpg", lambda: _jpeg_claiming(65_500, 65_500)),
        "JPEG 0x0": (".jpg", lambda: _jpeg_claiming(0, 0)),
        "GIF 65535x65535": (".gif", lambda: _gif_claiming(65_535, 65_535)),
        "BMP 60000x60000": (".bmp", lambda: _bmp_claiming(60_000, 60_000)),
        "BMP -8x-8": (".bmp", lambda: _bmp_claiming(-8, -8)),
        "TIFF 100000x100000": (".tif", lambda: _tiff_claiming(100_000, 100_000)),
        "TIFF 0x0": (".tif", lambda: _tiff_claiming(0, 0)),
    }
    for label, (ext, data) in bombs.items():
        cases.append(_image_case(label, "bomb", ext, data))
        cases.append(_mask_case(f"mask {label}", "bomb", ext, data))

    # 6. masks: stray values, odd encodings, wrong sizes
    m = _mask01()

    def mask_png(arr: np.ndarray, mode: str | None = None) -> Callable[[], bytes]:
        return lambda: _encode(Image.fromarray(arr, mode) if mode else Image.fromarray(arr), "PNG")

    rng = np.random.default_rng(0)
    noisy = (m * 255).astype(np.uint8)
    noisy[rng.random(m.shape) < 0.05] = 128
    stray = m * 255
    stray[3, 3] = 77
    multi = (m * 255).astype(np.uint8)
    multi[:, : W // 3] = 100
    rgb3 = np.zeros((H, W, 3), np.uint8)
    rgb3[m == 1] = (255, 0, 0)
    rgb3[:5] = (0, 255, 0)
    red = np.zeros((H, W, 3), np.uint8)
    red[m == 1] = (200, 0, 0)
    mask_variants = {
        "0/1 index": mask_png(m),
        "0/255": mask_png(m * 255),
        "0/250": mask_png(m * 250),
        "values 0/1/2": mask_png(np.where(np.arange(W) < 10, 2, m).astype(np.uint8)),
        "0/255 + one stray 77": mask_png(stray.astype(np.uint8)),
        "0/255 + 5% grey 128": mask_png(noisy),
        "0/100/255 three labels": mask_png(multi),
        "values 3/7": mask_png((m * 4 + 3).astype(np.uint8)),
        "all background": mask_png(np.zeros((H, W), np.uint8)),
        "all 255": mask_png(np.full((H, W), 255, np.uint8)),
        "all 1": mask_png(np.ones((H, W), np.uint8)),
        "uniform 77": mask_png(np.full((H, W), 77, np.uint8)),
        "16-bit 0/65535": mask_png(m.astype(np.uint16) * 65535),
        "16-bit 0/1000": mask_png(m.astype(np.uint16) * 1000),
        "red hand RGB": mask_png(red),
        "three colours RGB": mask_png(rgb3),
        "RGBA alpha-only": lambda: _encode(_alpha_mask(m), "PNG"),
        "1-bit": lambda: _encode(Image.fromarray(m.astype(bool)), "PNG"),
        "palette 5 colours": lambda: _encode(_palette_mask(m, 5), "PNG"),
        "palette 2 colours": lambda: _encode(_palette_mask(m, 2), "PNG"),
        "JPEG 0/255 noisy": lambda: _encode(Image.fromarray(m * 255), "JPEG", quality=60),
        "CMYK JPEG": lambda: _encode(Image.fromarray(m * 255).convert("CMYK"), "JPEG"),
        "float TIFF 0/1": lambda: _encode(Image.fromarray(m.astype(np.float32)), "TIFF"),
        "float TIFF 0.5s": lambda: _encode(Image.fromarray((m * 0.5 + 0.25).astype(np.float32)), "TIFF"),
        "float TIFF NaN": lambda: _encode(Image.fromarray(_with_nan(m)), "TIFF"),
        "float TIFF negative": lambda: _encode(Image.fromarray(m.astype(np.float32) - 1), "TIFF"),
        "int32 TIFF 0/70000": lambda: _encode(Image.fromarray(m.astype(np.int32) * 70000),
                                               "TIFF"),
        "animated GIF": lambda: _animated_mask(m),
        "half size, same aspect": mask_png(_mask01(H // 2, W // 2) * 255),
        "double size": mask_png(_mask01(2 * H, 2 * W) * 255),
        "transposed size": mask_png(_mask01(W, H) * 255),
        "1x1": mask_png(np.full((1, 1), 255, np.uint8)),
        "wrong aspect 64x64": mask_png(_mask01(H, H) * 255),
        "3-channel 0/1": mask_png(np.repeat(m[..., None], 3, 2)),
        "LA mask": lambda: _encode(Image.fromarray(m * 255).convert("LA"), "PNG"),
    }  # fmt: skip
    for label, data in mask_variants.items():
        ext = ".jpg" if "JPEG" in label else ".tif" if "TIFF" in label else (
            ".gif" if "GIF" in label else ".png")  # fmt: skip
        cases.append(_mask_case(f"mask {label}", "masks", ext, data))
    for label, cut in (("zero-byte", 0), ("cut at 40 bytes", 40), ("cut in half", None)):
        full = _encode(Image.fromarray(m * 255), "PNG")
        c = len(full) // 2 if cut is None else cut
        cases.append(_mask_case(f"mask {label}", "masks", ".png", lambda f=full, c=c: f[:c]))
    cases.append(_mask_case("mask is text", "masks", ".png", lambda: b"not a mask"))

    # 7. the file system: links, odd names, permissions, folders
    cases += _filesystem_cases()
    return cases


def _png16_rgb() -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one; built by hand)."""
    a = (_photo().astype(np.uint16) * 257).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in a)
    ihdr = struct.pack(">IIBBBBB", W, H, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, _photo())
    return buf.getvalue()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.png", _encode(Image.fromarray(_photo()), "PNG"))
    return buf.getvalue()


def _alpha_mask(m: np.ndarray) -> Image.Image:
    rgba = np.zeros((*m.shape, 4), np.uint8)
    rgba[..., 3] = m * 255
    return Image.fromarray(rgba)


def _palette_mask(m: np.ndarray, colours: int) -> Image.Image:
    idx = m.copy()
    if colours > 2:
        idx[: H // 4] = np.arange(W)[None, :] % colours
    im = Image.fromarray(idx.astype(np.uint8), "P")
    pal = [0, 0, 0, 255, 255, 255] + [30 * i % 256 for i in range(3 * 254)]
    im.putpalette(pal)
    return im


def _with_nan(m: np.ndarray) -> np.ndarray:
    a = m.astype(np.float32)
    a[0, :5] = np.nan
    return a


def _animated_mask(m: np.ndarray) -> bytes:
    frames = [Image.fromarray(m * 255).convert("P"), Image.fromarray((1 - m) * 255).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _filesystem_cases() -> list[Case]:
    cases: list[Case] = []

    def named(image_name: str, mask_name: str | None = None) -> Callable[[Path], Files]:
        def build(root: Path) -> Files:
            f = _layout(root, image_name, mask_name or Path(image_name).stem + ".png")
            _good_image(f.image)
            _good_mask(f.mask)
            return f

        return build

    for name in ("my photo 1.png", "صورة ١.png", "naïve 写真.jpg", "emoji 🤟.png", "tab\there.png",
                 "quote'\"s.png", "x" * 200 + ".png", "-dash.png", "semi;colon&amp.png",
                 "newline\nname.png", "back\\slash.png", "ends with space .png"):  # fmt: skip
        cases.append(Case(f"name {name!r:.40}", "filesystem", named(name)))

    def links(kind: str) -> Callable[[Path], Files]:
        def build(root: Path) -> Files:
            f = _layout(root, "a.png")
            _good_mask(f.mask)
            if kind == "loop":
                os.symlink(f.images_dir / "b.png", f.image)
                os.symlink(f.image, f.images_dir / "b.png")
            elif kind == "self":
                os.symlink(f.image, f.image)
            elif kind == "dangling":
                os.symlink(root / "nowhere.png", f.image)
            elif kind == "to folder":
                (root / "elsewhere").mkdir()
                os.symlink(root / "elsewhere", f.image)
            elif kind == "good link":
                _good_image(root / "real.png")
                os.symlink(root / "real.png", f.image)
            elif kind == "dir loops":  # a file plus two links back to the folder itself
                _good_image(f.image)
                os.symlink(f.images_dir, f.images_dir / "up1")
                os.symlink(f.images_dir, f.images_dir / "up2")
            elif kind == "mask loop":
                _good_image(f.image)
                f.mask.unlink()
                os.symlink(f.mask, f.mask)
            return f

        return build

    for kind in ("loop", "self", "dangling", "to folder", "good link", "dir loops", "mask loop"):
        cases.append(Case(f"symlink {kind}", "filesystem", links(kind)))

    def folder(kind: str) -> Callable[[Path], Files]:
        def build(root: Path) -> Files:
            f = _layout(root, "a.png")
            if kind == "folder named a.png":
                f.image.mkdir()
                _good_mask(f.mask)
            elif kind == "empty images folder":
                _good_mask(f.mask)
            elif kind == "empty masks folder":
                _good_image(f.image)
            elif kind == "only hidden files":
                _good_image(f.images_dir / ".a.png")
                _good_mask(f.mask)
            elif kind == "images folder is a file":
                f.images_dir.rmdir()
                f.images_dir.write_bytes(b"x")
                _good_mask(f.mask)
            elif kind == "missing folders":
                f.images_dir.rmdir()
                f.masks_dir.rmdir()
            elif kind == "orphans":
                _good_image(f.image)
                _good_image(f.images_dir / "b.png")
                _good_mask(f.masks_dir / "c.png")
            elif kind == "same stem twice":
                _good_image(f.image)
                Image.fromarray(_photo()).save(f.images_dir / "a.jpg")
                _good_mask(f.mask)
            elif kind == "case-insensitive twins":
                _good_image(f.image)
                _good_image(f.images_dir / "A.PNG")
                _good_mask(f.mask)
            elif kind == "images and masks in one folder":
                f = Files(f.images_dir, f.images_dir, f.image, f.images_dir / "a_mask.png")
                _good_image(f.image)
                _good_mask(f.mask)
            elif kind == "pair by order":
                f = Files(f.images_dir, f.masks_dir, f.images_dir / "img1.png",
                          f.masks_dir / "label_one.png")  # fmt: skip
                f.image.unlink(missing_ok=True)
                _good_image(f.image)
                _good_mask(f.mask)
            elif kind == "non-images only":
                (f.images_dir / "notes.txt").write_text("x")
                _good_mask(f.mask)
            return f

        return build

    for kind in ("folder named a.png", "empty images folder", "empty masks folder",
                 "only hidden files", "images folder is a file", "missing folders", "orphans",
                 "same stem twice", "case-insensitive twins", "images and masks in one folder",
                 "pair by order", "non-images only"):  # fmt: skip
        cases.append(Case(kind, "filesystem", folder(kind)))

    # Unreadable files and folders. Root reads any file whatever its mode, so besides
    # chmod 000 the open itself is made to fail with EACCES (see _denied).
    def unreadable(target: str) -> Callable[[Path], Files]:
        def build(root: Path) -> Files:
            f = _layout(root, "a.png")
            _good_image(f.image)
            _good_mask(f.mask)
            path = {"image": f.image, "mask": f.mask, "images folder": f.images_dir}[target]
            path.chmod(0)
            return f

        return build

    for target in ("image", "mask", "images folder"):
        cases.append(Case(f"unreadable {target}", "filesystem", unreadable(target), (target,)))
    return cases


CASES = _cases()


@contextlib.contextmanager
def _denied(case: Case, files: Files) -> Iterator[None]:
    """Make reading the case's ``deny`` paths fail with EACCES, as chmod 000 does for a
    non-root user (when not root, chmod 000 alone already does it)."""
    if not case.deny or not _IS_ROOT:
        yield
        return
    import builtins

    where = {"image": files.image, "mask": files.mask, "images folder": files.images_dir}
    blocked = {os.path.abspath(where[d]) for d in case.deny if d != "images folder"}
    dirs = {os.path.abspath(where[d]) for d in case.deny if d == "images folder"}
    real_open, real_scandir, real_listdir = builtins.open, os.scandir, os.listdir

    def deny(path: object) -> None:
        p = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if p is not None and os.path.abspath(p) in blocked:
            raise PermissionError(13, "Permission denied", p)

    def fake_open(file, *a, **k):
        deny(file)
        return real_open(file, *a, **k)

    def fake_scandir(path="."):
        if os.path.abspath(os.fspath(path)) in dirs:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    def fake_listdir(path="."):
        if os.path.abspath(os.fspath(path)) in dirs:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_listdir(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "open", fake_open)
        mp.setattr(io, "open", fake_open)
        mp.setattr(os, "scandir", fake_scandir)
        mp.setattr(os, "listdir", fake_listdir)
        yield


# --- running an operation on a case ------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _check_cli(code: int, err: str) -> str:
    """'ok' or 'error' for a CLI run that kept the contract; raises AssertionError if not."""
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if code == 0:
        assert not lines, err
        return "ok"
    assert code == 2, f"exit status {code}"
    assert len(lines) == 1, f"expected one 'error:' line, got: {err[-1000:]!r}"
    return "error"


def _op_find_pairs(c: Case, f: Files, tmp: Path, model: Path) -> str:
    pairs = find_pairs(f.images_dir, f.masks_dir)
    assert pairs and all(i.is_file() and m.is_file() for i, m in pairs)
    return "ok"


def _op_read_image(c: Case, f: Files, tmp: Path, model: Path) -> str:
    a = read_image(f.image)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 1
    return "ok"


def _op_read_mask(c: Case, f: Files, tmp: Path, model: Path) -> str:
    m = read_mask(f.mask)
    assert m.dtype == np.uint8 and m.ndim == 2 and set(np.unique(m)) <= {0, 1}
    return "ok"


def _op_load_pair(c: Case, f: Files, tmp: Path, model: Path) -> str:
    image, mask = load_pair(f.image, f.mask)
    assert image.shape[:2] == mask.shape and set(np.unique(mask)) <= {0, 1}
    return "ok"


def _op_dataset(c: Case, f: Files, tmp: Path, model: Path) -> str:
    x, y = SegDataset([(f.image, f.mask)], (32, 48))[0]
    assert x.shape == (3, 32, 48) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert y.shape == (32, 48) and set(y.unique().tolist()) <= {0, 1, 255}
    return "ok"


def _op_predict(c: Case, f: Files, tmp: Path, model: Path) -> str:
    out = tmp / "pred"
    code, _, err = _cli(["predict", str(f.image), "--model", str(model), "--out", str(out),
                         "--device", "cpu"])  # fmt: skip
    outcome = _check_cli(code, err)
    if outcome == "ok":
        (mask_file,) = out.glob("*_mask.png")
        (overlay_file,) = out.glob("*_overlay.jpg")
        with Image.open(mask_file) as im:
            assert im.size[::-1] == read_image(f.image).shape[:2]
            assert set(np.unique(np.asarray(im))) <= {0, 255}
        assert overlay_file.stat().st_size > 0
    assert not [p for p in out.glob(".*")], "temporary files left behind"
    return outcome


def _op_predict_folder(c: Case, f: Files, tmp: Path, model: Path) -> str:
    out = tmp / "pred-folder"
    code, _, err = _cli(["predict", str(f.images_dir), "--model", str(model), "--out", str(out),
                         "--device", "cpu", "--no-overlay"])  # fmt: skip
    outcome = _check_cli(code, err)
    if outcome == "ok":
        assert list(out.glob("*_mask.png"))
    return outcome


def _op_predict_glob(c: Case, f: Files, tmp: Path, model: Path) -> str:
    out = tmp / "pred-glob"
    code, _, err = _cli(["predict", f"{f.images_dir}/**/*", "--model", str(model), "--out",
                         str(out), "--device", "cpu", "--no-overlay"])  # fmt: skip
    return _check_cli(code, err)


def _op_evaluate(c: Case, f: Files, tmp: Path, model: Path) -> str:
    """``evaluate --model``; ``--out`` (metrics.json, per-image.csv, confusion.png) for the
    file-system cases, whose odd names end up in per-image.csv (the figure is slow to draw,
    and the others add nothing to it)."""
    out = tmp / "eval"
    write = c.family == "filesystem"
    code, stdout, err = _cli(["evaluate", "--model", str(model), "--images", str(f.images_dir),
                              "--masks", str(f.masks_dir), "--device", "cpu"]
                             + (["--out", str(out)] if write else []))  # fmt: skip
    outcome = _check_cli(code, err)
    if outcome == "ok":
        assert "GlobalAccuracy" in stdout
    if outcome == "ok" and write:
        metrics = json.loads((out / "metrics.json").read_text())
        assert 0.0 <= metrics["dataset"]["GlobalAccuracy"] <= 1.0
        with open(out / "per-image.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["image"] for r in rows] == [f.image.name]  # odd names survive the CSV
    return outcome


def _op_evaluate_masks(c: Case, f: Files, tmp: Path, model: Path) -> str:
    """``evaluate --pred-masks``: the case's masks scored against themselves."""
    code, stdout, err = _cli(["evaluate", "--pred-masks", str(f.masks_dir), "--masks",
                              str(f.masks_dir)])  # fmt: skip
    outcome = _check_cli(code, err)
    if outcome == "ok":
        assert "GlobalAccuracy" in stdout
    return outcome


OPERATIONS: dict[str, Callable[[Case, Files, Path, Path], str]] = {
    "find_pairs": _op_find_pairs,
    "read_image": _op_read_image,
    "read_mask": _op_read_mask,
    "load_pair": _op_load_pair,
    "SegDataset[0]": _op_dataset,
    "cli predict FILE": _op_predict,
    "cli predict FOLDER": _op_predict_folder,
    "cli predict GLOB/**/*": _op_predict_glob,
    "cli evaluate --model": _op_evaluate,
    "cli evaluate --pred-masks": _op_evaluate_masks,
}
TOTALS: dict[str, Counter] = {}


def _run_case(op: str, case: Case, files: Files, tmp: Path, model: Path) -> str:
    """Run one operation on one case; return 'ok' or 'error', or raise AssertionError."""
    handler = _Records()
    logging.getLogger().addHandler(handler)
    try:
        with time_guard(_GUARD_S), _denied(case, files):
            try:
                outcome = OPERATIONS[op](case, files, tmp, model)
            except HandsegError as exc:
                msg = str(exc)
                assert msg and "\n" not in msg.replace(str(files.image), "").replace(
                    str(files.mask), ""
                ), f"multi-line message: {msg!r}"
                assert "Traceback" not in msg
                outcome = "error"
    finally:
        logging.getLogger().removeHandler(handler)
    for r in handler.records:
        assert r.exc_info is None, f"logged a traceback: {r.getMessage()}"
    return outcome


# --- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_model(tmp_path_factory) -> Path:
    """A tiny untrained model file (network input 32 x 40)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fuzz-model") / "model.pt"
    save_model_file(path, HandSegNet(), classes=("background", "hand"),
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                    input_size=(32, 40))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def fuzz_cases(tmp_path_factory) -> list[tuple[Case, Files]]:
    root = tmp_path_factory.mktemp("fuzz")
    return [(c, c.build(root / f"{i:03d}")) for i, c in enumerate(CASES)]


def _stub_network(batch: np.ndarray) -> np.ndarray:
    """(B, 3, h, w) normalised images -> (B, 2, h, w) logits: hand where brighter than the
    image's mean. Stands in for the network, which only ever sees a normalised tensor."""
    grey = batch.mean(1)
    hand = grey - grey.mean(axis=(1, 2), keepdims=True)
    return np.stack([np.zeros_like(hand), hand], 1).astype(np.float32)


def _load_once(monkeypatch: pytest.MonkeyPatch, *, stub: bool) -> None:
    """Make ``handseg.infer.predictor.load_model`` read each model file once per test (the CLI
    calls it on every run), optionally with :func:`_stub_network` as the network."""
    cache: dict[tuple, handseg.infer.predictor.Predictor] = {}
    real = handseg.infer.predictor.load_model

    def load_model(path, **kw):
        key = (str(path), tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = real(path, **kw)
            if stub:
                cache[key].backend = _stub_network
        return cache[key]

    # every place that loads a model by name: the pipeline loaders (load_segmenter, and
    # load_scorer for evaluate / compare) call it
    monkeypatch.setattr(handseg.infer.predictor, "load_model", load_model)
    monkeypatch.setattr(handseg.infer.pipeline, "load_model", load_model)


def _run_all(op: str, fuzz_cases, model: Path, tmp_path: Path) -> Counter:
    broken: list[str] = []
    counts: Counter = Counter()
    for i, (case, files) in enumerate(fuzz_cases):
        try:
            counts[_run_case(op, case, files, tmp_path / f"{i:03d}", model)] += 1
        except Exception as exc:  # noqa: BLE001 - any escape (AssertionError too) breaks it
            broken.append(f"{case.name}: {type(exc).__name__}: {str(exc)[:300]}")
    TOTALS[op] = counts
    print(f"\nfuzz {op}: {len(fuzz_cases)} cases, {counts['ok']} succeeded, "
          f"{counts['error']} clean errors, {len(broken)} broke the contract")  # fmt: skip
    assert not broken, f"{len(broken)} case(s) broke the contract:\n" + "\n".join(broken)
    assert counts["ok"] > 0 and counts["error"] > 0  # the cases exercise both outcomes
    return counts


def test_at_least_200_cases_in_every_family():
    families = Counter(c.family for c in CASES)
    assert len(CASES) >= 200, len(CASES)
    assert set(families) == {"encodings", "corrupt", "extension", "not-image", "bomb", "masks",
                             "filesystem"}  # fmt: skip
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"


@pytest.mark.parametrize("op", list(OPERATIONS))
def test_every_case_succeeds_or_fails_cleanly(op, fuzz_cases, fuzz_model, tmp_path, monkeypatch):
    """All cases through one operation; the CLI runs with a stand-in network (fast), the
    real one runs in test_well_formed_cases_succeed and in the slow test below."""
    _load_once(monkeypatch, stub=True)
    _run_all(op, fuzz_cases, fuzz_model, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.startswith("cli")])
def test_every_case_with_the_real_network(op, fuzz_cases, fuzz_model, tmp_path, monkeypatch):
    _load_once(monkeypatch, stub=False)
    _run_all(op, fuzz_cases, fuzz_model, tmp_path)


def test_well_formed_cases_succeed(fuzz_cases, fuzz_model, tmp_path, monkeypatch):
    """The harness could pass by rejecting everything: these cases must succeed, with the
    real network."""
    _load_once(monkeypatch, stub=False)
    must_work = {"PNG RGB 80x64", "JPEG CMYK 80x64", "TIFF I;16 80x64", "TIFF F 80x64",
                 "animated PNG", "name 'صورة ١.png'", "name 'my photo 1.png'",
                 "symlink good link", "mask 0/250", "mask half size, same aspect",
                 "mask 16-bit 0/65535", "PNG named *.jpg", "JPEG named *.png", "PNG RGB 1x1",
                 "pair by order", "images and masks in one folder"}  # fmt: skip
    by_name = {c.name: (c, f) for c, f in fuzz_cases}
    assert must_work <= set(by_name)
    for name in sorted(must_work):
        case, files = by_name[name]
        for op in ("find_pairs", "load_pair", "cli evaluate --model"):
            assert _run_case(op, case, files, tmp_path / "w", fuzz_model) == "ok", (name, op)


def test_bad_inputs_are_named_in_the_error(fuzz_cases, fuzz_model, tmp_path):
    """Errors about one file name that file (so a user with 30 000 files can find it)."""
    by_name = {c.name: f for c, f in fuzz_cases}
    for name in ("PNG cut at 30 bytes", "text as *.png", "PNG 100000x100000", "zip as *.jpg"):
        with pytest.raises(HandsegError) as info:
            read_image(by_name[name].image)
        assert str(by_name[name].image) in str(info.value)
    with pytest.raises(HandsegError, match="too large to decode safely"):
        read_image(by_name["PNG 100000x100000"].image)
    with pytest.raises(HandsegError, match="aspect"):
        load_pair(by_name["mask wrong aspect 64x64"].image, by_name["mask wrong aspect 64x64"].mask)
