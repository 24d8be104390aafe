"""The hand-pretrained pipeline: MediaPipe's networks converted to PyTorch, the crop
segmenter, its training preset and its place in predict / serve / collections.

The conversion tests run the real ``.tflite`` files against LiteRT (``make test`` installs
the ``hands`` extra and fetches the files, so CI runs them); they skip only where those
are missing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.core.imaging import read_image
from handseg.infer import pipeline as pipeline_module
from handseg.infer.crop_segmenter import CropSegmenter
from handseg.infer.detect import Hand
from handseg.infer.hand_models import LANDMARK_MODEL, PALM_MODEL, SHA256, find_hand_models
from handseg.infer.pipeline import HandPipeline, HandSegmenter, load_segmenter
from handseg.infer.predictor import load_model
from handseg.model.checkpoint import read_model_file, save_model_file
from handseg.model.crop_net import CropNetConfig, CropSegNet
from handseg.model.tflite_net import TFLiteNet, feature_taps, read_tflite
from handseg.synth.hand_crops import HandCropDataset, anchors_for

LANDMARK_ATOL = 2e-3
"""Landmark outputs (pixels of the 224 crop, values up to ~224): PyTorch vs LiteRT."""
SCORE_ATOL = 1e-5
"""Presence / handedness / palm scores (after the sigmoid, or raw logits up to ~30)."""


def _models() -> tuple[Path, Path]:
    pytest.importorskip("ai_edge_litert", reason="needs the 'hands' extra")
    pytest.importorskip("tflite", reason="needs the 'hands' extra")
    try:
        return find_hand_models()
    except HandsegError as exc:
        pytest.skip(str(exc))


def _litert(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x[None].astype(np.float32))
    it.invoke()
    return {o["name"]: it.get_tensor(o["index"]) for o in it.get_output_details()}


def _real_crops(shared_data: Path, size: int, n: int = 4) -> list[np.ndarray]:
    """Square crops of real ArSL photos around their hands' masks, (size, size, 3) in [0, 1]."""
    import cv2

    from handseg.core.imaging import fit_mask_to_image, read_mask
    from handseg.synth.hand_crops import mask_boxes

    out = []
    images = sorted((shared_data / "images").iterdir())[:n]
    masks = sorted((shared_data / "masks").iterdir())[:n]
    for ip, mp in zip(images, masks):
        rgb = read_image(ip)
        mask = fit_mask_to_image(read_mask(mp), rgb.shape[:2])
        x0, y0, x1, y1 = mask_boxes(mask)[0]
        c, side = ((x0 + x1) // 2, (y0 + y1) // 2), int(max(x1 - x0, y1 - y0) * 1.6)
        crop = rgb[
            max(0, c[1] - side // 2) : c[1] + side // 2, max(0, c[0] - side // 2) : c[0] + side // 2
        ]
        out.append(cv2.resize(crop, (size, size)).astype(np.float32) / 255.0)
    return out


@pytest.mark.parametrize("name,size", [(LANDMARK_MODEL, 224), (PALM_MODEL, 192)])
def test_converted_networks_equal_litert_on_real_hand_crops(name, size, shared_data):
    palm, landmark = _models()
    path = {LANDMARK_MODEL: landmark, PALM_MODEL: palm}[name]
    program = read_tflite(path, SHA256[name])
    net = TFLiteNet(program).eval()
    for x in _real_crops(shared_data, size):
        ref = _litert(path, x)
        with torch.inference_mode():
            got = net(torch.from_numpy(x).permute(2, 0, 1)[None])
        assert len(got) == len(ref)
        for tid, value in zip(program.outputs, got):
            r = ref[program.names[tid]]
            tol = LANDMARK_ATOL if r.size == 63 or r.shape[-1] == 18 else SCORE_ATOL * 10
            np.testing.assert_allclose(value.numpy().reshape(r.shape), r, atol=tol, rtol=0)


def test_the_landmark_encoder_has_five_scales_and_survives_a_model_file(tmp_path):
    _, landmark = _models()
    program = read_tflite(landmark, SHA256[LANDMARK_MODEL])
    taps = feature_taps(program)
    assert [program.shapes[t][1] for _, t, _ in taps] == [112, 56, 28, 14, 7]
    net = CropSegNet(CropNetConfig(program=program.to_dict()), TFLiteNet(program)).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        y = net(x)
    assert y.shape == (2, 1, 224, 224)
    path = save_model_file(tmp_path / "model.pt", net, mean=(0, 0, 0), std=(1, 1, 1))
    back, card = read_model_file(path)  # rebuilt from the stored program, no .tflite read
    assert card.is_crop_segmenter and isinstance(back, CropSegNet)
    with torch.inference_mode():
        torch.testing.assert_close(back(x), y)
    with pytest.raises(HandsegError, match="takes \\(B, 3, 224, 224\\)"):
        back(torch.rand(1, 3, 200, 200))


def test_bad_tflite_files_are_one_line_errors_naming_the_file(tmp_path):
    _, landmark = _models()
    missing = tmp_path / "nothing.tflite"
    with pytest.raises(HandsegError, match="nothing.tflite: no such model file"):
        read_tflite(missing)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(landmark.read_bytes()[:100_000])
    with pytest.raises(HandsegError, match="truncated.tflite: not the expected model") as e:
        read_tflite(truncated, SHA256[LANDMARK_MODEL])
    assert "\n" not in str(e.value)
    with pytest.raises(HandsegError, match="truncated.tflite: not a readable TFLite model"):
        read_tflite(truncated)  # no checksum given: the reader itself fails cleanly
    other = tmp_path / "other.tflite"
    shutil.copy(find_hand_models()[0], other)  # a real model, but not the expected one
    with pytest.raises(HandsegError, match="SHA-256 mismatch"):
        read_tflite(other, SHA256[LANDMARK_MODEL])
    assert hashlib.sha256(other.read_bytes()).hexdigest() == SHA256[PALM_MODEL]


def _hand_at(cx: float, cy: float, scale: float) -> Hand:
    pts = [(0.0, 0.0)]
    for f, dx in enumerate((-1.2, -0.6, 0.0, 0.6, 1.2)):
        base = 1.0 if f else 0.4
        pts += [(dx * 0.8, -base - 0.5 * k) for k in range(4)]
    xy = np.array([(cx + scale * x, cy + scale * y) for x, y in pts], np.float32)
    lm = np.column_stack([xy, np.zeros(21, np.float32)])
    box = tuple(float(v) for v in (*xy.min(0), *xy.max(0)))
    return Hand(lm, box, "right", 0.9, 0.9, 0.9)


class _RedIsHand(CropSegNet):
    """A 'segmenter' whose answer is known: hand where the crop is red."""

    def forward(self, x):
        return (x[:, :1] - 0.5) * 20 - (x[:, 1:2] > 0.5).float() * 20


def test_crop_segment_paste_back_lands_where_the_crop_came_from():
    _, landmark = _models()
    program = read_tflite(landmark, SHA256[LANDMARK_MODEL])
    net = _RedIsHand(CropNetConfig(program=program.to_dict(), depth=1), TFLiteNet(program))
    h, w = 300, 400
    rgb = np.full((h, w, 3), 40, np.uint8)
    hands = [_hand_at(110, 200, 25), _hand_at(290, 180, 18)]
    truth = np.zeros((h, w), np.uint8)
    truth[130:215, 70:150] = 1  # a red block under each hand
    truth[120:195, 260:320] = 1
    rgb[truth == 1] = (230, 30, 30)
    rgb[5:40, 5:60] = (230, 30, 30)  # red far from any hand: outside every crop, not hand
    seg = CropSegmenter(net, _card(net), runtime="torch")
    mask, instances = seg(rgb, hands)
    inter = (mask & truth).sum()
    assert inter / (mask | truth).sum() > 0.97
    assert mask[5:40, 5:60].sum() == 0
    assert len(instances) == 2 and (instances[0] & instances[1]).sum() == 0
    np.testing.assert_array_equal(instances[0] | instances[1], mask)
    assert instances[0][:, :200].sum() > 0.95 * instances[0].sum()  # the left hand's pixels
    # in the pipeline: a photo without hands gets an empty mask
    pipe = HandPipeline(refine="crops", detector=_Fake([]), crops=seg)
    assert pipe(rgb).mask.sum() == 0


def _card(net):
    from handseg.model.card import ModelCard

    return ModelCard(architecture=net.cfg, mean=(0, 0, 0), std=(1, 1, 1), input_size=(224, 224))


class _Fake:
    def __init__(self, hands):
        self.found = hands

    def __call__(self, rgb, max_hands=2, **options):
        return self.found[:max_hands]

    def track(self, rgb, previous, **options):
        return self.found


def test_training_anchors_detected_missed_and_hand_free():
    mask = np.zeros((200, 300), np.uint8)
    mask[50:120, 40:100] = 1  # a hand the detector found
    mask[60:140, 200:260] = 1  # a hand it missed
    found = _hand_at(70, 110, 15)
    anchors = anchors_for(0, mask, [found, _hand_at(150, 190, 5)])  # 2nd: off the mask
    assert sum(a.landmarks is not None for a in anchors) == 1
    boxes = [a.box for a in anchors if a.box is not None]
    assert boxes == [(200.0, 60.0, 260.0, 140.0)]
    assert [a.negative for a in anchors_for(1, np.zeros((50, 50), np.uint8), [])] == [True]


def _one_skin_block(tmp_path):
    """One 200 x 300 photo with a skin-coloured hand block and its mask, saved: (pairs, mask)."""
    from PIL import Image

    rgb = np.full((200, 300, 3), 60, np.uint8)
    mask = np.zeros((200, 300), np.uint8)
    mask[60:140, 200:260] = 1
    rgb[mask == 1] = (220, 170, 140)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(mask * 255).save(tmp_path / "a_mask.png")
    pairs = [(tmp_path / "a.png", tmp_path / "a_mask.png")]
    return pairs, mask


def test_training_crops_hold_the_hand_and_are_reproducible(tmp_path):
    pairs, mask = _one_skin_block(tmp_path)
    ds = HandCropDataset(pairs, anchors_for(0, mask, []), 8, 64, 0.3, negative_prob=0.0)
    torch.manual_seed(3)
    first = [ds[i] for i in range(4)]
    torch.manual_seed(3)
    again = [ds[i] for i in range(4)]
    for (x, p, y), (x2, _, y2) in zip(first, again):
        assert x.shape == (3, 64, 64) and p.shape == (1, 64, 64) and y.shape == (64, 64)
        torch.testing.assert_close(x, x2)
        torch.testing.assert_close(y, y2)
        hand = y == 1
        assert 0.1 < hand.float().mean() < 0.9  # the hand is in the crop, not all of it
        # image and label stay aligned: the labelled hand is skin-coloured
        assert (x[0][hand] > 0.7).float().mean() > 0.95


@pytest.fixture(scope="module")
def hands_run(tmp_path_factory, synth_dir):
    """A one-epoch --preset hands run on a few synthetic photos (most hands the detector
    misses: their masks' boxes train) plus one hand-free photo (a negative crop)."""
    _models()
    from PIL import Image

    root = tmp_path_factory.mktemp("hands-data")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for k, (ip, mp) in enumerate(
        zip(
            sorted((synth_dir / "images").iterdir())[:9],
            sorted((synth_dir / "masks").iterdir())[:9],
        )
    ):
        shutil.copy(ip, root / "images" / f"p{k}{ip.suffix}")
        shutil.copy(mp, root / "masks" / f"p{k}{mp.suffix}")
    Image.fromarray(np.full((64, 80, 3), 90, np.uint8)).save(root / "images" / "p9.png")
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(root / "masks" / "p9.png")
    out = root / "run"
    code = main(["train", "--preset", "hands", "--images", str(root / "images"),
                 "--masks", str(root / "masks"), "--out", str(out), "--epochs", "1",
                 "--crops-per-epoch", "8", "--crop-size", "64", "--batch-size", "4",
                 "--no-test", "--seed", "0"])  # fmt: skip
    assert code == 0
    return out


def test_preset_hands_writes_a_crop_segmenter_that_predict_runs(hands_run, tmp_path, monkeypatch):
    net, card = read_model_file(hands_run / "model.pt")
    assert card.is_crop_segmenter and card.train_config["refine"] == "crops"
    assert card.backbone_weights.startswith("MediaPipe hand_landmark_full")
    assert "crop segmenter" in (hands_run / "MODEL_CARD.md").read_text()
    hand = _hand_at(40, 50, 6)
    monkeypatch.setattr(pipeline_module, "HandDetector", lambda num_threads=None: _Fake([hand]))
    seg = load_segmenter(hands_run / "model.pt")
    assert isinstance(seg, HandSegmenter) and seg.pipeline.refine == "crops"
    assert "crop segmenter" in seg.description
    rgb = np.full((96, 120, 3), 120, np.uint8)
    mask = seg.predict(rgb)
    assert mask.shape == (96, 120) and set(np.unique(mask)) <= {0, 1}
    # nothing outside the hand's crop can be hand
    far = np.ones(mask.shape, bool)
    far[10:80, 10:75] = False
    assert mask[far].sum() == 0
    # video keeps the crop segmenter (with the fast detector, following hands)
    video = seg.for_video()
    assert video.pipeline.refine == "crops" and video.pipeline.tracking
    with pytest.raises(HandsegError, match="crop segmenter"):
        load_model(hands_run / "model.pt")
    with pytest.raises(HandsegError, match="needs the hand detector"):
        load_segmenter(hands_run / "model.pt", detector="none")


def test_preset_hands_model_in_cli_collection_and_serve(hands_run, tmp_path, monkeypatch):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        Image.fromarray(np.full((96, 120, 3), 50 + 40 * k, np.uint8)).save(photos / f"x{k}.png")
    hand = _hand_at(40, 50, 6)
    monkeypatch.setattr(pipeline_module, "HandDetector", lambda num_threads=None: _Fake([hand]))
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(hands_run / "model.pt"), str(photos), "--out",
                 str(out), "--instances"]) == 0  # fmt: skip
    assert (out / "x0_mask.png").is_file()
    doc = json.loads((out / "x0_hands.json").read_text())
    assert len(doc["hands"]) == 1
    single = np.asarray(Image.open(out / "x1_mask.png"))
    # evaluate and compare run the model's own pipeline, as predict does
    gts = tmp_path / "gt"
    gts.mkdir()
    for k in range(3):
        gt = np.zeros((96, 120), np.uint8)
        gt[30:70, 25:60] = 255
        Image.fromarray(gt).save(gts / f"x{k}.png")
    from handseg.app.commands import run_evaluate

    by_model, _ = run_evaluate(model=hands_run / "model.pt", images=photos, masks=gts)
    by_masks, _ = run_evaluate(pred_masks=out, masks=gts)
    assert by_model["classes"]["hand"]["IoU"] == pytest.approx(by_masks["classes"]["hand"]["IoU"])
    assert main(["compare", "--model", str(hands_run / "model.pt"), "--image",
                 str(photos / "x0.png"), "--mask", str(gts / "x0.png"), "--out",
                 str(tmp_path / "cmp.png")]) == 0  # fmt: skip
    coll = tmp_path / "coll"
    assert main(["predict", "--model", str(hands_run / "model.pt"), str(photos), "--out",
                 str(coll), "--collection"]) == 0  # fmt: skip
    np.testing.assert_array_equal(np.asarray(Image.open(coll / "x1_mask.png")), single)
    pytest.importorskip("fastapi", reason="needs the serve extra")
    from fastapi.testclient import TestClient

    from handseg.app.serve import Segmenter, create_app

    client = TestClient(create_app(Segmenter(hands_run / "model.pt")))
    r = client.post("/api/segment", files={"image": ("x1.png", (photos / "x1.png").read_bytes())})
    assert r.status_code == 200, r.text
    import io

    served = np.asarray(Image.open(io.BytesIO(r.content)))
    np.testing.assert_array_equal(served > 0, single > 0)


def test_cuff_arms_add_hand_pixels_up_to_a_sleeve_and_never_remove_any():
    from handseg.synth.compositing import BackgroundComposite

    img = np.full((200, 160, 3), 80, np.uint8)
    mask = np.zeros((200, 160), np.uint8)
    mask[40:150, 50:110] = 1
    mask[0:5, 0:5] = 255
    img[mask == 1] = (210, 160, 130)
    cuff = BackgroundComposite(p=1.0, arm_prob=1.0, bare_arm_share=1.0, cuff_prob=1.0)
    grew = 0
    for seed in range(6):
        out, new = cuff(img, mask, np.random.default_rng(seed))
        assert (new[mask == 1] == 1).all() and (new[mask == 255] == 255).all()
        added = (new == 1) & (mask == 0)
        grew += added.any()
        assert not added[:40].any()  # the forearm runs from the wrist (bottom) outwards
        if added.any():  # the added forearm is skin-coloured, like the hand
            assert np.abs(out[added].mean(0) - (210, 160, 130)).max() < 40
    assert grew == 6
    sleeves = BackgroundComposite(p=1.0, arm_prob=1.0, bare_arm_share=0.0, cuff_prob=1.0)
    for seed in range(3):
        _, new = sleeves(img, mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(new, mask)  # sleeves only: labels unchanged


def test_a_mask_at_the_crop_border_gets_a_larger_second_crop():
    from handseg.infer.crops import crop_transform, grown_transform

    hand = _hand_at(100, 100, 10)
    m = crop_transform(hand.landmarks, 64, 0.3)
    inside = np.zeros((64, 64), bool)
    inside[20:40, 20:40] = True
    assert grown_transform(m, inside, 0.3) is None
    forearm = inside.copy()
    forearm[30:64, 25:38] = True  # runs out of the crop's bottom edge
    m2 = grown_transform(m, forearm, 0.3)
    assert m2 is not None
    scale = np.hypot(*m[:, 0]), np.hypot(*m2[:, 0])
    assert scale[1] < scale[0]  # zoomed out ...
    assert scale[1] >= scale[0] / 2 - 1e-9  # ... by at most 2x
    # the landmarks stay inside the new crop, and the forearm's end moved inwards
    lm2 = hand.landmarks[:, :2] @ m2[:, :2].T + m2[:, 2]
    assert (lm2 >= 0).all() and (lm2 < 64).all()
    bottom = np.linalg.solve(np.vstack([m[:, :2]]), np.array([31.0, 63.0]) - m[:, 2])
    assert (m2[:, :2] @ bottom + m2[:, 2])[1] < 63


def test_the_crop_segmenter_runs_on_onnxruntime_as_on_torch(hands_run, tmp_path):
    from handseg.infer.export import export_onnx

    net, card = read_model_file(hands_run / "model.pt")
    # fp32 named: on a CPU with native bf16 "auto" would choose bf16 for torch
    torch_seg = CropSegmenter(net, card, runtime="torch", precision="fp32")
    onnx_seg = CropSegmenter(net, card, runtime="onnx", precision="fp32")
    assert torch_seg.runtime == "torch fp32" and onnx_seg.runtime == "onnx fp32"
    rgb = np.random.default_rng(0).integers(0, 255, (96, 120, 3), dtype=np.uint8)
    hands = [_hand_at(40, 50, 6), _hand_at(85, 60, 5)]
    a, b = torch_seg.probabilities(rgb, hands), onnx_seg.probabilities(rgb, hands)
    for pa, pb in zip(a, b):
        np.testing.assert_allclose(pa, pb, atol=1e-4)
    # handseg export writes a self-describing file that the pipeline loads as the model
    report = export_onnx(hands_run / "model.pt", tmp_path / "m.onnx")
    assert report["min_mask_agreement"] >= 0.999
    seg = load_segmenter(tmp_path / "m.onnx", detector="mediapipe")
    assert isinstance(seg, HandSegmenter) and seg.pipeline.crops.runtime == "onnx fp32"


def test_zoomed_training_crops_let_the_hand_run_past_the_border(tmp_path):
    pairs, mask = _one_skin_block(tmp_path)

    def border_share(zoom):
        ds = HandCropDataset(pairs, anchors_for(0, mask, []), 40, 64, 0.3,
                             negative_prob=0.0, zoom_prob=zoom)  # fmt: skip
        torch.manual_seed(0)
        ys = [ds[i][2] for i in range(40)]
        edge = [torch.cat([y[0], y[-1], y[:, 0], y[:, -1]]) == 1 for y in ys]
        return np.mean([float(e.float().mean() > 0.1) for e in edge]), ys

    plain, _ = border_share(0.0)
    zoomed, ys = border_share(1.0)
    assert plain < 0.2 and zoomed > 0.6  # canonical crops frame the hand; zoomed ones cut it
    assert all((y == 1).any() for y in ys)  # ... but always hold some of it


def test_pasted_hands_are_labelled_hand_and_leave_the_prior_alone(tmp_path):
    pairs, mask = _one_skin_block(tmp_path)

    def crops(paste):
        ds = HandCropDataset(pairs, anchors_for(0, mask, []), 30, 64, 0.3, negative_prob=0.0,
                             prior_dropout=0.0, paste_prob=paste)  # fmt: skip
        torch.manual_seed(0)
        return [ds[i] for i in range(30)]

    plain, pasted = crops(0.0), crops(1.0)
    share = [float((y == 1).float().mean()) for _, _, y in pasted]
    assert np.mean(share) > 1.3 * np.mean([float((y == 1).float().mean()) for *_, y in plain])
    for x, p, y in pasted:
        hand = y == 1
        assert (x[0][hand] > 0.7).float().mean() > 0.9  # every labelled pixel is skin
        assert (x[0][~hand] < 0.5).float().mean() > 0.9  # ... and nearly every other one not
        assert not p.any()  # a box anchor has no landmarks: no prior, pasted or not


def test_synthetic_training_crops_frame_a_synthetic_hand_without_a_prior(tmp_path):
    pairs, mask = _one_skin_block(tmp_path)
    ds = HandCropDataset(pairs, anchors_for(0, mask, []), 12, 64, 0.3, negative_prob=0.0,
                         prior_dropout=0.0, synthetic_prob=1.0)  # fmt: skip
    torch.manual_seed(0)
    samples = [ds[i] for i in range(12)]
    for _, p, y in samples:
        assert not p.any()
        assert 0.02 < (y == 1).float().mean() < 0.9  # a hand, framed like a real one
    # not the real photo's block: the synthetic hands differ from crop to crop
    assert len({round(float((y == 1).float().mean()), 3) for *_, y in samples}) > 6


class _BlockIsHand(CropSegNet):
    """A stand-in crop network: hand wherever the crop is bright (any size of hand)."""

    def forward(self, x):
        return (x[:, :1] - 0.5) * 40


def test_crops_grow_in_rounds_until_the_mask_leaves_the_border():
    from handseg.model.card import ModelCard

    _, landmark = _models()
    program = read_tflite(landmark, SHA256[LANDMARK_MODEL])
    h, w = 400, 400
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[60:340, 60:340] = 255  # a hand far larger than its landmarks' extent says
    hand = _hand_at(200, 200, 6)
    masks = {}
    for rounds in (0, 1, 3):
        cfg = CropNetConfig(program=program.to_dict(), depth=1, crop_size=64, grow=rounds)
        card = ModelCard(architecture=cfg, mean=(0, 0, 0), std=(1, 1, 1), input_size=(64, 64))
        seg = CropSegmenter(_BlockIsHand(cfg, TFLiteNet(program)), card, runtime="torch")
        assert seg.grow == rounds  # the model's own rounds, from its architecture
        masks[rounds] = seg(rgb, [hand])[0]
    truth = rgb[..., 0] > 0
    iou = {
        k: (m.astype(bool) & truth).sum() / (m.astype(bool) | truth).sum() for k, m in masks.items()
    }
    assert iou[0] < iou[1] < iou[3]  # every round takes in more of the hand ...
    assert masks[3][~truth].sum() == 0  # ... and nothing beside it
