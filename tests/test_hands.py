"""The hand-aware pipeline: detector stage, refiners, per-hand masks, paste-back geometry.

Tests that run the real MediaPipe models skip when the ``hands`` extra or the model files
are missing (``make test`` installs both, so CI runs them).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.infer import detect
from handseg.infer import pipeline as pipeline_module
from handseg.infer.crops import CROP_SIZE, crop_transform, paste_back, prior, warp_crop
from handseg.infer.detect import Hand
from handseg.infer.hand_models import find_hand_models
from handseg.infer.media import predict_paths
from handseg.infer.pipeline import (
    HandPipeline,
    HandSegmenter,
    box_region,
    load_segmenter,
    split_instances,
)
from handseg.infer.predictor import Predictor
from handseg.infer.refine import color_refine, landmark_mask


def _hand(cx: float, cy: float, scale: float = 20.0, label: str = "right") -> Hand:
    """A synthetic upright hand: wrist at the bottom, fingers pointing up."""
    pts = [(0.0, 0.0)]  # wrist
    for f, dx in enumerate((-1.2, -0.6, 0.0, 0.6, 1.2)):  # thumb .. little finger
        base = 1.0 if f else 0.4
        pts += [(dx * 0.8, -base - 0.5 * k) for k in range(4)]
    xy = np.array([(cx + scale * x, cy + scale * y) for x, y in pts], np.float32)
    lm = np.column_stack([xy, np.zeros(21, np.float32)])
    box = (
        float(xy[:, 0].min()),
        float(xy[:, 1].min()),
        float(xy[:, 0].max()),
        float(xy[:, 1].max()),
    )
    return Hand(lm, box, label, 0.9, 0.95, 0.99)


class FakeDetector:
    """Returns the hands it was given, whatever the photo (the detector's interface)."""

    def __init__(self, hands: list[Hand]) -> None:
        self.found = hands

    def __call__(self, rgb, max_hands=2, **options):
        return self.found[:max_hands]


def test_box_region_is_the_enlarged_landmark_box():
    hand = _hand(50, 60, scale=10)
    region = box_region((120, 100), [hand], margin=0.0)
    ys, xs = np.nonzero(region)
    x0, y0, x1, y1 = hand.box
    assert xs.min() == int(np.floor(x0)) and xs.max() == int(np.ceil(x1))
    assert ys.min() == int(np.floor(y0)) and ys.max() == int(np.ceil(y1))
    assert region[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].all()  # a full rectangle
    wider = box_region((120, 100), [hand], margin=0.5)
    assert wider.sum() > region.sum() and (wider | region).sum() == wider.sum()


def test_network_refiner_keeps_hand_pixels_exactly_where_the_boxes_are():
    """Paste-back: the network's mask survives inside the hand boxes, nowhere else."""
    hands = [_hand(30, 70, scale=8), _hand(110, 70, scale=8)]
    rng = np.random.default_rng(0)
    net_mask = (rng.random((100, 150)) > 0.5).astype(np.uint8)
    pipe = HandPipeline(
        refine="network", network=lambda rgb: net_mask, detector=FakeDetector(hands)
    )
    out = pipe(np.zeros((100, 150, 3), np.uint8))
    region = box_region((100, 150), hands)
    np.testing.assert_array_equal(out.mask, net_mask * region)
    assert len(out.instances) == 2 and len(out.hands) == 2


def test_no_hand_found_gives_an_empty_mask_not_a_guess():
    pipe = HandPipeline(
        refine="network",
        network=lambda rgb: np.ones(rgb.shape[:2], np.uint8),
        detector=FakeDetector([]),
    )
    out = pipe(np.full((40, 60, 3), 200, np.uint8))
    assert out.mask.shape == (40, 60) and out.mask.sum() == 0
    assert out.hands == [] and out.instances == []


def test_instances_split_the_mask_between_hands_without_overlap():
    left, right = _hand(30, 70, scale=8, label="left"), _hand(110, 70, scale=8)
    mask = landmark_mask((100, 150), [left, right]) > 0
    parts = split_instances(mask.astype(np.uint8), [left, right])
    assert len(parts) == 2
    assert not (parts[0] & parts[1]).any()
    np.testing.assert_array_equal(parts[0] | parts[1], mask)
    # each instance holds its own hand: the left one lies left of the middle
    assert np.nonzero(parts[0])[1].max() < 75 < np.nonzero(parts[1])[1].min()


def test_instances_match_the_nearest_landmark_of_the_whole_frame():
    """The split runs on the box around the mask and the landmarks only; its owners equal a
    whole-frame nearest-landmark split (3x3 chamfer distance, as computed here)."""
    rng = np.random.default_rng(1)
    h, w = 120, 200
    for _ in range(20):
        hands = [_hand(rng.uniform(-20, w + 20), rng.uniform(-20, h + 20), scale=rng.uniform(3, 9))
                 for _ in range(int(rng.integers(2, 4)))]  # fmt: skip
        mask = np.zeros((h, w), np.uint8)
        y, x = rng.integers(0, h - 30), rng.integers(0, w - 40)
        mask[y : y + 30, x : x + 40] = 1
        dist = []
        for hand in hands:
            seeds = np.full((h, w), 255, np.uint8)
            pts = np.round(hand.landmarks[:, :2]).astype(int)
            ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
            if not ok.any():
                x0, y0, x1, y1 = hand.box
                seeds[
                    int(np.clip((y0 + y1) / 2, 0, h - 1)), int(np.clip((x0 + x1) / 2, 0, w - 1))
                ] = 0
            seeds[pts[ok, 1], pts[ok, 0]] = 0
            dist.append(cv2.distanceTransform(seeds, cv2.DIST_L2, 3))
        owner = np.argmin(dist, 0)
        parts = split_instances(mask, hands)
        for i, part in enumerate(parts):
            np.testing.assert_array_equal(part, (mask > 0) & (owner == i))


def test_landmark_mask_covers_the_palm_and_the_finger_tips():
    hand = _hand(60, 80, scale=12)
    mask = landmark_mask((120, 120), [hand]) > 0
    for i in (0, 5, 9, 13, 17, 4, 8, 12, 16, 20):  # wrist, knuckles and tips
        x, y = np.round(hand.landmarks[i, :2]).astype(int)
        assert mask[y, x], i
    assert not mask[0, 0] and not mask[-1, -1]


def test_hand_json_schema():
    doc = _hand(30, 40).to_json()
    assert set(doc) == {"box", "handedness", "handedness_score", "score", "presence", "landmarks"}
    assert len(doc["box"]) == 4 and doc["handedness"] in ("left", "right")
    assert np.asarray(doc["landmarks"]).shape == (21, 3)


def test_unknown_refiner_and_network_without_model_are_clear_errors():
    with pytest.raises(HandsegError, match="unknown refiner"):
        HandPipeline(refine="magic", detector=FakeDetector([]))
    with pytest.raises(HandsegError, match="needs a trained model"):
        HandPipeline(refine="network", detector=FakeDetector([]))


def test_missing_extra_is_a_one_line_error_with_the_install_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name.startswith("ai_edge_litert"):
            raise ImportError("No module named 'ai_edge_litert'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    with pytest.raises(HandsegError, match=r"pip install 'handseg\[hands\]'") as err:
        detect._interpreter("x.tflite", 1)
    assert "\n" not in str(err.value)


def test_missing_model_files_say_how_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDSEG_HAND_MODELS", str(tmp_path))
    with pytest.raises(HandsegError, match="handseg fetch-hand-models"):
        find_hand_models()


def _detector_or_skip():
    pytest.importorskip("ai_edge_litert", reason="the 'hands' extra is not installed")
    try:
        find_hand_models()
    except HandsegError as exc:
        pytest.skip(str(exc))
    return detect.HandDetector(num_threads=1)


def test_real_detector_finds_nothing_on_hand_free_images():
    detector = _detector_or_skip()
    rng = np.random.default_rng(0)
    blank = np.full((240, 320, 3), 128, np.uint8)
    noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    for image in (blank, noise):
        assert detector(image) == []
        assert HandPipeline(refine="grabcut", detector=detector)(image).mask.sum() == 0


def test_predict_folder_with_instances_writes_one_mask_per_hand_and_json(tmp_path):
    hands = [_hand(30, 70, scale=8, label="left"), _hand(110, 70, scale=8)]
    seg = HandSegmenter(HandPipeline(refine="landmarks", detector=FakeDetector(hands)))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((100, 150, 3), 90, np.uint8)).save(photos / f"{name}.png")
    records = predict_paths(
        seg, sorted(photos.iterdir()), tmp_path / "out", instances=True, progress=False
    )
    assert [r["ok"] for r in records] == [True, True]
    doc = json.loads((tmp_path / "out" / "a_hands.json").read_text())
    assert doc["image_size"] == [100, 150] and len(doc["hands"]) == 2
    first = doc["hands"][0]
    assert first["handedness"] == "left" and first["mask"] == "a_hand0.png"
    whole = np.asarray(Image.open(tmp_path / "out" / "a_mask.png")) > 0
    parts = [np.asarray(Image.open(tmp_path / "out" / f"a_hand{i}.png")) > 0 for i in (0, 1)]
    np.testing.assert_array_equal(parts[0] | parts[1], whole)
    assert not (parts[0] & parts[1]).any()


def test_instances_without_the_detector_is_a_clear_error(tmp_path):
    class Plain:
        def predict_many(self, images, batch_size=4):
            yield from (np.zeros(i.shape[:2], np.uint8) for i in images)

    with pytest.raises(HandsegError, match="--detector mediapipe"):
        predict_paths(Plain(), [], tmp_path, instances=True)


def test_video_frames_use_the_real_time_settings():
    seg = HandSegmenter(HandPipeline(refine="grabcut", detector=FakeDetector([])))
    video = seg.for_video()
    assert (video.pipeline.mode, video.pipeline.refine) == ("fast", "color")
    assert video.pipeline.tracking and not seg.pipeline.tracking
    assert video.pipeline.detector is seg.pipeline.detector


def _model_recording(model_file, tmp_path, **pipeline) -> Path:
    """A copy of ``model_file`` whose training options record a hand pipeline."""
    obj = torch.load(model_file, weights_only=True)
    obj["train_config"] = dict(obj.get("train_config") or {}) | pipeline
    path = tmp_path / "model.pt"
    torch.save(obj, path)
    return path


def test_a_model_brings_its_recorded_pipeline(model_file, tmp_path, monkeypatch):
    path = _model_recording(model_file, tmp_path, detector="mediapipe", refine="color")
    monkeypatch.setattr(pipeline_module, "HandDetector", lambda num_threads=None: FakeDetector([]))
    seg = load_segmenter(path, device="cpu")
    assert isinstance(seg, HandSegmenter)
    assert (seg.pipeline.refine, seg.pipeline.mode) == ("color", "accurate")
    # flags override what the model recorded
    assert isinstance(load_segmenter(path, detector="none", device="cpu"), Predictor)
    assert load_segmenter(path, refine="network", device="cpu").pipeline.network is not None


def test_older_models_predict_as_before(model_file):
    assert isinstance(load_segmenter(model_file, device="cpu"), Predictor)


def test_missing_extra_falls_back_to_the_network_with_a_warning(
    model_file, tmp_path, monkeypatch, caplog
):
    path = _model_recording(model_file, tmp_path, detector="mediapipe")

    def no_detector(num_threads=None):
        raise HandsegError(detect.INSTALL_HINT)

    monkeypatch.setattr(pipeline_module, "HandDetector", no_detector)
    with caplog.at_level("WARNING"):
        seg = load_segmenter(path, device="cpu")
    assert isinstance(seg, Predictor)
    assert "pip install 'handseg[hands]'" in caplog.text and "whole-image network" in caplog.text
    with pytest.raises(HandsegError, match="handseg\\[hands\\]"):  # asked for explicitly
        load_segmenter(path, detector="mediapipe", device="cpu")


def test_cli_errors_are_one_line(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["predict", str(image), "--out", str(tmp_path / "o"), "--detector", "none"]) == 2
    assert "needs a trained model" in capsys.readouterr().err


def test_cli_detector_on_a_hand_free_photo_writes_an_empty_mask(tmp_path, capsys):
    _detector_or_skip()
    image = tmp_path / "wall.png"
    Image.fromarray(np.full((120, 160, 3), (200, 180, 150), np.uint8)).save(image)
    out = tmp_path / "out"
    assert (
        main(["predict", str(image), "--out", str(out), "--detector", "mediapipe", "--instances"])
        == 0
    )
    assert not np.asarray(Image.open(out / "wall_mask.png")).any()
    assert json.loads((out / "wall_hands.json").read_text())["hands"] == []
    # the user hears which photos came out empty, and what searches harder
    said = capsys.readouterr().out
    assert "no hand found in 1 photo(s) (wall.png)" in said
    assert "--detector-mode thorough" in said
    main(["predict", str(image), "--out", str(out), "--detector", "mediapipe",
          "--detector-mode", "thorough"])  # fmt: skip
    said = capsys.readouterr().out
    assert "no hand found in 1 photo(s)" in said and "searches harder" not in said


def test_color_refiner_follows_the_hand_colour_not_the_skeleton():
    """A skin-coloured hand, drawn wider than the skeleton mask, on a blue wall: the colour
    model sampled at the landmarks recovers the painted hand, not the skeleton's outline."""
    hand = _hand(80, 110, scale=14)
    painted = landmark_mask((160, 160), [hand], finger_width=0.35, palm_pad=0.3) > 0
    image = np.zeros((160, 160, 3), np.uint8)
    image[:] = (40, 60, 170)
    image[painted] = (205, 150, 120)
    found = color_refine(image, [hand]) > 0
    iou = (found & painted).sum() / (found | painted).sum()
    skeleton = landmark_mask((160, 160), [hand]) > 0
    assert iou > 0.95
    assert iou > (skeleton & painted).sum() / (skeleton | painted).sum()
    assert not found[:, :20].any()  # nothing on the far wall


def test_crops_are_canonical_and_paste_back_where_they_came_from():
    """Crop -> segment -> paste back: a 'segmenter' that returns the crop's own mask puts
    it back exactly where it was; image and mask stay aligned under any jitter; a hand
    turned 90 degrees gives the same upright crop."""
    hand = _hand(120, 140, scale=12)
    shape = (240, 260)
    mask = landmark_mask(shape, [hand])
    image = np.zeros((*shape, 3), np.uint8)
    image[mask > 0] = (200, 150, 120)
    for jitter in ((0, 0, 0, 0), (0.05, -0.04, 0.1, 0.3)):
        m = crop_transform(hand.landmarks, jitter=jitter)
        crop_img, crop_mask = warp_crop(image, m), warp_crop(mask, m, nearest=True)
        # aligned: the crop's mask is where the crop's image is skin-coloured
        skin = crop_img[..., 0] > 100
        assert ((crop_mask > 0) == skin).mean() > 0.98
        back = paste_back((crop_mask > 0).astype(np.float32), m, shape) > 0.5
        assert ((back > 0) == (mask > 0)).mean() > 0.995
    # the crop holds the whole hand with the wrist at the bottom, fingers up
    m = crop_transform(hand.landmarks)
    lm = hand.landmarks[:, :2] @ m[:, :2].T + m[:, 2]
    assert (lm >= 0).all() and (lm < CROP_SIZE).all()
    assert lm[0, 1] > lm[12, 1]  # wrist below the middle finger tip
    turned = hand.landmarks.copy()
    turned[:, :2] = (hand.landmarks[:, :2] - 120) @ np.array([[0, -1], [1, 0]]).T + 120
    m2 = crop_transform(turned)
    np.testing.assert_allclose(turned[:, :2] @ m2[:, :2].T + m2[:, 2], lm, atol=1e-6)
    assert prior(hand, m).shape == (CROP_SIZE, CROP_SIZE)
