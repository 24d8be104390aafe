"""Annotation files written the way other tools write them, not as handseg exports them.

Each file is built here from its format's documentation: COCO's ``instances`` JSON
(polygons in COCO's pixel convention, several polygons per object, several objects and
categories per image, crowd regions as uncompressed RLE, images without annotations, files
without categories), LabelMe's JSON (every ``shape_type`` LabelMe saves: polygon,
rectangle, circle, point, line, linestrip, points and the AI ``mask`` shapes of LabelMe
5.3+, with ``_background_`` holes) and CVAT's "Segmentation mask 1.1" zip (``labelmap.txt``
with CVAT's own colours for several labels, masks in sub-folders where the task's images
were). The references: pycocotools (COCO's own rasteriser) and LabelMe's
``shape_to_mask`` rules (PIL's ImageDraw), re-stated below.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from handseg.core.imaging import read_mask
from handseg.core.mask_sources import annotation_members, detect_format
from handseg.data.pairs import find_pairs

H, W = 120, 160


def _coco():
    return pytest.importorskip(
        "pycocotools.mask", reason="needs pycocotools (the test extra), COCO's rasteriser"
    )


def _hand_polygon(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[float]:
    """A star-ish outline as COCO stores it: [x0, y0, x1, y1, ...], float coordinates."""
    n = int(rng.integers(8, 24))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.5, 1.0, n)
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    return np.round(pts, 2).ravel().tolist()


def _write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _coco_doc(images, annotations, categories) -> dict:
    return {
        "info": {"description": "written by another tool"},
        "licenses": [],
        "images": [
            {"id": i + 1, "file_name": name, "height": H, "width": W, "license": 0}
            for i, name in enumerate(images)
        ],
        "annotations": [
            {"id": k + 1, "iscrowd": 0, "area": 0.0, "bbox": [0, 0, 0, 0]} | a
            for k, a in enumerate(annotations)
        ],
        "categories": categories,
    }


def test_coco_polygons_are_drawn_as_pycocotools_draws_them(tmp_path):
    """Polygons of hand size, float coordinates: handseg's mask equals pycocotools' up to
    pixels whose centres lie on the outline (measured: 0.4 % of the hand pixels; drawing
    points as pixel centres, as for LabelMe, gives 4 % more hand, all on the right and
    bottom edges); integer rectangles and L shapes exactly."""
    coco = _coco()
    rng = np.random.default_rng(0)
    images, annotations, expected = [], [], []
    for i in range(12):
        polys = [_hand_polygon(rng, rng.uniform(40, 120), rng.uniform(40, 80), 30)]
        if i % 3 == 0:  # one object in two parts (a finger cut off by another object)
            polys.append(_hand_polygon(rng, 20, 20, 10))
        images.append(f"photo{i}.jpg")
        annotations.append({"image_id": i + 1, "category_id": 1, "segmentation": polys})
        expected.append(coco.decode(coco.merge(coco.frPyObjects(polys, H, W))))
    exact = [[10, 10, 50, 10, 50, 40, 10, 40], [5, 5, 60, 5, 60, 20, 30, 20, 30, 90, 5, 90]]
    for j, poly in enumerate(exact):
        images.append(f"exact{j}.jpg")
        annotations.append({"image_id": len(images), "category_id": 1, "segmentation": [poly]})
        expected.append(coco.decode(coco.frPyObjects([poly], H, W))[..., 0])
    doc = _coco_doc(images, annotations, [{"id": 1, "name": "hand", "supercategory": ""}])
    path = _write_json(tmp_path / "instances.json", doc)
    assert detect_format(path) == "coco"
    got = [read_mask(path / name) for name in images]
    differ = sum(int((g != e).sum()) for g, e in zip(got[:12], expected[:12]))
    hand = sum(int(e.sum()) for e in expected[:12])
    assert differ <= 0.01 * hand, f"{differ} of {hand} pixels differ from pycocotools"
    assert abs(sum(int(g.sum()) for g in got[:12]) - hand) <= 0.005 * hand
    for g, e in zip(got[12:], expected[12:]):
        np.testing.assert_array_equal(g, e)


def test_coco_categories_crowds_and_images_without_hands(tmp_path):
    """Left and right hands as two categories (both hand), a background category drawn over
    nothing, a crowd region as uncompressed RLE, an image without annotations; and a file
    without categories, whose every annotation is hand."""
    coco = _coco()
    left = [[10, 10, 40, 10, 40, 50, 10, 50]]
    right = [[100, 20, 150, 20, 150, 70, 100, 70]]
    table = [[0, 0, 160, 0, 160, 120, 0, 120]]  # the whole photo, labelled background
    crowd = np.zeros((H, W), np.uint8, order="F")
    crowd[80:110, 60:90] = 1
    rle = coco.encode(np.asfortranarray(crowd))
    flat = crowd.ravel(order="F")  # COCO's uncompressed counts: column-major runs, 0s first
    counts = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()
    annotations = [
        {"image_id": 1, "category_id": 1, "segmentation": left},
        {"image_id": 1, "category_id": 2, "segmentation": right},
        {"image_id": 1, "category_id": 3, "segmentation": table},
        {"image_id": 1, "category_id": 2, "iscrowd": 1, "segmentation": {"size": [H, W], "counts": counts}},
    ]  # fmt: skip
    categories = [{"id": 1, "name": "left_hand"}, {"id": 2, "name": "right_hand"},
                  {"id": 3, "name": "background"}]  # fmt: skip
    path = _write_json(
        tmp_path / "a.json", _coco_doc(["p1.png", "p2.png"], annotations, categories)
    )
    expected = coco.decode(coco.merge(coco.frPyObjects(left + right, H, W) + [rle]))
    np.testing.assert_array_equal(read_mask(path / "p1.png"), expected)
    assert read_mask(path / "p2.png").sum() == 0  # listed, no annotation: no hand
    bare = _coco_doc(["p1.png"], annotations[:2], [])
    del bare["categories"]
    path = _write_json(tmp_path / "b.json", bare)
    expected = coco.decode(coco.merge(coco.frPyObjects(left + right, H, W)))
    np.testing.assert_array_equal(read_mask(path / "p1.png"), expected)


def test_coco_file_pairs_with_its_photos_for_training(tmp_path):
    """The images a COCO file lists pair with the photo folder, by name."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(photos / name)
    poly = [[20, 20, 60, 20, 60, 60, 20, 60]]
    annotations = [{"image_id": i, "category_id": 7, "segmentation": poly} for i in (1, 2)]
    doc = _coco_doc(["b.jpg", "a.jpg"], annotations, [{"id": 7, "name": "hand"}])
    path = _write_json(tmp_path / "labels.json", doc)
    pairs = find_pairs(photos, path)
    assert [(i.name, m.relative_to(path).as_posix()) for i, m in pairs] == [
        ("a.jpg", "a.jpg"), ("b.jpg", "b.jpg")
    ]  # fmt: skip
    assert all(read_mask(m).sum() == 40 * 40 for _, m in pairs)


# --- LabelMe -----------------------------------------------------------------------------
def labelme_reference(shapes: list[dict]) -> np.ndarray:
    """LabelMe's own ``shape_to_mask`` rules, as its documentation and labelme2voc apply
    them: PIL ImageDraw on the points (pixel centres): polygon and rectangle filled with
    their outline, circle = ellipse of radius |p1 - p0| around p0, mask = the PNG pasted at
    the box's corner; ``_background_`` shapes erase. Points and lines (drawn 10 px wide by
    labelme2voc) mark no region handseg counts, so they are left out here."""
    out = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(out)
    for s in shapes:
        value = 0 if s["label"] == "_background_" else 1
        xy = [tuple(p) for p in s["points"]]
        kind = s["shape_type"]
        if kind == "polygon":
            draw.polygon(xy, outline=value, fill=value)
        elif kind == "rectangle":
            draw.rectangle([min(xy), max(xy)], outline=value, fill=value)
        elif kind == "circle":
            (cx, cy), (px, py) = xy
            d = float(np.hypot(cx - px, cy - py))
            draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=value, fill=value)
        elif kind == "mask":
            crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(s["mask"])))) > 0
            x0, y0 = (int(v) for v in xy[0])
            arr = np.asarray(out).copy()
            arr[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]][crop] = value
            out = Image.fromarray(arr)
            draw = ImageDraw.Draw(out)
    return np.asarray(out)


def _shape(label: str, kind: str, points, **extra) -> dict:
    return {"label": label, "points": points, "group_id": None, "description": "",
            "shape_type": kind, "flags": {}, "mask": None} | extra  # fmt: skip


def _png_b64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buf, format="PNG")  # 0/1, as LabelMe saves
    return base64.b64encode(buf.getvalue()).decode()


def test_labelme_files_with_every_shape_type(tmp_path):
    """One LabelMe 5.x file per shape type, and one with all of them: handseg's mask equals
    LabelMe's own rules up to rounding on the outline (IoU >= 0.97 each; shapes with area
    drawn, points and lines adding nothing; circles >= 0.92), holes erased in file order."""
    blob = np.zeros((30, 40), bool)
    blob[5:25, 8:32] = True
    blob[12:18, 15:25] = False  # a hole inside the AI mask
    shapes = [
        _shape("hand", "polygon", [[20.5, 15.2], [70.1, 18.7], [62.4, 70.3], [25.8, 60.9]]),
        _shape("hand", "rectangle", [[100, 10], [140, 45]]),
        _shape("left_hand", "circle", [[45, 95], [45, 113]]),
        _shape("hand", "mask", [[100, 70], [139, 99]], mask=_png_b64(blob)),
        _shape("hand", "point", [[5, 5]]),
        _shape("hand", "line", [[2, 110], [30, 112]]),
        _shape("hand", "linestrip", [[150, 110], [155, 100], [158, 115]]),
        _shape("hand", "points", [[80, 100], [85, 104]]),
        _shape("_background_", "polygon", [[30, 30], [45, 30], [45, 45], [30, 45]]),
    ]
    folder = tmp_path / "labelme"
    folder.mkdir()
    cases = {f"only_{k}": [s] for k, s in enumerate(shapes[:4])} | {"all": shapes}
    for name, group in cases.items():
        doc = {"version": "5.5.0", "flags": {}, "shapes": group, "imagePath": f"{name}.jpg",
               "imageData": None, "imageHeight": H, "imageWidth": W}  # fmt: skip
        _write_json(folder / f"{name}.json", doc)
    assert detect_format(folder) == "labelme"
    for name, group in cases.items():
        got, want = read_mask(folder / f"{name}.json") > 0, labelme_reference(group) > 0
        iou = (got & want).sum() / (got | want).sum()
        # a circle is the disk of radius |p1 - p0| here; PIL's ellipse in LabelMe adds about
        # half a pixel all round (measured IoU 0.94 at radius 18)
        least = 0.92 if name == "only_2" else 0.97
        assert iou >= least, f"{name}: IoU {iou:.3f} against LabelMe's rules"
    everything = read_mask(folder / "all.json") > 0
    assert not everything[35:40, 35:40].any()  # the _background_ hole
    assert not everything[:10, :10].any() and not everything[108:114, 2:31].any()
    assert everything[80, 110] and not everything[85, 120]  # the AI mask and its hole


# --- CVAT --------------------------------------------------------------------------------
def test_cvat_zip_with_its_own_colours_and_sub_folders(tmp_path):
    """A CVAT export of a task whose images sat in folders: labelmap.txt with CVAT's colours
    for background, two hand labels and an unrelated one; class masks under
    SegmentationClass/<folder>/; instance masks and ImageSets beside them."""
    labelmap = ("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                "left hand:250,50,83::\nright hand:51,221,255::\n")  # fmt: skip
    rng = np.random.default_rng(3)
    masks = {}
    names = ["signer1/photo_01", "signer1/photo_02", "signer2/day 2/photo_10"]
    for name in names:
        rgb = np.zeros((H, W, 3), np.uint8)
        x = int(rng.integers(0, 80))
        rgb[10:60, x : x + 40] = (250, 50, 83)
        rgb[70:110, x + 20 : x + 70] = (51, 221, 255)
        rgb[0:5, 0:5] = (0, 0, 1)  # a colour no label has: not hand
        masks[name] = rgb
    path = tmp_path / "task.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("labelmap.txt", labelmap)
        z.writestr("ImageSets/Segmentation/default.txt", "\n".join(names) + "\n")
        for name, rgb in masks.items():
            for sub in ("SegmentationClass", "SegmentationObject"):
                buf = io.BytesIO()
                Image.fromarray(rgb if sub == "SegmentationClass" else rgb[..., ::-1]).save(
                    buf, format="PNG"
                )
                z.writestr(f"{sub}/{name}.png", buf.getvalue())
    assert detect_format(path) == "cvat"
    members = annotation_members(path)
    assert sorted(members) == sorted(f"SegmentationClass/{n}.png" for n in names)
    for name, rgb in masks.items():
        want = (rgb == (250, 50, 83)).all(-1) | (rgb == (51, 221, 255)).all(-1)
        np.testing.assert_array_equal(read_mask(path / f"SegmentationClass/{name}.png"), want)
