"""Masks in and out of annotation tools: COCO RLE, CVAT Segmentation mask 1.1, LabelMe."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handseg.app.cli import main
from handseg.core.annotations import (
    counts_to_string,
    decode_rle,
    encode_rle,
    fill_polygons,
    parse_labelmap,
    rle_counts,
    string_to_counts,
    trace_polygons,
)
from handseg.core.errors import HandsegError
from handseg.core.imaging import read_mask
from handseg.core.mask_sources import detect_format
from handseg.data.convert import convert_masks
from handseg.data.inspect import inspect_data
from handseg.data.pairs import find_pairs
from handseg.data.split import load_split, make_split, save_split


def _pycocotools():
    """pycocotools' mask API (the test extra), the reference our RLE must match."""
    return pytest.importorskip("pycocotools.mask")


def _ring_masks() -> dict[str, np.ndarray]:
    """Masks with holes, an island inside a hole, several blobs, blobs on every border."""
    holes = np.zeros((40, 50), np.uint8)
    holes[5:35, 5:45] = 1
    holes[10:30, 10:40] = 0  # a hole
    holes[15:25, 20:30] = 1  # an island inside the hole
    holes[18:22, 23:27] = 0  # a hole in the island
    blobs = np.zeros((31, 17), np.uint8)
    blobs[2:6, 2:5] = 1
    blobs[10:12, 8:16] = 1
    blobs[20, 3] = 1  # a one-pixel speck
    blobs[25:27, 10:12] = 1
    borders = np.zeros((24, 33), np.uint8)
    borders[0, :] = 1
    borders[:, 0] = 1
    borders[-1, 5:20] = 1
    borders[3:9, -1] = 1
    borders[10:14, 30:33] = 1
    rng = np.random.default_rng(0)
    noise = (rng.random((23, 29)) < 0.4).astype(np.uint8)
    full = np.ones((7, 5), np.uint8)
    empty = np.zeros((6, 9), np.uint8)
    return {"holes": holes, "blobs": blobs, "borders": borders, "noise": noise,
            "full": full, "empty": empty}  # fmt: skip


@pytest.mark.parametrize("name", list(_ring_masks()))
def test_rle_matches_pycocotools_and_round_trips(name):
    mask = _ring_masks()[name]
    mask_utils = _pycocotools()
    theirs = mask_utils.encode(np.asfortranarray(mask))
    ours = encode_rle(mask)
    assert ours["counts"] == theirs["counts"].decode("ascii")
    assert ours["size"] == list(theirs["size"])
    assert np.array_equal(decode_rle(ours), mask)
    assert np.array_equal(mask_utils.decode(theirs), decode_rle(ours))
    # the uncompressed form (counts as a list) decodes too, and compresses the same
    counts = rle_counts(mask)
    assert counts_to_string(counts) == ours["counts"]
    assert string_to_counts(ours["counts"]) == counts
    assert np.array_equal(decode_rle({"size": ours["size"], "counts": counts}), mask)
    assert sum(counts) == mask.size


def test_rle_is_column_major():
    mask = np.zeros((2, 3), np.uint8)
    mask[0, 1] = 1  # row-major runs would be [1, 1, 4]; column-major [2, 1, 3]
    assert rle_counts(mask) == [2, 1, 3]
    with pytest.raises(ValueError, match="sum"):
        decode_rle({"size": [2, 3], "counts": [2, 1]})


@pytest.mark.parametrize("name", list(_ring_masks()))
def test_polygons_rebuild_the_mask_exactly_at_tolerance_zero(name):
    mask = _ring_masks()[name]
    polys = trace_polygons(mask, tolerance=0)
    assert np.array_equal(fill_polygons(mask.shape, polys), mask)


def test_polygons_keep_holes_as_background_layers():
    polys = trace_polygons(_ring_masks()["holes"], tolerance=1.0)
    assert [hand for hand, _ in polys] == [True, False, True, False]
    assert all(len(p) >= 3 for _, p in polys)


@pytest.fixture(scope="module")
def small_data(synth_dir, tmp_path_factory) -> Path:
    """8 synthetic photos and their PNG masks (64 x 80), a folder with images/ and masks/."""
    root = tmp_path_factory.mktemp("ann") / "data"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        for p in sorted((synth_dir / sub).iterdir())[:8]:
            shutil.copy(p, root / sub / p.name)
    return root


@pytest.fixture(scope="module")
def exports(small_data, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exports")
    paths = {}
    for to in ("coco", "cvat", "labelme", "palette"):
        r = convert_masks(
            small_data / "masks", to, out / to, images=small_data / "images", progress=False
        )
        paths[to] = Path(r["out"])
    return paths


def _masks_by_image(images: Path, masks: Path) -> dict[str, np.ndarray]:
    return {i.name: read_mask(m) for i, m in find_pairs(images, masks)}


@pytest.mark.parametrize("fmt", ["coco", "cvat", "palette"])
def test_exact_round_trips(small_data, exports, fmt):
    want = _masks_by_image(small_data / "images", small_data / "masks")
    got = _masks_by_image(small_data / "images", exports[fmt])
    assert want.keys() == got.keys()
    for name in want:
        assert np.array_equal(want[name], got[name]), name


def test_labelme_round_trip_keeps_the_hands(small_data, exports):
    want = _masks_by_image(small_data / "images", small_data / "masks")
    got = _masks_by_image(small_data / "images", exports["labelme"])
    inter = sum(int((want[k] & got[k]).sum()) for k in want)
    union = sum(int((want[k] | got[k]).sum()) for k in want)
    assert inter / union > 0.95  # tiny 64 x 80 hands; arsl-bg11 (>= 0.99): the benchmark
    exact = convert_masks(small_data / "masks", "labelme", exports["labelme"].parent / "lm0",
                          images=small_data / "images", tolerance=0, progress=False)  # fmt: skip
    got = _masks_by_image(small_data / "images", Path(exact["out"]))
    assert all(np.array_equal(want[k], got[k]) for k in want)


def test_coco_file_has_the_fields_tools_need(small_data, exports):
    mask_utils = _pycocotools()
    doc = json.loads(exports["coco"].read_text())
    assert doc["categories"] == [{"id": 1, "name": "hand", "supercategory": ""}]
    images = {im["id"]: im for im in doc["images"]}
    assert len(images) == 8
    for im in images.values():
        assert set(im) >= {"id", "file_name", "height", "width"}
        assert (small_data / "images" / im["file_name"]).is_file()
    seen = set()
    for a in doc["annotations"]:
        assert set(a) >= {"id", "image_id", "category_id", "segmentation", "area", "bbox",
                          "iscrowd"}  # fmt: skip
        im = images[a["image_id"]]
        rle = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
        assert rle["size"] == [im["height"], im["width"]]
        assert int(mask_utils.area(rle)) == a["area"]
        assert np.allclose(mask_utils.toBbox(rle), a["bbox"])
        assert a["id"] not in seen
        seen.add(a["id"])


def test_cvat_zip_has_the_layout_cvat_imports(small_data, exports):
    with zipfile.ZipFile(exports["cvat"]) as z:
        names = set(z.namelist())
        labelmap = parse_labelmap(z.read("labelmap.txt").decode())
        listed = z.read("ImageSets/Segmentation/default.txt").decode().split()
        masks = sorted(n for n in names if n.startswith("SegmentationClass/"))
        with z.open(masks[0]) as f:
            im = Image.open(f)
            im.load()
        with z.open(masks[0].replace("SegmentationClass/", "SegmentationObject/")) as f:
            obj = Image.open(f)
            obj.load()
    assert labelmap == {"background": (0, 0, 0), "hand": (255, 0, 0)}
    stems = sorted(p.stem for p in (small_data / "images").iterdir())
    assert sorted(listed) == stems
    assert masks == [f"SegmentationClass/{s}.png" for s in stems]
    assert im.mode == "RGB" and im.size == (80, 64)
    colours = {tuple(c) for c in np.asarray(im).reshape(-1, 3)}
    assert colours <= {(0, 0, 0), (255, 0, 0)}
    # instances: a VOC-palette index per connected hand, on exactly the class mask's hands
    assert obj.mode == "P" and obj.getpalette()[3:6] == [128, 0, 0]
    index = np.asarray(obj)
    assert np.array_equal(index > 0, np.all(np.asarray(im) == (255, 0, 0), axis=-1))
    assert index.max() >= 1


def test_labelme_files_have_the_fields_labelme_reads(small_data, exports):
    files = sorted(exports["labelme"].glob("*.json"))
    assert len(files) == 8
    for path in files:
        doc = json.loads(path.read_text())
        assert set(doc) >= {"version", "flags", "shapes", "imagePath", "imageData",
                            "imageHeight", "imageWidth"}  # fmt: skip
        assert (doc["imageHeight"], doc["imageWidth"]) == (64, 80)
        assert (path.parent / doc["imagePath"]).resolve() == (
            small_data / "images" / f"{path.stem}.png"
        ).resolve()
        for s in doc["shapes"]:
            assert set(s) >= {"label", "points", "group_id", "shape_type", "flags"}
            assert s["shape_type"] == "polygon" and s["label"] in ("hand", "background")
            assert len(s["points"]) >= 3 and all(len(p) == 2 for p in s["points"])


def test_format_is_told_from_the_content_and_inspect_reports_it(small_data, exports, tmp_path):
    renamed = tmp_path / "labels.dat"  # the name says nothing; the content does
    shutil.copy(exports["coco"], renamed)
    assert detect_format(renamed) == "coco"
    assert detect_format(exports["cvat"]) == "cvat"
    assert detect_format(exports["labelme"]) == "labelme"
    assert detect_format(small_data / "masks") == "png"
    info = inspect_data(small_data / "images", renamed)
    assert info["mask_format"] == "coco" and info["num_pairs"] == 8
    png = inspect_data(small_data / "images", small_data / "masks")
    assert info["classes"] == png["classes"]


def test_labelme_files_beside_their_photos(small_data, exports, tmp_path):
    both = tmp_path / "both"
    shutil.copytree(small_data / "images", both)
    for p in exports["labelme"].glob("*.json"):
        doc = json.loads(p.read_text())
        doc["imagePath"] = f"{p.stem}.png"
        (both / p.name).write_text(json.dumps(doc))
    pairs = find_pairs(both, both)
    assert pairs.mask_format == "labelme" and len(pairs) == 8


def test_split_file_names_the_annotations_and_reloads(small_data, exports, tmp_path):
    pairs = find_pairs(small_data / "images", exports["coco"])
    split = make_split(pairs, seed=3)
    path = tmp_path / "split.json"
    save_split(split, path, images_dir=small_data / "images", masks_dir=exports["coco"])
    doc = json.loads(path.read_text())
    assert doc["masks_dir"] == str(exports["coco"])
    assert doc["train"][0]["mask"] == doc["train"][0]["image"]  # the COCO file_name
    assert load_split(path) == split
    png = make_split(find_pairs(small_data / "images", small_data / "masks"), seed=3)
    assert {k: [i for i, _ in v] for k, v in png.items()} == {
        k: [i for i, _ in v] for k, v in split.items()
    }


@pytest.mark.parametrize(
    ("content", "binary", "expected"),
    [
        ('{"images": [1, 2], "annotations": [', False, "not valid JSON"),
        ('{"hello": 1}', False, "neither COCO"),
        ('{"images": [{"id": 1}], "annotations": []}', False, "not a valid COCO"),
        (b"PK\x03\x04 truncated", True, "zip"),
        ("plain text", False, "neither a folder of masks"),
    ],
)
def test_malformed_files_give_one_line_naming_the_file(
    small_data, tmp_path, content, binary, expected
):
    bad = tmp_path / ("bad.zip" if binary else "bad.json")
    bad.write_bytes(content) if binary else bad.write_text(content)
    with pytest.raises(HandsegError, match=expected) as err:
        find_pairs(small_data / "images", bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_zip_that_is_not_cvat_and_broken_labelme(tmp_path, small_data, capsys):
    z = tmp_path / "other.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("readme.txt", "hi")
    with pytest.raises(HandsegError, match="not a CVAT"):
        find_pairs(small_data / "images", z)
    folder = tmp_path / "lm"
    folder.mkdir()
    (folder / "a.json").write_text('{"shapes": [], "imageHeight": 4}')
    with pytest.raises(HandsegError, match="lacks imageHeight, imageWidth") as err:
        read_mask(folder / "a.json")
    assert str(folder / "a.json") in str(err.value)
    # a stray broken JSON beside mask images is skipped; beside LabelMe files it is an error
    masks = tmp_path / "masks"
    shutil.copytree(small_data / "masks", masks)
    (masks / "notes.json").write_text("{ oops")
    assert len(find_pairs(small_data / "images", masks)) == 8
    # through the command line: one line on stderr, exit status 2
    (folder / "b.json").write_text("{ not json")
    assert main(["inspect", "--images", str(small_data / "images"), "--masks", str(folder)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "b.json" in lines[0]


def test_convert_command_and_predict_folder_instances(tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    mask = np.zeros((20, 30), np.uint8)
    mask[2:8, 2:8] = 255
    mask[10:18, 12:28] = 255
    Image.fromarray(mask).save(pred / "a_mask.png")
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(pred / "a_overlay.jpg")
    hand = np.zeros_like(mask)
    hand[10:18, 12:28] = 255
    Image.fromarray(hand).save(pred / "a_hand0.png")
    out = tmp_path / "coco.json"
    assert main(["convert", str(pred), "--to", "coco", "--out", str(out)]) == 0
    assert "1 annotation(s)" in capsys.readouterr().out  # one per detected hand
    doc = json.loads(out.read_text())
    assert [im["file_name"] for im in doc["images"]] == ["a.jpg"]
    (pred / "a_hand0.png").unlink()
    assert main(["convert", str(pred), "--to", "coco", "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["annotations"]) == 2  # one per connected hand
    assert main(["convert", str(out), "--to", "png", "--out", str(tmp_path / "png")]) == 0
    assert np.array_equal(read_mask(tmp_path / "png" / "a_mask.png"), mask // 255)


@pytest.mark.parametrize("fmt", ["coco", "labelme"])  # cvat: test_run_card.card_run
def test_each_import_format_trains_a_one_epoch_model(small_data, exports, tmp_path, fmt):
    from handseg.core.config import resolve_config
    from handseg.train.run import train

    cfg = resolve_config(
        {
            "images": str(small_data / "images"),
            "masks": str(exports[fmt]),
            "out": str(tmp_path / "run"),
            "preset": "scratch",
            "epochs": 1,
            "image_size": (64, 80),
            "batch_size": 4,
            "backbone_weights": "none",
            "workers": 0,
            "device": "cpu",
            "split_fractions": (0.5, 0.25, 0.25),
            "evaluate_test": False,
        }
    )
    run = train(cfg, progress=False)
    assert (run / "model.pt").is_file()
    assert json.loads((run / "split.json").read_text())["masks_dir"] == str(exports[fmt])
    assert {"coco": "(COCO JSON)", "labelme": "(LabelMe JSON)"}[fmt] in (
        run / "MODEL_CARD.md"
    ).read_text()


@pytest.mark.realdata
def test_coco_export_of_arsl_bg11_gives_the_same_split_and_class_table(shared_data, tmp_path):
    """What ``handseg train --masks annotations.json`` does first: pair (find_pairs), split
    (make_split with the run's seed and fractions) and count the classes (inspect's table,
    MATLAB's countEachLabel), the same for the COCO export as for the PNG folder."""
    images = shared_data / "images"
    coco = convert_masks(shared_data / "masks", "coco", tmp_path / "annotations.json",
                         images=images, progress=False)["out"]  # fmt: skip
    png_pairs, coco_pairs = find_pairs(images, shared_data / "masks"), find_pairs(images, coco)
    assert coco_pairs.mask_format == "coco" and len(coco_pairs) == 30
    for seed in (0, 7):
        a, b = make_split(png_pairs, seed=seed), make_split(coco_pairs, seed=seed)
        assert {k: [i for i, _ in v] for k, v in a.items()} == {
            k: [i for i, _ in v] for k, v in b.items()
        }
    png_info, coco_info = inspect_data(images, shared_data / "masks"), inspect_data(images, coco)
    assert coco_info["classes"] == png_info["classes"]
    assert coco_info["class_weights"] == png_info["class_weights"]


def test_evaluate_scores_annotation_exports_on_either_side(small_data, exports):
    from handseg.eval.evaluate import evaluate_mask_folders

    same = evaluate_mask_folders(exports["cvat"], exports["coco"], progress=False)
    assert same["num_images"] == 8 and same["classes"]["hand"]["IoU"] == 1.0
    polygons = evaluate_mask_folders(exports["labelme"], small_data / "masks", progress=False)
    assert 0.95 < polygons["classes"]["hand"]["IoU"] < 1.0


def test_hand_value_does_not_apply_to_annotations(small_data, exports, caplog):
    _, member = next(iter(find_pairs(small_data / "images", exports["coco"])))
    with caplog.at_level("WARNING", logger="handseg"):
        assert np.array_equal(read_mask(member, hand_value=3), read_mask(member))
    assert "ignoring --hand-value" in caplog.text
