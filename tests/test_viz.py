"""Tests for handseg.viz: colours at known pixels, overlays, and that figures are written."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PIL import Image

from handseg.core import viz

WHITE, BLACK, GREEN, MAGENTA, GREY = (
    [255, 255, 255],
    [0, 0, 0],
    [0, 255, 0],
    [255, 0, 255],
    [128, 128, 128],
)


def _pred_gt():
    """(4, 5) prediction and ground truth with one pixel of every kind at known places."""
    gt = np.zeros((4, 5), dtype=np.uint8)
    pred = np.zeros_like(gt)
    gt[1, 1] = pred[1, 1] = 1  # hand found
    pred[2, 3] = 1  # false hand (gt 0)
    gt[3, 4] = 1  # missed hand (pred 0)
    gt[0, 4] = 255  # not labelled
    pred[0, 4] = 1
    return pred, gt


def _assert_png(path, min_size=(50, 50)):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        return np.asarray(im.convert("RGB"))


def test_comparison_image_colours_default_mode():
    pred, gt = _pred_gt()
    img = viz.comparison_image(pred, gt)
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8
    assert img[1, 1].tolist() == WHITE
    assert img[0, 0].tolist() == BLACK
    assert img[2, 3].tolist() == GREEN  # false hand
    assert img[3, 4].tolist() == GREEN  # missed hand
    assert img[0, 4].tolist() == GREY
    # every other pixel is correct background
    n_black = np.all(img == BLACK, axis=2).sum()
    assert n_black == 20 - 4


def test_comparison_image_colours_split_errors():
    pred, gt = _pred_gt()
    img = viz.comparison_image(pred, gt, split_errors=True)
    assert img[1, 1].tolist() == WHITE
    assert img[0, 0].tolist() == BLACK
    assert img[2, 3].tolist() == GREEN
    assert img[3, 4].tolist() == MAGENTA
    assert img[0, 4].tolist() == GREY


def test_comparison_image_accepts_bool_and_0_255_masks():
    pred, gt = _pred_gt()
    gt01 = np.where(gt == 255, 0, gt)
    expected = viz.comparison_image(pred, gt01, split_errors=True)
    got = viz.comparison_image(pred.astype(bool), (gt01 * 255).astype(np.uint8), split_errors=True)
    assert np.array_equal(got, expected)
    with pytest.raises(ValueError):
        viz.comparison_image(pred, gt[:, :4])


def test_overlay_tints_hand_only_and_keeps_input():
    image = np.full((40, 60, 3), 100, dtype=np.uint8)
    image.flags.writeable = False
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[10:30, 20:40] = 1
    out = viz.overlay(image, mask, color=(255, 0, 0), alpha=0.5, contour=False)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert out[20, 30].tolist() == [178, 50, 50]  # round(100 * 0.5 + 255 * 0.5) = 178
    assert out[0, 0].tolist() == [100, 100, 100]
    with_contour = viz.overlay(image, mask, color=(255, 0, 0), alpha=0.5)
    assert with_contour[10, 30].tolist() == [255, 0, 0]  # outline on the mask's edge
    assert with_contour[20, 30].tolist() == [178, 50, 50]  # inside still tinted
    assert with_contour[5, 30].tolist() == [100, 100, 100]  # outside untouched


def test_overlay_grayscale_rgba_and_shape_check():
    mask = np.zeros((8, 9), dtype=bool)
    mask[2:5, 2:5] = True
    gray = np.full((8, 9), 50, dtype=np.uint8)
    rgba = np.full((8, 9, 4), 50, dtype=np.uint8)
    a = viz.overlay(gray, mask)
    b = viz.overlay(rgba, mask)
    assert a.shape == b.shape == (8, 9, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[3, 3], [50, 50, 50])
    with pytest.raises(ValueError, match="shape"):
        viz.overlay(gray, mask[:, :5])


def test_save_mask_png_writes_0_255(tmp_path):
    mask = np.zeros((6, 7), dtype=np.uint8)
    mask[1:3, 2:5] = 1
    path = viz.save_mask_png(mask, tmp_path / "sub" / "m.png")
    with Image.open(path) as im:
        assert im.mode == "L"
        a = np.asarray(im)
    assert a.shape == (6, 7)
    assert set(np.unique(a).tolist()) == {0, 255}
    assert np.array_equal(a == 255, mask == 1)


def test_comparison_figure_writes_png_with_both_panels(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    gt = np.zeros((60, 80), dtype=np.uint8)
    gt[10:40, 20:50] = 1
    pred = np.zeros_like(gt)
    pred[12:42, 20:55] = 1
    for split in (False, True):
        out = viz.comparison_figure(
            image,
            pred,
            gt,
            tmp_path / f"cmp{split}.png",
            title="x.jpg",
            iou=0.9734,
            bf=0.9512,
            split_errors=split,
        )
        rgb = _assert_png(out, (400, 200))
        # the comparison panel's colours appear in the figure
        assert np.all(rgb == WHITE, axis=2).any()
        assert np.all(rgb == GREEN, axis=2).any()
        assert np.all(rgb == MAGENTA, axis=2).any() == split


def test_comparison_figure_resizes_photo_to_mask(tmp_path):
    image = np.zeros((120, 160, 3), dtype=np.uint8)  # twice the masks' size
    gt = np.zeros((60, 80), dtype=np.uint8)
    gt[5:20, 5:20] = 1
    _assert_png(viz.comparison_figure(image, gt, gt, tmp_path / "c.png"))


def test_confusion_figure_from_result_and_matrix(tmp_path):
    result = {"confusion": [[900, 20], [10, 70]], "class_names": ["background", "hand"]}
    _assert_png(viz.confusion_figure(result, None, tmp_path / "c1.png"))
    _assert_png(
        viz.confusion_figure(
            np.array([[5, 0], [0, 0]]), ["bg", "hand"], tmp_path / "c2.png", normalized=False
        )
    )
    with pytest.raises(ValueError):
        viz.confusion_figure(np.zeros((2, 3)), ["a", "b"], tmp_path / "bad.png")


def _metrics_rows():
    rows = []
    step = 0
    for epoch in (1, 2, 3):
        for _ in range(4):
            step += 1
            rows.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "train_loss": 1 / step,
                    "train_acc": 1 - 0.5 / step,
                    "val_loss": "",
                    "val_acc": "",
                }
            )
        rows.append(
            {
                "epoch": epoch,
                "step": step,
                "train_loss": "",
                "train_acc": "",
                "val_loss": 1.2 / step,
                "val_acc": 1 - 0.6 / step,
            }
        )
    return rows


def test_training_progress_figure_from_rows_and_csv(tmp_path):
    rows = _metrics_rows()
    _assert_png(viz.training_progress_figure(rows, tmp_path / "p1.png"), (500, 400))
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _assert_png(viz.training_progress_figure(path, tmp_path / "p2.png"), (500, 400))


def test_training_progress_figure_handles_missing_columns_and_no_rows(tmp_path):
    rows = [{"train_loss": 1.0 / (i + 1)} for i in range(10)]  # no step, epoch, accuracy
    rows.append({"val_loss": math.nan, "val_acc": ""})
    one_panel = _assert_png(viz.training_progress_figure(rows, tmp_path / "p.png"))
    two_panels = _assert_png(viz.training_progress_figure(_metrics_rows(), tmp_path / "p2.png"))
    assert one_panel.shape[0] < two_panels.shape[0]  # no empty accuracy panel
    _assert_png(viz.training_progress_figure([], tmp_path / "empty.png"))


def test_class_frequency_figure(tmp_path):
    _assert_png(viz.class_frequency_figure(["background", "hand"], [0.8, 0.2], tmp_path / "f.png"))
    with pytest.raises(ValueError):
        viz.class_frequency_figure(["a"], [0.5, 0.5], tmp_path / "bad.png")
