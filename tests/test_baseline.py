"""The classical skin-colour baseline (handseg.baseline) and `handseg baseline skin`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.eval.baseline import run_skin_baseline, skin_baseline
from handseg.eval.evaluate import evaluate_mask_folders

H, W = 120, 160
SKIN = (224, 172, 140)
BLUE = (40, 60, 200)


def _disc(cx: int = 70, cy: int = 60, r: int = 30) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8)


def _image(*masks: np.ndarray, color=SKIN) -> np.ndarray:
    img = np.empty((H, W, 3), np.uint8)
    img[:] = BLUE
    for m in masks:
        img[m == 1] = color
    return img


def _boundary_band(mask: np.ndarray, px: int) -> np.ndarray:
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask, k) != cv2.erode(mask, k)


def test_skin_colour_is_inside_the_classic_thresholds():
    ycrcb = cv2.cvtColor(np.array([[SKIN, BLUE]], np.uint8), cv2.COLOR_RGB2YCrCb)[0]
    assert 133 <= ycrcb[0, 1] <= 173 and 77 <= ycrcb[0, 2] <= 127
    assert not (133 <= ycrcb[1, 1] <= 173 and 77 <= ycrcb[1, 2] <= 127)


def test_disc_found_and_speck_removed():
    disc = _disc()
    speck = np.zeros((H, W), np.uint8)
    speck[10:14, 140:144] = 1  # 16 px, below 0.2 % of 19200 px (38 px)
    image = _image(disc, speck)
    pred = skin_baseline(image)
    assert pred.shape == (H, W) and pred.dtype == np.uint8
    assert set(np.unique(pred)) <= {0, 1}
    assert not pred[speck == 1].any()
    wrong = pred != disc
    assert not (wrong & ~_boundary_band(disc, 2)).any()  # errors only at the disc's rim
    iou = (pred & disc).sum() / (pred | disc).sum()
    assert iou > 0.97
    # the speck is removed by the options, not by the colour rule
    kept = skin_baseline(image, open_radius=0, close_radius=0, min_area=0, keep=0)
    assert kept[speck == 1].all() and kept[disc == 1].all()


def test_keep_largest_components():
    big, small = _disc(50, 60, 28), _disc(130, 60, 14)
    image = _image(big, small)
    one = skin_baseline(image, keep=1)
    assert one[big == 1].mean() > 0.98 and not one[small == 1].any()
    two = skin_baseline(image, keep=2)
    assert two[big == 1].mean() > 0.98 and two[small == 1].mean() > 0.95
    none = skin_baseline(image, keep=0, min_area=0.2)  # both below 20 % of the image
    assert not none.any()


def test_holes_filled_unless_disabled():
    disc = _disc(r=35)
    hole = _disc(r=8)
    image = _image(disc)
    image[hole == 1] = BLUE
    filled = skin_baseline(image)
    assert filled[hole == 1].all()
    open_hole = skin_baseline(image, fill_holes=False, close_radius=0)
    assert not open_hole[hole == 1].any()


def test_thresholds_are_options():
    image = _image(_disc())
    assert not skin_baseline(image, cr=(174, 200)).any()  # the disc's Cr is below 174
    with pytest.raises(HandsegError, match="Cr range"):
        skin_baseline(image, cr=(180, 150))
    with pytest.raises(HandsegError, match="uint8"):
        skin_baseline(image.astype(np.float32))


def _write_set(folder: Path) -> tuple[Path, Path]:
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for i, (cx, r) in enumerate([(60, 25), (90, 35), (80, 20)]):
        disc = _disc(cx, 60, r)
        Image.fromarray(_image(disc)).save(images / f"sign_{i}.png")
        Image.fromarray(disc * np.uint8(255)).save(masks / f"sign_{i}.png")
    return images, masks


def test_run_writes_masks_by_stem(tmp_path):
    images, masks = _write_set(tmp_path)
    written = run_skin_baseline(images, tmp_path / "out", progress=False)
    assert [p.name for p in written] == [f"sign_{i}_mask.png" for i in range(3)]
    m = np.asarray(Image.open(written[1]))
    assert m.shape == (H, W) and set(np.unique(m)) == {0, 255}


def test_cli_masks_score_with_evaluate(tmp_path, capsys):
    images, masks = _write_set(tmp_path)
    out = tmp_path / "skin"
    rc = main(["baseline", "skin", "--images", str(images), "--out", str(out),
               "--cr", "133", "173", "--cb", "77", "127", "--min-area", "0.01"])  # fmt: skip
    assert rc == 0
    assert "wrote 3" in capsys.readouterr().out
    result = evaluate_mask_folders(out, masks, progress=False)
    assert result["num_images"] == 3
    assert result["classes"]["hand"]["IoU"] > 0.95
    # the CLI's thresholds reach the rule: an empty Cr range finds nothing
    rc = main(["baseline", "skin", "--images", str(images), "--out", str(tmp_path / "none"),
               "--cr", "200", "210"])  # fmt: skip
    assert rc == 0
    assert not np.asarray(Image.open(tmp_path / "none" / "sign_0_mask.png")).any()


def test_cli_error_is_one_line(tmp_path, capsys):
    rc = main(["baseline", "skin", "--images", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope" in err and err.count("\n") == 1
