"""Evaluation: ``handseg evaluate`` against hand-computed answers, on a training run's split,
on the real masks against themselves, and ``handseg compare``'s figure and colours."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import handseg
from handseg.app.cli import main
from handseg.core.config import resolve_config
from handseg.core.constants import CLASS_NAMES, IMAGENET_MEAN, IMAGENET_STD
from handseg.core.errors import HandsegError
from handseg.data.pairs import find_pairs
from handseg.data.split import load_split
from handseg.eval.evaluate import compare, evaluate_mask_folders, evaluate_model
from handseg.eval.metrics import to_json
from handseg.model.checkpoint import save_model_file
from handseg.model.network import HandSegNet
from handseg.train.run import train

DATA = Path(__file__).parents[2] / "shared" / "data" / "arsl-bg11"

WHITE, BLACK, GREEN, MAGENTA = [255, 255, 255], [0, 0, 0], [0, 255, 0], [255, 0, 255]


def _png(mask01: np.ndarray, path: Path) -> Path:
    """Write a {0, 1} mask as a 0/255 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask01 > 0).astype(np.uint8) * 255).save(path)
    return path


# --- known answer ----------------------------------------------------------------------------
#
# Three 10 x 10 images. With a 10 x 10 image the BF threshold is 0.75 % of sqrt(200) = 0.106
# px, so boundary pixels match only where they coincide and BF = 2 * common / (n_pred + n_true).
#   a: true hand rows 0-4 (50 px), predicted rows 0-5 (60 px).
#      CM [[40, 10], [0, 50]]; hand IoU 50/60.
#      hand boundary: true 26 px, predicted 28, common 18 -> BF 36/54 = 2/3;
#      background boundary: true 26, predicted 24, common 16 -> BF 32/50 = 0.64.
#   b: no true hand, predicted a 2 x 2 square in the middle (rows/cols 4-5).
#      CM [[96, 4], [0, 0]]; hand IoU 0 / 4 = 0; hand BF 0 (true boundary empty);
#      background: true = the frame (36), predicted = frame + 8 around the hole -> 72/80 = 0.9.
#   c: true hand = left half, predicted the same: CM [[50, 0], [0, 50]], every BF 1.
# Set: CM [[186, 14], [0, 100]] over 300 px.


def _known_masks() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    z = np.zeros((10, 10), np.uint8)
    a_gt, a_pred = z.copy(), z.copy()
    a_gt[:5] = 1
    a_pred[:6] = 1
    b_gt, b_pred = z.copy(), z.copy()
    b_pred[4:6, 4:6] = 1
    c_gt = z.copy()
    c_gt[:, :5] = 1
    return {"a": (a_gt, a_pred), "b": (b_gt, b_pred), "c": (c_gt, c_gt.copy())}


EXPECTED_DATASET = {
    "GlobalAccuracy": 286 / 300,
    "MeanAccuracy": (186 / 200 + 1) / 2,
    "MeanIoU": (186 / 200 + 100 / 114) / 2,
    "WeightedIoU": (200 * 186 / 200 + 100 * 100 / 114) / 300,
    "MeanBFScore": ((2 / 3 + 0.64) / 2 + 0.45 + 1) / 3,
}
EXPECTED_CLASSES = {
    "background": {"Accuracy": 0.93, "IoU": 0.93, "MeanBFScore": (0.64 + 0.9 + 1) / 3},
    "hand": {"Accuracy": 1.0, "IoU": 100 / 114, "MeanBFScore": (2 / 3 + 0 + 1) / 3},
}


@pytest.fixture()
def known_folders(tmp_path) -> tuple[Path, Path]:
    """gt/{a,b,c}.png and pred/{a,b,c}_mask.png with {a,b,c}_overlay.jpg beside them (as
    ``handseg predict`` writes them); the prediction for ``a`` is stored at twice the size,
    and pred/ holds a stray text file."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for name, (gt, pred) in _known_masks().items():
        _png(gt, gt_dir / f"{name}.png")
        if name == "a":
            pred = np.kron(pred, np.ones((2, 2), np.uint8))  # 20 x 20, same aspect
        _png(pred, pred_dir / f"{name}_mask.png")
        photo = np.full((*pred.shape, 3), (90, 60, 30), np.uint8)
        Image.fromarray(photo).save(pred_dir / f"{name}_overlay.jpg")
    (pred_dir / "log.txt").write_text("not a mask")
    return pred_dir, gt_dir


def test_cli_evaluate_pred_masks_agrees_with_the_hand_computed_answer(
    known_folders, tmp_path, capsys, caplog
):
    pred_dir, gt_dir = known_folders
    out = tmp_path / "report"
    with caplog.at_level(logging.WARNING, logger="handseg"):
        rc = main(
            ["evaluate", "--pred-masks", str(pred_dir), "--masks", str(gt_dir), "--out", str(out)]
        )
    assert rc == 0
    assert "log.txt" in caplog.text  # skipped with a warning
    printed = capsys.readouterr().out
    assert "GlobalAccuracy" in printed and "ClassMetrics" in printed and str(out) in printed
    for name in ("metrics.json", "per-image.csv", "confusion.png"):
        assert (out / name).is_file()

    m = json.loads((out / "metrics.json").read_text())
    assert m["confusion"] == [[186, 14], [0, 100]]
    for key, value in EXPECTED_DATASET.items():
        assert m["dataset"][key] == pytest.approx(value), key
    for cls, values in EXPECTED_CLASSES.items():
        for key, value in values.items():
            assert m["classes"][cls][key] == pytest.approx(value), (cls, key)
    images = {r["image"]: r for r in m["images"]}
    assert set(images) == {"a_mask.png", "b_mask.png", "c_mask.png"}
    assert images["a_mask.png"]["mask"] == "a.png"
    assert images["a_mask.png"]["hand_iou"] == pytest.approx(50 / 60)
    assert images["a_mask.png"]["accuracy"] == pytest.approx(0.9)
    assert images["b_mask.png"]["bf"] == pytest.approx(0.45)

    with open(out / "per-image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["b_mask.png", "a_mask.png", "c_mask.png"]  # worst first
    assert float(rows[1]["hand_iou"]) == pytest.approx(50 / 60, abs=1e-6)


def test_evaluate_pred_masks_with_another_aspect_names_the_file(known_folders):
    pred_dir, gt_dir = known_folders
    _png(np.ones((10, 14), np.uint8), pred_dir / "c_mask.png")
    with pytest.raises(HandsegError, match="c_mask.png"):
        evaluate_mask_folders(pred_dir, gt_dir, progress=False)


def test_evaluate_pairs_a_mask_suffix_on_either_side(known_folders, tmp_path):
    # ground truth named a_mask.png, predictions named a.png (another tool's output)
    pred_dir, gt_dir = known_folders
    gt2, pred2 = tmp_path / "gt2", tmp_path / "pred2"
    gt2.mkdir(), pred2.mkdir()
    for name in "abc":
        shutil.copy(gt_dir / f"{name}.png", gt2 / f"{name}_mask.png")
        shutil.copy(pred_dir / f"{name}_mask.png", pred2 / f"{name}.png")
    r = evaluate_mask_folders(pred2, gt2, progress=False)
    assert [(i["image"], i["mask"]) for i in r["images"]] == [
        (f"{n}.png", f"{n}_mask.png") for n in "abc"
    ]
    assert r["confusion"] == [[186, 14], [0, 100]]


def test_evaluate_pred_masks_names_orphans_as_predictions(known_folders):
    # an overlay without its mask is not handseg predict's output: it must be paired
    pred_dir, gt_dir = known_folders
    (pred_dir / "c_mask.png").unlink()
    with pytest.raises(HandsegError) as err:
        evaluate_mask_folders(pred_dir, gt_dir, progress=False)
    msg = str(err.value)
    assert "1 ground-truth mask(s) without a prediction: c.png" in msg
    assert "1 prediction(s) without a ground-truth mask: c_overlay.jpg" in msg


def test_evaluate_a_folder_against_itself_is_perfect(known_folders):
    _, gt_dir = known_folders
    r = evaluate_mask_folders(gt_dir, gt_dir, progress=False)
    assert r["dataset"]["GlobalAccuracy"] == 1.0 and r["classes"]["hand"]["IoU"] == 1.0
    assert [i["image"] for i in r["images"]] == [i["mask"] for i in r["images"]]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "say what to evaluate"),
        (["--pred-masks", "p"], "needs --masks"),
        (["--model", "m.pt", "--pred-masks", "p", "--masks", "g"], "not both"),
        (["--pred-masks", "p", "--masks", "g", "--split", "test"], "go with --model"),
    ],
)
def test_cli_evaluate_missing_or_conflicting_arguments(argv, message, capsys):
    assert main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


# --- real data -------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.skipif(not (DATA / "masks").is_dir(), reason="needs ../shared/data/arsl-bg11")
def test_real_masks_against_themselves_score_one(tmp_path):
    # The masks are RGB 0/250 with anti-aliased edges; a copy in another folder pairs by name.
    copy = tmp_path / "copy"
    shutil.copytree(DATA / "masks", copy)
    out = tmp_path / "report"
    assert main(["evaluate", "--pred-masks", str(copy), "--masks", str(DATA / "masks"),
                 "--out", str(out)]) == 0  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["images"]) == 30
    assert all(r["image"] == r["mask"] for r in m["images"])
    for key in ("GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore"):
        assert m["dataset"][key] == 1.0, key
    for cls in CLASS_NAMES:
        assert m["classes"][cls] == {"Accuracy": 1.0, "IoU": 1.0, "MeanBFScore": 1.0}
    assert all(r["accuracy"] == r["hand_iou"] == r["bf"] == 1.0 for r in m["images"])


# --- a model ---------------------------------------------------------------------------------


def _tiny_data(root: Path, n: int = 10) -> tuple[Path, Path]:
    """n photos (64 x 80) of a bright blob on a darker textured background, with masks."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:80]
    for i in range(n):
        cy, cx, r = rng.integers(20, 44), rng.integers(20, 60), rng.integers(8, 16)
        hand = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
        img = rng.integers(20, 90, (64, 80, 3))
        img[hand == 1] = (220, 180, 150) + rng.integers(-15, 15, (int(hand.sum()), 3))
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"img{i}.png")
        _png(hand, root / "masks" / f"img{i}.png")
    return root / "images", root / "masks"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A training run trained for one epoch on 10 tiny images (6 train / 2 val / 2 test)."""
    root = tmp_path_factory.mktemp("tiny")
    images, masks = _tiny_data(root / "data")
    cfg = resolve_config(
        {"images": str(images), "masks": str(masks), "out": str(root / "run"),
         "image_size": (64, 80), "batch_size": 4, "backbone_weights": "none", "workers": 0,
         "device": "cpu", "epochs": 1, "preset": "scratch", "evaluate_test": False}
    )  # fmt: skip
    return train(cfg, progress=False)


def test_cli_evaluate_split_of_a_training_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", str(tiny_run / "model.pt"), "--split", "test",
               "--run", str(tiny_run), "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "DataSetMetrics (2 images)" in printed and "hand IoU" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["dataset"]) >= {
        "GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore"
    }  # fmt: skip
    for cls in CLASS_NAMES:
        assert set(m["classes"][cls]) >= {"Accuracy", "IoU", "MeanBFScore"}
    cm = np.asarray(m["confusion"])
    assert cm.shape == (2, 2) and cm.sum() == 2 * 64 * 80
    test_names = [image.name for image, _ in load_split(tiny_run / "split.json")["test"]]
    assert sorted(r["image"] for r in m["images"]) == sorted(test_names)
    for r in m["images"]:
        assert set(r) >= {"image", "mask", "accuracy", "hand_iou", "bf"}
        assert 0.0 <= r["accuracy"] <= 1.0


def test_predict_then_evaluate_pred_masks_equals_evaluating_the_model(tiny_run, tmp_path):
    # `handseg predict` writes <stem>_mask.png and <stem>_overlay.jpg into one folder, and
    # that folder scored with --pred-masks gives the numbers of evaluating the model on the
    # photos directly (both at the mask's resolution), on all 10 images. One inference
    # path for both (PyTorch fp32): "auto" may pick int8 calibrated on the training images.
    data = tiny_run.parent / "data"
    pred, out = tmp_path / "pred", tmp_path / "eval"
    assert main(["predict", "--model", str(tiny_run / "model.pt"), str(data / "images"),
                 "--out", str(pred), "--device", "cpu", "--runtime", "torch",
                 "--precision", "fp32"]) == 0  # fmt: skip
    assert len(list(pred.glob("*_overlay.jpg"))) == len(list(pred.glob("*_mask.png"))) == 10
    assert main(["evaluate", "--pred-masks", str(pred), "--masks", str(data / "masks"),
                 "--out", str(out)]) == 0  # fmt: skip
    via_files = json.loads((out / "metrics.json").read_text())

    model = handseg.load_model(
        tiny_run / "model.pt", device="cpu", runtime="torch", precision="fp32"
    )
    pairs = find_pairs(data / "images", data / "masks")
    direct = json.loads(to_json(evaluate_model(model, pairs, progress=False)))
    assert via_files["num_images"] == direct["num_images"] == 10
    assert via_files["confusion"] == direct["confusion"]
    assert via_files["dataset"] == pytest.approx(direct["dataset"], abs=1e-12)
    for cls in CLASS_NAMES:
        assert via_files["classes"][cls] == pytest.approx(direct["classes"][cls], abs=1e-12)
    for a, b in zip(via_files["images"], direct["images"]):
        assert (a["image"], a["mask"]) == (b["image"].replace(".png", "_mask.png"), b["mask"])
        for key in ("accuracy", "hand_iou", "bf"):
            assert a[key] == pytest.approx(b[key], abs=1e-12, nan_ok=True), key


def test_a_predict_folder_with_instances_and_a_manifest_scores_its_masks_only(tmp_path, caplog):
    # `predict --instances` (and a collection) also write a_hand<i>.png, a_hands.json and
    # manifest.csv beside a_mask.png: scoring the folder reads the masks only, says what it
    # left out, and does not call predict's own JSON "non-image files".
    rng = np.random.default_rng(0)
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    masks = {}
    for stem in ("a", "b"):
        m = (rng.random((24, 32)) > 0.5).astype(np.uint8) * 255
        g = (rng.random((24, 32)) > 0.5).astype(np.uint8) * 255
        masks[stem] = (m, g)
        Image.fromarray(m).save(pred / f"{stem}_mask.png")
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(pred / f"{stem}_overlay.jpg")
        for i in range(2):  # per-hand masks that differ from the mask: must not be scored
            Image.fromarray(255 - m).save(pred / f"{stem}_hand{i}.png")
        (pred / f"{stem}_hands.json").write_text('{"hands": []}')
        Image.fromarray(g).save(gt / f"{stem}.png")
    (pred / "manifest.csv").write_text("input,status\n")
    (pred / "notes.txt").write_text("a user's own file")
    with caplog.at_level(logging.INFO):
        r = evaluate_mask_folders(pred, gt, progress=False)
    assert r["num_images"] == 2
    assert sorted(x["image"] for x in r["images"]) == ["a_mask.png", "b_mask.png"]
    tp = sum(int(((m > 0) & (g > 0)).sum()) for m, g in masks.values())
    fp = sum(int(((m > 0) & (g == 0)).sum()) for m, g in masks.values())
    fn = sum(int(((m == 0) & (g > 0)).sum()) for m, g in masks.values())
    assert r["classes"]["hand"]["IoU"] == pytest.approx(tp / (tp + fp + fn), abs=1e-12)
    assert "left out 6 overlay(s) and per-hand mask(s)" in caplog.text
    skipped = [rec.getMessage() for rec in caplog.records if "non-image" in rec.getMessage()]
    assert skipped and "notes.txt" in skipped[0]
    assert "hands.json" not in skipped[0] and "manifest" not in skipped[0]


# --- compare ---------------------------------------------------------------------------------


class _FixedPredictor:
    """Stands in for a model: predicts hand in the left half at whatever size is asked."""

    classes = CLASS_NAMES

    def __init__(self) -> None:
        self.asked: list[tuple[int, int] | None] = []

    def predict(self, image, *, out_size=None):
        self.asked.append(out_size)
        h, w = out_size or np.asarray(image).shape[:2]
        m = np.zeros((h, w), np.uint8)
        m[:, : w // 2] = 1
        return m


@pytest.mark.parametrize("split_errors", [False, True])
def test_compare_colours_scores_and_figure(tmp_path, split_errors):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(photo)
    gt = np.zeros((20, 30), np.uint8)  # the mask is half the photo's size, same aspect
    gt[:10, :] = 1  # true hand: top half
    mask = _png(gt, tmp_path / "gt.png")
    fake = _FixedPredictor()
    out = tmp_path / "fig" / "compare.png"
    r = compare(fake, photo, mask, out, split_errors=split_errors)
    assert fake.asked == [(20, 30)]  # predicted at the mask's resolution
    assert out.is_file() and out.stat().st_size > 0
    comp = r["comparison"]
    assert comp.shape == (20, 30, 3)
    assert comp[2, 2].tolist() == WHITE  # top-left: hand found
    assert comp[15, 25].tolist() == BLACK  # bottom-right: background correct
    assert comp[15, 2].tolist() == GREEN  # bottom-left: false hand
    assert comp[2, 25].tolist() == (MAGENTA if split_errors else GREEN)  # top-right: missed
    assert r["hand_iou"] == pytest.approx(150 / 450)  # 10x15 found / (300 + 300 - 150)
    assert r["accuracy"] == pytest.approx(0.5)
    assert 0.0 < r["bf"] < 1.0


def test_cli_compare_prints_scores_and_writes_the_figure(tmp_path, capsys):
    torch.manual_seed(0)
    model = save_model_file(
        tmp_path / "m.pt", HandSegNet(), classes=CLASS_NAMES,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(64, 80),
    )  # fmt: skip
    photo = tmp_path / "p.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)).save(photo)
    gt = np.zeros((48, 64), np.uint8)
    gt[10:30, 20:40] = 1
    mask = _png(gt, tmp_path / "g.png")
    out = tmp_path / "c.png"
    rc = main(["compare", "--model", str(model), "--image", str(photo), "--mask", str(mask),
               "--out", str(out), "--split-errors", "--device", "cpu"])  # fmt: skip
    assert rc == 0 and out.is_file()
    printed = capsys.readouterr().out
    pred = handseg.load_model(model).predict(photo)
    inter, union = np.sum((pred == 1) & (gt == 1)), np.sum((pred == 1) | (gt == 1))
    assert f"hand IoU {inter / union:.4f}" in printed
    # a mask whose aspect differs from the photo's is refused, naming it
    _png(np.zeros((48, 48), np.uint8), tmp_path / "square.png")
    rc = main(["compare", "--model", str(model), "--image", str(photo), "--mask",
               str(tmp_path / "square.png"), "--out", str(out)])  # fmt: skip
    assert rc == 2 and "square.png" in capsys.readouterr().err
