"""Prediction against an independent reference, and a training run that must learn.

A short ``handseg train`` run (the scratch preset, 2 epochs, 30 iterations) on easy
synthetic photos: a skin-coloured hand blob and a *colour-swapped* blob (blue-ish, the
skin colour with red and blue exchanged, labelled background) on plain walls. Colour is
the only cue, so a network fed BGR at inference (or trained on BGR) mistakes one blob for
the other, and the trained model must clear a real hand IoU on fresh photos.

The reference mask is computed here with plain torch and numpy from what the model card and
the documentation say (``handseg.infer.predictor``): RGB channel order, resize to the area
the network was trained at (photos here are exactly that size, or exactly twice it: a 2 x 2
box average rounded half up, which is what an area resize gives), ImageNet mean/std from
``core.constants``, the network, logits resized bilinearly (half-pixel centres) to the
photo's size, argmax. ``Predictor.predict`` must equal it on every runtime and precision this
machine serves; pixels may differ only where the reference's two logits tie (|margin| <
1e-3: float rounding of folded BatchNorm, channels-last and onnxruntime kernels); int8 must
agree on 98 % of the pixels (bf16 too, where a device has it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import handseg
from handseg.core.config import resolve_config
from handseg.core.constants import IMAGENET_MEAN, IMAGENET_STD
from handseg.core.device import bf16_support, int8_support
from handseg.data.split import training_images
from handseg.model.checkpoint import read_model_file
from handseg.train.run import train

SIZE = (48, 64)  # (H, W) the network trains at
SKIN = (225, 160, 120)
SWAPPED = SKIN[::-1]  # the same colour in BGR order: background here
TIE = 1e-3
"""|hand - background logit| below which two correct implementations may disagree."""
LOW_AGREEMENT = 0.98
"""Share of pixels int8 (and bf16) must agree on (measured here: int8 0.997 and more)."""
LEAST_HAND_IOU = 0.55
"""Hand IoU the short run must reach on fresh photos (measured: 0.82; fed BGR in an earlier draft of these photos: 0.01)."""


def easy_photo(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(photo (h, w, 3) uint8 RGB, hand mask (h, w) bool): a wall with a skin-coloured
    ellipse (hand) and a colour-swapped one (not hand), light pixel noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.broadcast_to(rng.integers(40, 200, 3), (h, w, 3)).astype(np.int16).copy()
    img += (xx[..., None] * rng.integers(-1, 2, 3) * 32 // w).astype(np.int16)  # a gradient

    def ellipse() -> np.ndarray:
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.12, 0.25) * h, rng.uniform(0.12, 0.25) * w
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1

    hand, other = ellipse(), ellipse()
    img[other & ~hand] = SWAPPED
    img[hand] = SKIN
    img += rng.integers(-12, 13, img.shape).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8), hand


@pytest.fixture(scope="module")
def easy_run(tmp_path_factory) -> Path:
    """The trained run folder: 150 photos (120 train, 15 val, 15 test), 2 epochs."""
    root = tmp_path_factory.mktemp("easy")
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir()
    for i in range(150):
        img, hand = easy_photo(rng, *SIZE)
        Image.fromarray(img).save(root / "images" / f"p{i:03d}.png")
        Image.fromarray(hand.astype(np.uint8) * 255).save(root / "masks" / f"p{i:03d}.png")
    cfg = resolve_config({
        "images": str(root / "images"), "masks": str(root / "masks"), "out": str(root / "run"),
        "preset": "scratch", "image_size": SIZE, "epochs": 2, "batch_size": 8, "lr": 3e-3,
        "split_fractions": (0.8, 0.1, 0.1), "augment": ("none",), "workers": 0,
        "device": "cpu", "precision": "32", "seed": 0,
    })  # fmt: skip
    return train(cfg, progress=False)


@pytest.fixture(scope="module")
def fresh() -> list[tuple[np.ndarray, np.ndarray]]:
    """Photos training never saw: 8 at the training size, 4 at twice it."""
    rng = np.random.default_rng(99)
    return [easy_photo(rng, *SIZE) for _ in range(8)] + [
        easy_photo(rng, 2 * SIZE[0], 2 * SIZE[1]) for _ in range(4)
    ]


def reference_margin(net: torch.nn.Module, rgb: np.ndarray) -> np.ndarray:
    """(H, W) hand-minus-background logit of an (H, W, 3) RGB photo, by the documentation."""
    h, w = rgb.shape[:2]
    if (h, w) == (2 * SIZE[0], 2 * SIZE[1]):  # 2 x 2 box average, rounded half up
        box = rgb.astype(np.int32).reshape(SIZE[0], 2, SIZE[1], 2, 3).sum(axis=(1, 3))
        rgb = ((box + 2) // 4).astype(np.uint8)
    assert rgb.shape[:2] == SIZE, "the reference handles the training size and twice it"
    x = (rgb.astype(np.float32) / 255.0 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    with torch.inference_mode():
        logits = net.eval()(torch.from_numpy(x).permute(2, 0, 1)[None].float())
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return (logits[0, 1] - logits[0, 0]).numpy()


@pytest.fixture(scope="module")
def reference(easy_run, fresh) -> list[np.ndarray]:
    net, card = read_model_file(easy_run / "model.pt")
    assert card.input_size == SIZE
    assert tuple(card.mean) == IMAGENET_MEAN and tuple(card.std) == IMAGENET_STD
    return [reference_margin(net, rgb) for rgb, _ in fresh]


def test_a_short_training_run_learns_the_easy_photos(easy_run, fresh, reference):
    """The run's own model, through ``handseg.load_model``, finds the hands it was trained
    on: hand IoU over fresh photos, and the reference agrees (so a mismatch between training
    and inference preprocessing fails here or below)."""
    predictor = handseg.load_model(easy_run / "model.pt", runtime="torch", precision="fp32")
    masks = [predictor.predict(rgb) > 0 for rgb, _ in fresh]
    inter = sum(int((m & gt).sum()) for m, (_, gt) in zip(masks, fresh))
    union = sum(int((m | gt).sum()) for m, (_, gt) in zip(masks, fresh))
    assert inter / union >= LEAST_HAND_IOU, f"hand IoU {inter / union:.3f}"
    ref = [margin > 0 for margin in reference]
    inter = sum(int((m & gt).sum()) for m, (_, gt) in zip(ref, fresh))
    union = sum(int((m | gt).sum()) for m, (_, gt) in zip(ref, fresh))
    assert inter / union >= LEAST_HAND_IOU, f"reference hand IoU {inter / union:.3f}"


def _paths() -> list:
    """Every (device, runtime, precision) handseg predicts with; each skips with the
    hardware reason where this machine lacks it."""
    cuda = torch.cuda.is_available()
    bf16, bf16_why = bf16_support("cpu")
    int8, int8_why = int8_support()
    no_cuda = pytest.mark.skipif(not cuda, reason="hardware: no CUDA device")
    return [
        pytest.param("cpu", "torch", "fp32", id="torch-fp32"),
        pytest.param("cpu", "onnx", "fp32", id="onnx-fp32"),
        pytest.param("cpu", "torch", "bf16", id="torch-bf16", marks=pytest.mark.skipif(
            not bf16, reason=f"hardware: {bf16_why}")),
        pytest.param("cpu", "onnx", "int8", id="onnx-int8", marks=pytest.mark.skipif(
            not int8, reason=f"hardware: {int8_why}")),
        pytest.param("cuda", "torch", "fp32", id="cuda-fp32", marks=no_cuda),
        pytest.param("cuda", "torch", "bf16", id="cuda-bf16", marks=no_cuda),
    ]  # fmt: skip


@pytest.mark.parametrize(("device", "runtime", "precision"), _paths())
def test_predict_equals_the_reference(easy_run, fresh, reference, device, runtime, precision):
    predictor = handseg.load_model(
        easy_run / "model.pt", device=device, runtime=runtime, precision=precision,
        calibration=training_images,
    )  # fmt: skip
    assert (predictor.backend.runtime, predictor.backend.precision) == (runtime, precision)
    agree = total = 0
    for (rgb, _), margin in zip(fresh, reference):
        mask = predictor.predict(rgb)
        assert mask.shape == rgb.shape[:2] and mask.dtype == np.uint8
        differ = (mask > 0) != (margin > 0)
        agree, total = agree + int((~differ).sum()), total + differ.size
        if precision == "fp32":
            worst = float(np.abs(margin[differ]).max(initial=0.0))
            assert worst < TIE, f"{int(differ.sum())} pixels differ, margins up to {worst:.4f}"
    if precision != "fp32":
        assert agree / total >= LOW_AGREEMENT, f"{precision}: {agree / total:.4f} agree"
    batched = list(predictor.predict_many([rgb for rgb, _ in fresh], batch_size=4))
    single = [predictor.predict(rgb) for rgb, _ in fresh]
    assert all(np.array_equal(a, b) for a, b in zip(batched, single))
