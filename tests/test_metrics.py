"""Known-answer and brute-force tests for handseg.eval.metrics."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from handseg.core.constants import IGNORE_INDEX
from handseg.eval.metrics import (
    SegmentationMetrics,
    bf_score,
    boundary,
    confusion_counts,
    default_bf_threshold,
    format_metrics_tables,
    to_json,
    write_per_image_csv,
)
from handseg.eval.metrics import unmatched as _unmatched

# --------------------------------------------------------------------------- brute force


def _boundary_loops(mask: np.ndarray) -> np.ndarray:
    """Boundary by explicit loops: a mask pixel with a 4-neighbour outside mask or image."""
    h, w = mask.shape
    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                yy, xx = y + dy, x + dx
                if not (0 <= yy < h and 0 <= xx < w) or not mask[yy, xx]:
                    out[y, x] = True
                    break
    return out


def _bf_brute(pred, gt, num_classes, theta=None):
    """BF from explicit pairwise distances between boundary pixel coordinates; a pixel
    matches when its squared distance is < theta^2 (strictly, as MATLAB)."""
    h, w = gt.shape
    if theta is None:
        theta = 0.0075 * math.sqrt(h * h + w * w)
    valid = gt < num_classes
    out = []
    for c in range(num_classes):
        pb = np.argwhere(_boundary_loops((pred == c) & valid))
        gb = np.argwhere(_boundary_loops((gt == c) & valid))
        if len(pb) == 0 and len(gb) == 0:
            out.append(math.nan)
            continue
        if len(pb) == 0 or len(gb) == 0:
            out.append(0.0)
            continue
        sq = ((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1)  # (Np, Ng) squared distances
        close = sq < theta * theta
        p = close.any(axis=1).mean()
        r = close.any(axis=0).mean()
        out.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    return np.array(out)


def _blobs(rng, h, w, sigma, level):
    """(h, w) random blobs: smoothed noise above a level."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma)
    return (noise > level * noise.std()).astype(np.uint8)


# --------------------------------------------------------------------------- confusion


def test_confusion_counts_known_answer():
    gt = np.array([[0, 0, 1], [1, 1, 0]])
    pred = np.array([[0, 1, 1], [0, 1, 0]])
    cm = confusion_counts(pred, gt)
    # true bg: (0,0)->0, (0,1)->1, (1,2)->0; true hand: (0,2)->1, (1,0)->0, (1,1)->1
    assert cm.tolist() == [[2, 1], [1, 2]]
    assert cm.dtype == np.int64


def test_confusion_counts_excludes_ignore_pixels():
    gt = np.array([[0, IGNORE_INDEX, 1], [IGNORE_INDEX, 1, 7]], dtype=np.uint8)
    pred = np.array([[1, 1, 1], [0, 0, 1]], dtype=np.uint8)
    # counted: (0,0) bg->hand, (0,2) hand->hand, (1,1) hand->bg; 255 and 7 (>= C) left out
    assert confusion_counts(pred, gt).tolist() == [[0, 1], [1, 1]]


def test_confusion_counts_three_classes_and_bool_input():
    gt = np.array([[0, 1, 2, 2]])
    pred = np.array([[0, 2, 2, 1]])
    assert confusion_counts(pred, gt, 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    assert confusion_counts(np.array([[True, False]]), np.array([[True, True]])).tolist() == [
        [0, 0],
        [1, 1],
    ]


def test_confusion_counts_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        confusion_counts(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="predicted labels"):
        confusion_counts(np.full((2, 2), 2), np.zeros((2, 2), dtype=np.uint8))


# --------------------------------------------------------------------------- boundary


def test_boundary_of_full_mask_is_the_image_frame():
    b = boundary(np.ones((5, 7), dtype=np.uint8))
    expected = np.zeros((5, 7), dtype=bool)
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = True
    assert b.dtype == bool
    assert np.array_equal(b, expected)


def test_boundary_of_interior_square_is_its_ring_with_4_connectivity():
    m = np.zeros((7, 7), dtype=np.uint8)
    m[1:6, 1:6] = 1
    b = boundary(m)
    assert b.sum() == 16  # 5x5 square: 25 - 9 interior
    assert not b[2:5, 2:5].any()
    assert b[1, 1]  # corner: 4-neighbours (0,1), (1,0) are outside
    # a diagonal-only gap does not make a boundary pixel (4-connected cross, not 3x3)
    m2 = np.ones((5, 5), dtype=np.uint8)
    m2[0, 0] = 0
    assert not boundary(m2)[1, 1]


@pytest.mark.parametrize("seed", range(4))
def test_boundary_matches_loops(seed):
    rng = np.random.default_rng(seed)
    m = (rng.random((13, 17)) > 0.4).astype(np.uint8)
    assert np.array_equal(boundary(m), _boundary_loops(m))


# --------------------------------------------------------------------------- BF score


def test_default_threshold_is_075_percent_of_diagonal():
    assert default_bf_threshold(720, 960) == pytest.approx(9.0)
    assert default_bf_threshold(3, 4) == pytest.approx(0.0375)


def test_bf_shifted_square_known_answer():
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[2:6, 2:6] = 1
    pred = np.zeros_like(gt)
    pred[2:6, 3:7] = 1  # same 4x4 square one pixel to the right
    # theta <= 1: only shared pixels match (a 4-neighbour at exactly 1 px is a miss).
    # hand rings (12 px each) share rows 2 and 5 at cols 3..5 -> 6 px: P = R = 1/2.
    # background: frame (36) + 16 px around the square each; shared: frame + 6 -> 42 of 52.
    for theta in (0.5, 0.99, 1.0):
        assert bf_score(pred, gt, theta=theta) == pytest.approx([42 / 52, 0.5], abs=1e-12)
    # just above 1: every boundary pixel is next to the other boundary
    assert bf_score(pred, gt, theta=1.01) == pytest.approx([1.0, 1.0])


def test_bf_nan_when_class_absent_from_both():
    gt = np.zeros((6, 8), dtype=np.uint8)
    pred = np.zeros_like(gt)
    bf = bf_score(pred, gt)
    assert bf[0] == pytest.approx(1.0)  # both background masks are full: frame vs frame
    assert math.isnan(bf[1])


def test_bf_zero_when_one_boundary_empty():
    gt = np.zeros((6, 8), dtype=np.uint8)
    pred = np.zeros_like(gt)
    pred[2:4, 3:5] = 1
    assert bf_score(pred, gt)[1] == 0.0  # predicted hand, no true hand
    assert bf_score(gt, pred)[1] == 0.0  # missed hand


def test_bf_full_masks_match_on_the_image_frame():
    full = np.ones((9, 11), dtype=np.uint8)
    bf = bf_score(full, full)
    assert math.isnan(bf[0])
    assert bf[1] == 1.0


def test_bf_zero_when_precision_and_recall_are_zero():
    gt = np.zeros((20, 20), dtype=np.uint8)
    pred = np.zeros_like(gt)
    gt[2:5, 2:5] = 1
    pred[14:17, 14:17] = 1
    assert bf_score(pred, gt, theta=2.0)[1] == 0.0


def test_bf_ignore_pixels_do_not_matter():
    rng = np.random.default_rng(3)
    gt = _blobs(rng, 40, 50, 3, 0.3)
    pred = _blobs(rng, 40, 50, 3, 0.3)
    gt[10:20, 5:30] = IGNORE_INDEX
    pred2 = pred.copy()
    pred2[10:20, 5:30] = 1 - pred2[10:20, 5:30]
    assert np.array_equal(bf_score(pred, gt, theta=2.0), bf_score(pred2, gt, theta=2.0))
    assert np.array_equal(confusion_counts(pred, gt), confusion_counts(pred2, gt))
    # and an ignore region alone never lowers the score
    assert bf_score(np.where(gt == IGNORE_INDEX, 0, gt), gt, theta=0.5) == pytest.approx([1, 1])


def _random_cases():
    cases = []
    rng = np.random.default_rng(2024)
    sizes = [(24, 24), (31, 47), (60, 45), (17, 90), (80, 64)]
    thetas = [None, 0.5, 1.0, math.sqrt(2), 2.0, math.sqrt(5), 3.0, math.sqrt(8) - 1e-9, 5.0]
    for i in range(20):
        h, w = sizes[i % len(sizes)]
        sigma = rng.uniform(1.5, 4)
        gt = _blobs(rng, h, w, sigma, rng.uniform(-0.3, 0.6))
        if i % 3 == 0:  # a perturbed copy: boundaries mostly close, some near theta
            pred = gt.copy()
            noise = _blobs(rng, h, w, 1.0, 1.2)
            pred[noise == 1] = 1 - pred[noise == 1]
        else:
            pred = _blobs(rng, h, w, sigma, rng.uniform(-0.3, 0.6))
        num_classes = 2
        if i % 5 == 4:  # three classes
            num_classes = 3
            gt = gt + _blobs(rng, h, w, 2.0, 0.8) * (gt == 0) * 2
            pred = pred + _blobs(rng, h, w, 2.0, 0.8) * (pred == 0) * 2
        if i % 4 == 1:
            gt[rng.random((h, w)) < 0.05] = IGNORE_INDEX
        cases.append((pred.astype(np.uint8), gt.astype(np.uint8), num_classes, thetas[i % 9]))
    return cases


@pytest.mark.parametrize("case", _random_cases())
def test_bf_matches_brute_force(case):
    pred, gt, num_classes, theta = case
    fast = bf_score(pred, gt, num_classes, theta)
    slow = _bf_brute(pred, gt, num_classes, theta)
    assert fast.shape == (num_classes,)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def _two_pixels(offset: tuple[int, int], hw=(720, 960)) -> tuple[np.ndarray, np.ndarray]:
    """(pred, gt) single-pixel hands, the predicted one ``offset`` (dy, dx) from the true."""
    gt = np.zeros(hw, dtype=np.uint8)
    pred = np.zeros_like(gt)
    gt[300, 400] = 1
    pred[300 + offset[0], 400 + offset[1]] = 1
    return pred, gt


@pytest.mark.parametrize(
    "theta, at_theta, just_inside",
    [
        (None, [(9, 0), (0, -9)], [(8, 4), (-4, 8)]),  # 720 x 960: theta 9.0; dilation
        (13.0, [(5, 12), (-12, -5)], [(12, 4), (-11, 6)]),  # 13^2 > 144: distance transform
    ],
)
def test_bf_pixel_at_exactly_theta_is_a_miss_and_just_inside_a_match(theta, at_theta, just_inside):
    # MATLAB's bwbfscore2 matches a boundary pixel when d^2 < theta^2, strictly.
    assert default_bf_threshold(720, 960) == 9.0  # exactly: the diagonal is 1200
    for offset in at_theta:  # d^2 = theta^2: 81 = 9^2 + 0^2, 169 = 5^2 + 12^2
        assert bf_score(*_two_pixels(offset), theta=theta)[1] == 0.0, offset
    for offset in just_inside:  # d^2 = 80 < 81 (8.94 px); 160, 157 < 169
        assert bf_score(*_two_pixels(offset), theta=theta)[1] == 1.0, offset
    limit = 9.0 if theta is None else theta
    assert bf_score(*_two_pixels(at_theta[0]), theta=math.nextafter(limit, 99))[1] == 1.0


def test_bf_720x960_shifted_rectangle_worked_by_hand():
    """A 200 x 300 hand rectangle predicted 9 rows too low, at 720 x 960 (theta = 9.0 px).

    gt hand rows 200..399, cols 300..599; predicted rows 209..408, same cols.

    Hand class. Each boundary is the rectangle's outline: 300 + 300 (top, bottom rows) +
    198 + 198 (side columns without the corners) = 996 px. Predicted boundary against the
    true one:
      - top row (209, c): the true top row is exactly 9 px above (a miss); the true side
        columns (rows 201..398) are |c - 300| or |599 - c| px away, below 9 only for
        c in 300..308 and 591..599 -> 18 matches;
      - side columns (r, 300) and (r, 599), r = 210..407: on the true side column up to
        row 398 (distance 0), and rows 399..407 are 0..8 px below the true bottom row's
        end (399, 300) -> all 2 x 198 match;
      - bottom row (408, c): the nearest true pixel (399, c) is exactly 9 px away -> 0.
      P = (18 + 396) / 996; R is the same by symmetry (the true boundary is the predicted
      one shifted up). hand BF = 414 / 996.
    Background class. Each boundary is the image frame (2 x 960 + 2 x 718 = 3356 px,
    shared, distance 0) plus the 4-connected ring around the rectangle: rows 199 and 400
    at cols 300..599 and cols 299 and 600 at rows 200..399, 1000 px without corners;
    4356 px in all. The predicted ring (rows 208, 409; cols 299, 600 at rows 209..408):
      - top row (208, c): 9 px below the true top ring row (a miss); within 9 px of the
        true ring columns 299/600 only for c in 300..307 and 592..599 -> 16 matches;
      - columns, rows 209..408: rows up to 399 lie on the true ring columns, and rows
        400..408 are sqrt(d^2 + 1) <= sqrt(65) px from (400, 300) / (400, 599) -> 2 x 200;
      - bottom row (409, c): exactly 9 px from (400, c), >= 10 px from the rest -> 0.
      P = R = (3356 + 16 + 400) / 4356 = 3772 / 4356.
    Image BF = mean of the two. With "<= theta" both classes would score 1; shifted by 8
    rows instead of 9 they do under the strict rule too.
    """
    gt = np.zeros((720, 960), dtype=np.uint8)
    gt[200:400, 300:600] = 1
    pred = np.zeros_like(gt)
    pred[209:409, 300:600] = 1
    bf = bf_score(pred, gt)
    assert bf == pytest.approx([3772 / 4356, 414 / 996], abs=1e-12)
    m = SegmentationMetrics()
    m.update(pred, gt)
    assert m.compute()["dataset"]["MeanBFScore"] == pytest.approx((3772 / 4356 + 414 / 996) / 2)
    shifted_8 = np.zeros_like(gt)
    shifted_8[208:408, 300:600] = 1
    assert bf_score(shifted_8, gt) == pytest.approx([1.0, 1.0])


def test_unmatched_methods_agree():
    rng = np.random.default_rng(7)
    src = rng.random((30, 40)) < 0.1
    ref = rng.random((30, 40)) < 0.03
    for k in (0, 1, 2, 5, 13, 81, 200):
        counts = {m: _unmatched(src, ref, k, m) for m in ("dilate", "opencv", "scipy")}
        assert len(set(counts.values())) == 1, (k, counts)
    assert 0 < _unmatched(src, ref, 2, "scipy") < src.sum()
    # one pixel at squared distance 81 (9 px): unmatched when the largest matching squared
    # distance is 80 (theta = 9, strict), matched at 81, by every method
    src, ref = np.zeros((30, 40), bool), np.zeros((30, 40), bool)
    ref[10, 5], src[10, 14] = True, True
    for method in ("dilate", "opencv", "scipy"):
        assert _unmatched(src, ref, 80, method) == 1, method
        assert _unmatched(src, ref, 81, method) == 0, method


@pytest.mark.parametrize("theta", [-1.0, 0.0, math.inf, math.nan])
def test_bf_rejects_a_threshold_that_is_not_positive(theta):
    # strictly closer than 0 px matches nothing, so 0 is refused as MATLAB's bfscore does
    with pytest.raises(ValueError, match="positive"):
        bf_score(np.zeros((3, 3)), np.zeros((3, 3)), theta=theta)


# --------------------------------------------------------------------------- data set


def _three_images():
    """Three 4x4 images whose every metric is worked out by hand below."""
    a_gt = np.zeros((4, 4), dtype=np.uint8)
    a_gt[1:3, 1:3] = 1  # 2x2 hand inside
    a_pred = np.zeros_like(a_gt)
    a_pred[1:3, 1:4] = 1  # 2x3: 2 false-hand pixels
    b_gt = np.zeros((4, 4), dtype=np.uint8)  # no hand
    b_pred = np.zeros_like(b_gt)
    b_pred[1, 1] = 1  # one false-hand pixel
    d = np.zeros((4, 4), dtype=np.uint8)  # hand absent from both
    return [(a_pred, a_gt, "a.jpg", "a.png"), (b_pred, b_gt, "b.jpg", "b.png"), (d, d, "d", "d")]


def test_dataset_metrics_known_answer():
    m = SegmentationMetrics()
    records = [m.update(p, g, image=i, mask=k) for p, g, i, k in _three_images()]
    res = m.compute()

    # A: TN 10, FP 2, TP 4; B: TN 15, FP 1; D: TN 16  ->  CM [[41, 3], [0, 4]], 48 px
    assert res["confusion"] == [[41, 3], [0, 4]]
    np.testing.assert_allclose(res["confusion_normalized"], [[41 / 44, 3 / 44], [0.0, 1.0]])
    # theta < 1 px on 4x4 images, so only coincident boundary pixels match.
    # A hand: true 4 px (2x2), predicted 6 px (2x3), 4 shared: P 2/3, R 1 -> 4/5.
    # A background: true = frame 12 px, predicted = frame minus 2 -> P 1, R 10/12 -> 10/11.
    # B hand: true empty, predicted 1 px -> 0. B background: frame (12) vs frame + (1,2),
    #   (2,1) (14): P 12/14, R 1 -> 12/13.  D: background 1, hand NaN.
    bf_a, bf_b, bf_d = (10 / 11 + 4 / 5) / 2, (12 / 13 + 0) / 2, 1.0
    assert records[0]["class_bf"] == pytest.approx({"background": 10 / 11, "hand": 4 / 5})
    assert [r["bf"] for r in records] == pytest.approx([bf_a, bf_b, bf_d])
    assert [r["accuracy"] for r in records] == pytest.approx([14 / 16, 15 / 16, 1.0])
    assert records[0]["hand_iou"] == pytest.approx(4 / 6)
    assert records[1]["hand_iou"] == 0.0
    assert math.isnan(records[2]["hand_iou"])

    ds = res["dataset"]
    iou_bg, iou_hand = 41 / 44, 4 / 7
    assert ds["GlobalAccuracy"] == pytest.approx(45 / 48)
    assert ds["MeanAccuracy"] == pytest.approx((41 / 44 + 1.0) / 2)
    assert ds["MeanIoU"] == pytest.approx((iou_bg + iou_hand) / 2)
    assert ds["WeightedIoU"] == pytest.approx((44 * iou_bg + 4 * iou_hand) / 48)
    assert ds["MeanBFScore"] == pytest.approx((bf_a + bf_b + bf_d) / 3)
    bg, hand = res["classes"]["background"], res["classes"]["hand"]
    assert bg["Accuracy"] == pytest.approx(41 / 44)
    assert hand["Accuracy"] == pytest.approx(1.0)
    assert bg["IoU"] == pytest.approx(iou_bg)
    assert hand["IoU"] == pytest.approx(iou_hand)
    assert bg["MeanBFScore"] == pytest.approx((10 / 11 + 12 / 13 + 1) / 3)
    assert hand["MeanBFScore"] == pytest.approx((4 / 5 + 0) / 2)  # D's NaN skipped
    assert res["num_images"] == 3
    assert [r["image"] for r in res["images"]] == ["a.jpg", "b.jpg", "d"]


def test_class_absent_everywhere_is_nan_and_skipped_in_means():
    m = SegmentationMetrics()
    gt = np.zeros((5, 6), dtype=np.uint8)
    m.update(gt, gt)
    m.update(gt.copy(), gt.copy())
    res = m.compute()
    hand = res["classes"]["hand"]
    assert math.isnan(hand["Accuracy"]) and math.isnan(hand["IoU"])
    assert math.isnan(hand["MeanBFScore"])
    assert res["dataset"]["MeanAccuracy"] == 1.0
    assert res["dataset"]["MeanIoU"] == 1.0
    assert res["dataset"]["WeightedIoU"] == 1.0
    assert res["dataset"]["MeanBFScore"] == 1.0
    assert math.isnan(res["confusion_normalized"][1][0])


def test_class_predicted_but_never_true_has_nan_accuracy_and_zero_iou():
    m = SegmentationMetrics()
    gt = np.zeros((4, 4), dtype=np.uint8)
    pred = gt.copy()
    pred[0, 0] = 1
    m.update(pred, gt)
    res = m.compute()
    assert math.isnan(res["classes"]["hand"]["Accuracy"])
    assert res["classes"]["hand"]["IoU"] == 0.0
    assert res["dataset"]["MeanAccuracy"] == pytest.approx(15 / 16)  # nanmean: bg only
    assert res["dataset"]["MeanIoU"] == pytest.approx((15 / 16 + 0) / 2)


def test_ignore_pixels_excluded_from_accumulated_metrics():
    gt = np.array([[0, 1, IGNORE_INDEX], [0, 1, IGNORE_INDEX]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [1, 1, 0]], dtype=np.uint8)
    m = SegmentationMetrics()
    rec = m.update(pred, gt)
    assert m.confusion.tolist() == [[1, 1], [0, 2]]
    assert rec["accuracy"] == pytest.approx(3 / 4)
    assert rec["hand_iou"] == pytest.approx(2 / 3)


def test_compute_needs_images_and_update_checks_shapes():
    m = SegmentationMetrics()
    with pytest.raises(ValueError, match="no images"):
        m.compute()
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros((4, 4)), np.zeros((4, 5)))


def test_to_json_writes_nan_as_null():
    m = SegmentationMetrics()
    gt = np.zeros((4, 4), dtype=np.uint8)
    m.update(gt, gt, image="x")
    res = m.compute()
    assert math.isnan(res["classes"]["hand"]["IoU"])  # NaN stays a float in the dict
    data = json.loads(to_json(res))
    assert data["classes"]["hand"]["IoU"] is None
    assert data["images"][0]["hand_iou"] is None
    assert data["dataset"]["GlobalAccuracy"] == 1.0
    assert data["confusion"] == [[16, 0], [0, 0]]


def test_format_metrics_tables_has_names_and_values():
    m = SegmentationMetrics()
    for p, g, i, k in _three_images():
        m.update(p, g, image=i, mask=k)
    res = m.compute()
    text = format_metrics_tables(res)
    for name in (
        "DataSetMetrics",
        "ClassMetrics",
        "GlobalAccuracy",
        "MeanAccuracy",
        "MeanIoU",
        "WeightedIoU",
        "MeanBFScore",
        "Accuracy",
        "IoU",
        "background",
        "hand",
    ):
        assert name in text
    assert f"{45 / 48:.4f}" in text
    assert f"{4 / 7:.4f}" in text
    hand_line = next(line for line in text.splitlines() if line.strip().startswith("hand"))
    assert hand_line.split()[1:] == ["1.0000", f"{4 / 7:.4f}", f"{0.4:.4f}"]
    # NaN prints as NaN
    m2 = SegmentationMetrics()
    m2.update(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    assert "NaN" in format_metrics_tables(m2.compute())


def test_per_image_csv_is_worst_first_with_nan_last(tmp_path):
    m = SegmentationMetrics()
    for p, g, i, k in _three_images():  # hand IoU: a 2/3, b 0, d NaN
        m.update(p, g, image=i, mask=k)
    a_pred, a_gt = _three_images()[0][:2]
    perfect = a_gt.copy()
    m.update(perfect, a_gt, image="e.jpg", mask="e.png")  # hand IoU 1
    path = tmp_path / "per-image.csv"
    write_per_image_csv(m.compute(), path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == ["image", "mask", "accuracy", "hand_iou", "bf"]
    assert [r["image"] for r in rows] == ["b.jpg", "a.jpg", "e.jpg", "d"]
    assert float(rows[1]["hand_iou"]) == pytest.approx(4 / 6, abs=1e-6)
    assert rows[3]["hand_iou"] == ""
    assert float(rows[3]["bf"]) == 1.0


def test_bf_matches_brute_force_on_hand_like_blob_with_large_theta():
    # 120 x 160 (diagonal 200, default theta 1.5); also theta 9 as at 720 x 960, and 13
    rng = np.random.default_rng(11)
    gt = _blobs(rng, 120, 160, 8.0, 0.5)
    pred = np.pad(gt, ((2, 0), (0, 3)), mode="edge")[:120, 3:].copy()  # shifted, no wrap
    pred[_blobs(rng, 120, 160, 2.0, 1.5) == 1] ^= 1
    for theta in (None, 9.0, 13.0):  # 13 px: distance-transform path
        np.testing.assert_allclose(
            bf_score(pred, gt, theta=theta), _bf_brute(pred, gt, 2, theta), rtol=0, atol=1e-12
        )


DATA = Path(__file__).parents[2] / "shared" / "data" / "arsl-bg11"


@pytest.mark.realdata
@pytest.mark.skipif(not (DATA / "masks").is_dir(), reason="needs ../shared/data/arsl-bg11")
def test_real_masks_against_themselves_score_one():
    from PIL import Image

    m = SegmentationMetrics()
    paths = sorted((DATA / "masks").glob("*.png"))
    assert paths
    for p in paths:
        mask = (np.asarray(Image.open(p).convert("L")) >= 128).astype(np.uint8)
        m.update(mask, mask, mask=p.name)
    res = m.compute()
    for value in res["dataset"].values():
        assert value == 1.0
    for metrics in res["classes"].values():
        assert metrics == {"Accuracy": 1.0, "IoU": 1.0, "MeanBFScore": 1.0}
    assert all(r["hand_iou"] == 1.0 and r["bf"] == 1.0 for r in res["images"])
