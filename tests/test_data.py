"""Contracts of handseg.data: pairing, decoding, fitting, split, class counts, Dataset."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from handseg.core.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, SUBSETS
from handseg.core.errors import HandsegError
from handseg.core.imaging import fit_mask_to_image, list_images, natural_key, read_image, read_mask
from handseg.data.dataset import SegDataset, label_counts, median_frequency_weights
from handseg.data.pairs import MASK_SUFFIXES, find_pairs, load_pair
from handseg.data.split import load_split, make_split, save_split

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "arsl-bg11"


# --- helpers -----------------------------------------------------------------------------


def hand_shape(h: int = 48, w: int = 64, scale: int = 1) -> np.ndarray:
    """(h*scale, w*scale) bool: a palm (ellipse) with a finger (bar), about 20 % of pixels."""
    im = Image.new("L", (w * scale, h * scale), 0)
    d = ImageDraw.Draw(im)
    s = scale
    d.ellipse([0.25 * w * s, 0.35 * h * s, 0.65 * w * s, 0.9 * h * s], fill=255)
    d.rectangle([0.5 * w * s, 0.1 * h * s, 0.6 * w * s, 0.5 * h * s], fill=255)
    return np.asarray(im) > 0


def write_image(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def write_mask(path: Path, h: int = 48, w: int = 64) -> Path:
    Image.fromarray(hand_shape(h, w).astype(np.uint8) * 255).save(path)
    return path


def make_folders(tmp_path: Path, image_names, mask_names) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for k, name in enumerate(image_names):
        write_image(images / name, seed=k)
    for name in mask_names:
        write_mask(masks / name)
    return images, masks


def names(pairs) -> list[tuple[str, str]]:
    return [(i.name, m.name) for i, m in pairs]


# --- discovery ---------------------------------------------------------------------------


def test_natural_key_orders_numbers_by_value():
    assert sorted(["img10", "img2", "img1", "Img3"], key=natural_key) == [
        "img1",
        "img2",
        "Img3",
        "img10",
    ]


def test_pairs_by_stem(tmp_path):
    images, masks = make_folders(tmp_path, ["b.png", "a.jpg", "c.bmp"], ["a.png", "c.png", "b.png"])
    pairs = find_pairs(images, masks)
    assert pairs.rule == "stem"
    assert names(pairs) == [("a.jpg", "a.png"), ("b.png", "b.png"), ("c.bmp", "c.png")]


@pytest.mark.parametrize("suffix", MASK_SUFFIXES)
@pytest.mark.parametrize(("image_ext", "mask_ext"), [(".jpg", ".png"), (".tif", ".bmp")])
def test_pairs_by_suffix(tmp_path, suffix, image_ext, mask_ext):
    image_names = [f"hand{k}{image_ext}" for k in (1, 2, 10)]
    # upper-case suffix on one mask: suffixes match case-insensitively
    mask_names = [f"hand1{suffix.upper()}{mask_ext}"] + [
        f"hand{k}{suffix}{mask_ext}" for k in (2, 10)
    ]
    images, masks = make_folders(tmp_path, image_names, mask_names)
    pairs = find_pairs(images, masks)
    assert pairs.rule == "stem"
    assert names(pairs) == list(zip(image_names, mask_names))


def test_pairs_with_the_suffix_on_the_image_side_or_both(tmp_path):
    # "a_gt" and "b_mask" images pair with "a"/"b_seg" masks: the suffix may sit on either
    # side; an exact stem still wins over a suffix-stripped one ("c_mask" <-> "c_mask")
    images, masks = make_folders(
        tmp_path, ["a_gt.png", "b_mask.jpg", "c_mask.png"], ["a.png", "b_seg.png", "c_mask.png"]
    )
    pairs = find_pairs(images, masks)
    assert pairs.rule == "stem"
    assert names(pairs) == [("a_gt.png", "a.png"), ("b_mask.jpg", "b_seg.png"),
                            ("c_mask.png", "c_mask.png")]  # fmt: skip


def test_pairs_by_natural_order_when_no_names_match(tmp_path, caplog):
    image_names = [f"img{k}.png" for k in range(1, 13)]
    mask_names = [f"label_{k}_x.png" for k in range(12, 0, -1)]  # created in reverse order
    images, masks = make_folders(tmp_path, image_names, mask_names)
    with caplog.at_level(logging.INFO, logger="handseg"):
        pairs = find_pairs(images, masks)
    assert pairs.rule == "natural-order"
    assert names(pairs) == [(f"img{k}.png", f"label_{k}_x.png") for k in range(1, 13)]
    assert names(pairs)[1][0] == "img2.png"  # img2 before img10
    assert "natural sort order" in caplog.text


def test_orphans_are_named(tmp_path):
    images, masks = make_folders(tmp_path, ["a.png", "b.png", "c.png"], ["a.png", "b.png", "x.png"])
    with pytest.raises(HandsegError) as err:
        find_pairs(images, masks)
    msg = str(err.value)
    assert "c.png" in msg and "x.png" in msg and "\n" not in msg


def test_many_orphans_first_few_and_count(tmp_path):
    image_names = ["a.png"] + [f"extra{k}.png" for k in range(8)]
    images, masks = make_folders(tmp_path, image_names, ["a.png"])
    with pytest.raises(HandsegError, match=r"8 image\(s\) without a mask: extra0.png.*8 in all"):
        find_pairs(images, masks)


def test_unequal_counts_without_matching_names(tmp_path):
    images, masks = make_folders(tmp_path, ["p1.png", "p2.png", "p3.png"], ["m1.png", "m2.png"])
    with pytest.raises(HandsegError, match=r"3 images .* 2 masks"):
        find_pairs(images, masks)


def test_non_image_files_are_skipped_with_a_warning(tmp_path, caplog):
    images, masks = make_folders(tmp_path, ["a.png", "b.png"], ["a_mask.png", "b_mask.png"])
    (images / "notes.txt").write_text("hi")
    (images / "Thumbs.db").write_bytes(b"\0")
    (images / ".DS_Store").write_bytes(b"\0")
    with caplog.at_level(logging.WARNING, logger="handseg"):
        pairs = find_pairs(images, masks)
    assert len(pairs) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "notes.txt" in warnings[0].getMessage() and "Thumbs.db" in warnings[0].getMessage()
    assert ".DS_Store" not in warnings[0].getMessage()


def test_missing_empty_and_not_a_folder(tmp_path):
    with pytest.raises(HandsegError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HandsegError, match=r"no images .*empty"):
        list_images(tmp_path / "empty")
    f = write_image(tmp_path / "file.png")
    with pytest.raises(HandsegError, match="not a folder"):
        list_images(f)
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "readme.md").write_text("x")
    with pytest.raises(HandsegError, match="no images"):
        list_images(only_text, what="masks")


# --- reading images ----------------------------------------------------------------------


def test_read_image_modes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)

    rgba = np.dstack([rgb, np.full((6, 8), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)

    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)

    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    pal.putpalette([10, 20, 30, 200, 100, 50])
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_image(tmp_path / "pal.png")[0, 1], [200, 100, 50])

    g16 = np.array([[0, 65535], [32896, 257]], np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [128, 1]])

    Image.fromarray(rgb).save(tmp_path / "rgb.webp", lossless=True)
    Image.fromarray(rgb).save(tmp_path / "rgb.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.webp"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif"), rgb)


def _rotated_jpeg(path: Path, displayed: np.ndarray, orientation: int = 6) -> None:
    """Store ``displayed`` (H, W, 3) so that EXIF orientation 6 (rotate 90 CW) shows it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = np.rot90(displayed, k=1)  # counter-clockwise; the viewer turns it back
    Image.fromarray(np.ascontiguousarray(stored)).save(path, quality=95, exif=exif)


def test_exif_orientation_applied_unless_disabled(tmp_path):
    displayed = np.zeros((40, 20, 3), np.uint8)
    displayed[:20] = 220  # top half bright
    _rotated_jpeg(tmp_path / "rot.jpg", displayed)
    out = read_image(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)
    assert out[:18].mean() > 200 and out[22:].mean() < 20
    raw = read_image(tmp_path / "rot.jpg", exif=False)
    assert raw.shape == (20, 40, 3)


def test_bad_image_files_name_the_file(tmp_path, monkeypatch):
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    for name in ("truncated.jpg", "empty.png", "text.png"):
        with pytest.raises(HandsegError, match=re.escape(name)) as err:
            read_image(tmp_path / name)
        assert "\n" not in str(err.value)
    with pytest.raises(HandsegError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    # a decompression bomb is an error, not a warning or a crash
    write_image(tmp_path / "big.png", 32, 32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(HandsegError, match=r"big.png.*too large"):
        read_image(tmp_path / "big.png")


# --- reading masks -----------------------------------------------------------------------

TRUTH = hand_shape()  # (48, 64) bool


def _save(arr: np.ndarray, path: Path, mode: str | None = None, **kw) -> Path:
    Image.fromarray(arr, mode).save(path, **kw) if mode else Image.fromarray(arr).save(path, **kw)
    return path


def _palette_png(path: Path, idx: np.ndarray, palette: list[int]) -> Path:
    im = Image.fromarray(idx.astype(np.uint8), "P")
    im.putpalette(palette)
    im.save(path)
    return path


def _grey3(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[:, :, None], 3, axis=2)


EXACT_ENCODINGS = {
    "index01.png": lambda p: _save(TRUTH.astype(np.uint8), p),
    "0-255.png": lambda p: _save(TRUTH.astype(np.uint8) * 255, p),
    "0-250-rgb.png": lambda p: _save(_grey3(TRUTH.astype(np.uint8) * 250), p),
    "white-rgb.png": lambda p: _save(_grey3(TRUTH.astype(np.uint8) * 255), p),
    "white-rgba.png": lambda p: _save(
        np.dstack([_grey3(TRUTH.astype(np.uint8) * 255), np.full(TRUTH.shape, 255, np.uint8)]), p
    ),
    "alpha-rgba.png": lambda p: _save(  # opaque hand on a transparent layer
        np.dstack([np.zeros((*TRUTH.shape, 3), np.uint8), TRUTH.astype(np.uint8) * 255]), p
    ),
    "red-rgb.png": lambda p: _save(
        np.dstack([TRUTH * 255, np.zeros_like(TRUTH), np.zeros_like(TRUTH)]).astype(np.uint8), p
    ),
    "palette-bw.png": lambda p: _palette_png(p, TRUTH, [0, 0, 0, 255, 255, 255]),
    "palette-voc.png": lambda p: _palette_png(p, TRUTH, [0, 0, 0, 128, 0, 0]),
    "palette-dark.png": lambda p: _palette_png(p, TRUTH, [0, 0, 0, 0, 0, 60]),  # by index
    "onebit.png": lambda p: _save(TRUTH, p),  # bool array -> mode "1"
    "index01-16bit.png": lambda p: _save(TRUTH.astype(np.uint16), p),
    "0-65535-16bit.png": lambda p: _save(TRUTH.astype(np.uint16) * 65535, p),
    "0-255.bmp": lambda p: _save(TRUTH.astype(np.uint8) * 255, p),
    "0-255.tif": lambda p: _save(TRUTH.astype(np.uint8) * 255, p),
}


@pytest.mark.parametrize("name", sorted(EXACT_ENCODINGS))
def test_mask_encodings_decode_exactly(tmp_path, name):
    path = EXACT_ENCODINGS[name](tmp_path / name)
    if name == "onebit.png":
        assert Image.open(path).mode == "1"
    if "16bit" in name:
        assert Image.open(path).mode.startswith("I")
    mask = read_mask(path)
    assert mask.dtype == np.uint8 and mask.shape == TRUTH.shape
    np.testing.assert_array_equal(mask, TRUTH.astype(np.uint8))


def test_anti_aliased_mask(tmp_path):
    hi = hand_shape(scale=4).astype(np.uint8) * 255
    aa = np.asarray(Image.fromarray(hi).resize((64, 48), Image.Resampling.BOX))
    grey_levels = np.unique(aa[(aa > 0) & (aa < 255)])
    assert grey_levels.size > 5  # the test mask really has anti-aliased edges
    mask = read_mask(_save(aa, tmp_path / "aa.png"))
    np.testing.assert_array_equal(mask, (aa >= 128).astype(np.uint8))
    iou = (mask.astype(bool) & TRUTH).sum() / (mask.astype(bool) | TRUTH).sum()
    assert iou > 0.9


@pytest.mark.parametrize("quality", [30, 75])
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_noise_mask(tmp_path, quality, channels):
    path = tmp_path / "mask.jpg"
    grey = TRUTH.astype(np.uint8) * 255
    _save(grey if channels == 1 else _grey3(grey), path, quality=quality)
    assert np.unique(np.asarray(Image.open(path))).size > 10  # really noisy
    mask = read_mask(path)
    assert set(np.unique(mask)) <= {0, 1}
    assert (mask != TRUTH).mean() < 0.01


def _label_regions(levels: list[int], dtype=np.uint8) -> np.ndarray:
    """(48, 64): vertical bands holding each level in turn."""
    a = np.zeros((48, 64), dtype)
    for k, v in enumerate(levels):
        a[:, k * 64 // len(levels) : (k + 1) * 64 // len(levels)] = v
    return a


@pytest.mark.parametrize(
    ("name", "array", "shown"),
    [
        ("labels.png", _label_regions([0, 60, 120, 180]), "0, 60, 120, 180"),
        ("classes012.png", _label_regions([0, 1, 2]), "0, 1, 2"),
        ("dim.png", _label_regions([0, 100]), "0, 100"),
        ("labels-with-void.png", _label_regions([0, 1, 2, 255]), "0, 1, 2, 255"),
        ("multi16.png", _label_regions([0, 1000, 2000, 3000], np.uint16), "0, 1000, 2000, 3000"),
        (
            "colours.png",
            np.stack([_label_regions([0, 255, 0, 0]), _label_regions([0, 0, 255, 0]),
                      _label_regions([0, 0, 0, 255])], axis=-1),
            "(0,0,0), (0,0,255), (0,255,0), (255,0,0)",
        ),
    ],
)  # fmt: skip
def test_unknown_mask_encoding_names_file_and_values(tmp_path, name, array, shown):
    path = _save(array, tmp_path / name)
    with pytest.raises(HandsegError) as err:
        read_mask(path)
    msg = str(err.value)
    assert name in msg and shown in msg and "--hand-value" in msg and "\n" not in msg


def test_hand_value_selects_one_label(tmp_path):
    labels = _label_regions([0, 60, 120, 180])
    path = _save(labels, tmp_path / "labels.png")
    for value in (120, "120"):
        np.testing.assert_array_equal(read_mask(path, hand_value=value), labels == 120)
    colours = np.zeros((48, 64, 3), np.uint8)
    colours[:, 10:20] = (255, 0, 0)
    colours[:, 30:40] = (0, 255, 0)
    colours[:, 50:60] = (0, 0, 255)
    cpath = _save(colours, tmp_path / "colours.png")
    for value in ((0, 255, 0), "0,255,0"):
        got = read_mask(cpath, hand_value=value)
        assert got.sum() == 48 * 10 and got[:, 30:40].all()
    pal = _palette_png(
        tmp_path / "voc.png", _label_regions([0, 1, 2]), [0, 0, 0, 128, 0, 0, 0, 128, 0]
    )
    np.testing.assert_array_equal(read_mask(pal, hand_value=2), _label_regions([0, 1, 2]) == 2)
    with pytest.raises(HandsegError, match="not a number"):
        read_mask(path, hand_value="hand")


# --- fitting masks to images -------------------------------------------------------------


def test_mask_960x720_resized_onto_1280x960_image(tmp_path):
    Image.new("RGB", (1280, 960), (90, 90, 90)).save(tmp_path / "photo.jpg")
    small = np.zeros((720, 960), np.uint8)
    small[:, :480] = 250  # left half hand
    small[100:200, 600:700] = 250  # a square block
    _save(_grey3(small), tmp_path / "photo_mask.png")
    image, mask = load_pair(tmp_path / "photo.jpg", tmp_path / "photo_mask.png")
    assert image.shape == (960, 1280, 3) and mask.shape == (960, 1280)
    assert set(np.unique(mask)) == {0, 1}  # nearest: no interpolated values
    assert mask[:, :640].all() and not mask[:133, 640:800].any()
    # block 600..700 x 100..200 at scale 4/3 -> 800..933 x 133..267 (+-1 pixel)
    assert mask[135:265, 802:932].all() and not mask[135:265, 936:].any()
    assert abs(mask.mean() - (small > 0).mean()) < 1e-3


def test_aspect_mismatch_names_both_sizes_and_file(tmp_path):
    mask = np.zeros((100, 100), np.uint8)
    with pytest.raises(HandsegError) as err:
        fit_mask_to_image(mask, (960, 1280), name="masks/m1.png")
    msg = str(err.value)
    assert "100 x 100" in msg and "1280 x 960" in msg and "masks/m1.png" in msg
    # within 1 %: resized, nearest only
    near = fit_mask_to_image(np.ones((720, 961), np.uint8), (960, 1280))
    assert near.shape == (960, 1280) and near.all()
    same = np.ones((5, 7), np.uint8)
    assert fit_mask_to_image(same, (5, 7)) is same


# --- split -------------------------------------------------------------------------------


def _fake_pairs(n: int) -> list[tuple[Path, Path]]:
    return [(Path(f"img/p{k}.jpg"), Path(f"msk/p{k}.png")) for k in range(n)]


def test_split_sizes_determinism_disjoint_coverage():
    pairs = _fake_pairs(30)
    a = make_split(pairs, (0.6, 0.2, 0.2), seed=0)
    assert [len(a[k]) for k in SUBSETS] == [18, 6, 6]
    assert a == make_split(list(pairs), seed=0)  # same pairs, same seed
    b = make_split(pairs, seed=1)
    assert a != b
    subsets = [set(a[k]) for k in SUBSETS]
    assert not (subsets[0] & subsets[1]) and not (subsets[0] & subsets[2])
    assert not (subsets[1] & subsets[2])
    assert set().union(*subsets) == set(pairs)
    for n in (4, 7, 11, 13):
        sizes = [len(v) for v in make_split(_fake_pairs(n), seed=3).values()]
        assert sum(sizes) == n and min(sizes) >= 1
    assert [len(v) for v in make_split(_fake_pairs(10), (0.8, 0.2, 0.0)).values()] == [8, 2, 0]


def test_split_errors():
    with pytest.raises(HandsegError, match="sum to 1"):
        make_split(_fake_pairs(10), (0.6, 0.3, 0.2))
    with pytest.raises(HandsegError, match=r"3 image pair\(s\).*at least 4"):
        make_split(_fake_pairs(3))


def test_split_save_load_round_trip(tmp_path):
    images, masks = make_folders(
        tmp_path, [f"im{k}.png" for k in range(10)], [f"im{k}_mask.png" for k in range(10)]
    )
    pairs = find_pairs(images, masks)
    split = make_split(pairs, seed=5)
    path = tmp_path / "run" / "split.json"
    save_split(split, path, seed=5, fractions=(0.6, 0.2, 0.2))
    doc = json.loads(path.read_text())
    assert doc["seed"] == 5 and doc["fractions"] == [0.6, 0.2, 0.2]
    assert doc["train"][0] == {
        "image": split["train"][0][0].name,
        "mask": split["train"][0][1].name,
    }
    back = load_split(path)
    assert {k: names(v) for k, v in back.items()} == {k: names(v) for k, v in split.items()}
    assert all(p.is_file() for v in back.values() for pair in v for p in pair)
    # moved data: override the folders
    shutil.move(str(images), tmp_path / "moved_images")
    with pytest.raises(HandsegError, match="do not exist"):
        load_split(path)
    moved = load_split(path, images_dir=tmp_path / "moved_images")
    assert names(moved["val"]) == names(split["val"])
    with pytest.raises(HandsegError, match="does not exist"):
        load_split(tmp_path / "nope.json")


# --- class counts ------------------------------------------------------------------------


def test_label_counts_and_median_frequency_weights():
    m1 = np.zeros((4, 4), np.uint8)
    m1[:2, :2] = 1  # 4 hand pixels
    m2 = np.zeros((4, 4), np.uint8)  # no hand
    m3 = np.full((2, 2), IGNORE_INDEX, np.uint8)
    m3[0, 0] = 1  # 1 hand pixel, 3 ignored
    pixel, image_pixel = label_counts([m1, m2, m3])
    np.testing.assert_array_equal(pixel, [12 + 16, 4 + 1])
    np.testing.assert_array_equal(image_pixel, [16 + 16, 16 + 1])
    w = median_frequency_weights(pixel, image_pixel)
    freq = np.array([28 / 32, 5 / 17])
    med = (freq[0] + freq[1]) / 2
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, med / freq, rtol=1e-6)
    assert w[1] > 1 > w[0]


def test_absent_class_gets_zero_weight_and_warning(caplog):
    pixel, image_pixel = label_counts([np.zeros((3, 3), np.uint8)])
    np.testing.assert_array_equal(pixel, [9, 0])
    with caplog.at_level(logging.WARNING):
        w = median_frequency_weights(pixel, image_pixel)
    np.testing.assert_allclose(w, [1.0, 0.0])
    assert "hand" in caplog.text


# --- dataset -----------------------------------------------------------------------------


def test_dataset_shapes_dtypes_normalisation(tmp_path):
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    colour = (255, 0, 128)
    Image.new("RGB", (64, 48), colour).save(tmp_path / "i" / "a.png")
    write_mask(tmp_path / "m" / "a.png", 24, 32)  # half size: resized with nearest
    pairs = find_pairs(tmp_path / "i", tmp_path / "m")
    ds = SegDataset(pairs, image_size=(32, 40))
    assert len(ds) == 1
    x, y = ds[0]
    assert x.shape == (3, 32, 40) and x.dtype == torch.float32
    assert y.shape == (32, 40) and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) == {0, 1}
    expect = (torch.tensor(colour) / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD
    )
    torch.testing.assert_close(x[:, 10, 10], expect.float(), atol=1e-5, rtol=0)
    full = SegDataset(pairs, image_size=None)
    assert full[0][0].shape == (3, 48, 64) and full[0][1].shape == (48, 64)
    hand = SegDataset(pairs, image_size=(48, 64))[0][1].numpy()
    np.testing.assert_array_equal(
        hand, fit_mask_to_image(hand_shape(24, 32).astype(np.uint8), (48, 64))
    )


def test_dataset_transform_and_cache(tmp_path):
    images, masks = make_folders(tmp_path, ["a.png", "b.png"], ["a.png", "b.png"])
    pairs = find_pairs(images, masks)

    def mark(image, mask):
        mask = mask.copy()
        mask[0, :] = IGNORE_INDEX
        return image, mask

    ds = SegDataset(pairs, (24, 32), transform=mark, cache=True)
    x, y = ds[1]
    assert (y[0] == IGNORE_INDEX).all() and set(torch.unique(y[1:]).tolist()) <= {0, 1}
    a1, m1 = ds.load_resized(1)
    a2, _ = ds.load_resized(1)
    assert a1 is a2 and not a1.flags.writeable  # cached before the transform, read-only
    assert (m1 != IGNORE_INDEX).all()
    with pytest.raises(HandsegError, match="positive"):
        SegDataset(pairs, (0, 32))


def test_dataset_jpeg_draft_with_exif_rotation(tmp_path):
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    displayed = np.full((400, 200, 3), 30, np.uint8)
    displayed[:200] = 220  # top half bright; stored sideways with EXIF orientation 6
    _rotated_jpeg(tmp_path / "i" / "a.jpg", displayed)
    mask = np.zeros((400, 200), np.uint8)
    mask[:200] = 255  # drawn on the displayed (upright) photo
    _save(mask, tmp_path / "m" / "a.png")
    ds = SegDataset(find_pairs(tmp_path / "i", tmp_path / "m"), image_size=(100, 50))
    img, m = ds.load_resized(0)
    assert img.shape == (100, 50, 3) and m.shape == (100, 50)
    assert img[:45].mean() > 200 and img[55:].mean() < 45
    assert m[:50].all() and not m[50:].any()


# --- the real data set -------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.skipif(not REAL.is_dir(), reason=f"real data not found at {REAL}")
def test_real_arsl_bg11_pairs_and_masks():
    pairs = find_pairs(REAL / "images", REAL / "masks")
    assert len(pairs) == 30 and pairs.rule == "natural-order"
    assert names(pairs)[0] == ("photo_2019-11-02_22-03-54.jpg", "437201171_1_1_mask.png")
    assert names(pairs)[-1] == ("photo_2019-11-02_22-09-09.jpg", "437201171_30_1_mask.png")
    for k, (_, mask_path) in enumerate(pairs, start=1):
        assert int(re.fullmatch(r"437201171_(\d+)_1_mask", mask_path.stem).group(1)) == k
    for image_path, mask_path in pairs:
        mask = fit_mask_to_image(read_mask(mask_path), (960, 1280), name=mask_path.name)
        with Image.open(image_path) as im:
            assert im.size == (1280, 960)
        assert set(np.unique(mask)) <= {0, 1}
        assert 0.05 <= mask.mean() <= 0.25, mask_path.name


@pytest.mark.realdata
@pytest.mark.skipif(not REAL.is_dir(), reason=f"real data not found at {REAL}")
def test_real_data_loads_at_384x512():
    # speed is measured in benchmarks/data_loading.py, not asserted here
    pairs = find_pairs(REAL / "images", REAL / "masks")
    ds = SegDataset(pairs[:3], image_size=(384, 512))
    for i in range(3):
        x, y = ds[i]
        assert x.shape == (3, 384, 512) and y.shape == (384, 512)
        assert 0.05 <= y.float().mean() <= 0.25


def test_images_and_masks_in_one_folder(tmp_path):
    folder = tmp_path / "both"
    folder.mkdir()
    for k in (1, 2, 10):
        write_image(folder / f"hand{k}.jpg")
        write_mask(folder / f"hand{k}_mask.png")
    pairs = find_pairs(folder, folder)
    assert pairs.rule == "stem"
    assert names(pairs) == [(f"hand{k}.jpg", f"hand{k}_mask.png") for k in (1, 2, 10)]


def test_read_16bit_rgb_png(tmp_path):
    import cv2

    rgb16 = np.zeros((4, 5, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32896, 0x1234
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    out = read_image(tmp_path / "rgb16.png")
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 128, 0x12])
