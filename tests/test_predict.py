"""Prediction: any-size inputs through the API and ``handseg predict`` (files, folders, globs,
video), and clear errors for files that are not handseg models."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import handseg
from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.infer.media import expand_inputs, predict_paths, predict_video
from handseg.infer.predictor import Predictor
from handseg.model.checkpoint import read_model_file

INPUT_SIZE = (64, 80)


@pytest.fixture(scope="module")
def predictor(model_file) -> Predictor:
    return handseg.load_model(model_file)


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8: a smooth colour gradient with a bright disc, plus a little noise."""
    if h * w > 1_000_000:  # big photos: upscale a small one (cheap to make)
        return cv2.resize(_photo(h // 40, w // 40, seed), (w, h), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 90)], 2)
    disc = (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 4) ** 2
    img[disc] = (230, 190, 160)
    img = img + rng.integers(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(arr: np.ndarray, path: Path, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if mode:
        im = im.convert(mode)
    im.save(path)
    return path


# --- API -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: _photo(101, 77), id="array-101x77"),
        pytest.param(lambda: _photo(77, 101)[:, :, 0], id="array-2d-grey"),
        pytest.param(lambda: _photo(101, 77)[:, :, :1], id="array-hxwx1"),
        pytest.param(lambda: Image.fromarray(_photo(101, 77)).convert("L"), id="pil-L"),
        pytest.param(lambda: Image.fromarray(_photo(101, 77)).convert("RGBA"), id="pil-RGBA"),
    ],
)
def test_predict_returns_a_binary_mask_at_the_input_size(predictor, make):
    image = make()
    h, w = (image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2]
    mask = predictor.predict(image)
    assert mask.shape == (h, w)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 1}


def test_predict_on_a_3000x4000_photo(predictor):
    mask = predictor.predict(_photo(3000, 4000))
    assert mask.shape == (3000, 4000) and mask.dtype == np.uint8


def test_predict_accepts_a_path_and_agrees_with_the_array(predictor, tmp_path):
    arr = _photo(50, 70, seed=3)
    path = _save(arr, tmp_path / "p.png")
    np.testing.assert_array_equal(predictor.predict(path), predictor.predict(arr))
    np.testing.assert_array_equal(predictor.predict(str(path)), predictor.predict(arr))


def test_out_size_gives_the_mask_at_another_resolution(predictor):
    arr = _photo(120, 160)
    assert predictor.predict(arr, out_size=(60, 80)).shape == (60, 80)


def test_predict_many_batches_give_the_same_masks_as_one_by_one(predictor):
    images = [_photo(48, 64, s) for s in range(3)] + [_photo(101, 77, 5), _photo(48, 64, 7)]
    batched = list(predictor.predict_many(images, batch_size=2))
    assert len(batched) == len(images)
    for img, m in zip(images, batched):
        np.testing.assert_array_equal(m, predictor.predict(img))


def test_unsupported_inputs_raise_handseg_error(predictor):
    with pytest.raises(HandsegError, match="cannot predict"):
        predictor.predict(12345)
    with pytest.raises(HandsegError, match="HxWx3"):
        predictor.predict(np.zeros((4, 5, 7), np.uint8))


# --- inputs ----------------------------------------------------------------------------------


def test_expand_inputs_files_folders_globs_in_order(tmp_path, caplog):
    a = tmp_path / "a"
    for name in ("img10.png", "img2.png", "img1.jpg", "notes.txt", "clip.mp4"):
        (a / name).parent.mkdir(exist_ok=True)
        (a / name).write_bytes(b"x")
    b = tmp_path / "b"
    for name in ("x.png", "y.png", "z.csv"):
        (b / name).parent.mkdir(exist_ok=True)
        (b / name).write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="handseg"):
        got = expand_inputs([a, str(b / "*"), a / "img2.png", tmp_path / "missing.png"])
    assert [p.name for p in got] == [
        "clip.mp4",
        "img1.jpg",
        "img2.png",
        "img10.png",
        "x.png",
        "y.png",
    ]
    text = caplog.text
    assert "notes.txt" in text and "z.csv" in text and "missing.png" in text
    with pytest.raises(HandsegError, match="no images or videos"):
        expand_inputs([tmp_path / "nothing-*.png"])


def test_predict_paths_writes_masks_and_overlays_at_input_size(predictor, tmp_path):
    p1 = _save(_photo(101, 77), tmp_path / "one" / "same.png")
    p2 = _save(_photo(33, 45, 1), tmp_path / "two" / "same.png")
    bad = tmp_path / "two" / "broken.png"
    bad.write_bytes(b"not a png")
    recs = predict_paths(predictor, [p1, bad, p2], tmp_path / "out", batch_size=2, progress=False)
    assert [r["ok"] for r in recs] == [True, False, True]
    assert "broken.png" in recs[1]["error"]
    # the same stem twice: the second gets a suffix instead of overwriting the first
    assert recs[0]["mask"].name == "same_mask.png" and recs[2]["mask"].name == "same-1_mask.png"
    for r, (h, w) in zip((recs[0], recs[2]), ((101, 77), (33, 45))):
        with Image.open(r["mask"]) as im:
            assert im.size == (w, h) and im.mode == "L"
            np.testing.assert_array_equal(
                np.asarray(im), predictor.predict(r["input"]).astype(np.uint8) * 255
            )
        with Image.open(r["overlay"]) as im:
            assert im.size == (w, h)


# --- CLI -------------------------------------------------------------------------------------


def test_cli_predict_folder_glob_and_file_with_a_non_image_mixed_in(
    model_file, predictor, tmp_path, caplog, capsys
):
    folder = tmp_path / "folder"
    _save(_photo(101, 77), folder / "rgb.png")
    _save(_photo(40, 50, 1), folder / "grey.png", mode="L")
    (folder / "readme.txt").write_text("not an image")
    _save(_photo(30, 60, 2), tmp_path / "globbed" / "g1.png", mode="RGBA")
    _save(_photo(30, 60, 3), tmp_path / "globbed" / "g2.jpg")  # not matched by *.png
    single = _save(_photo(90, 20, 4), tmp_path / "single.jpg")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="handseg"):
        rc = main(
            ["predict", "--model", str(model_file), str(folder), str(tmp_path / "globbed" / "*.png"),
             str(single), "--out", str(out), "--batch-size", "2"]
        )  # fmt: skip
    assert rc == 0
    assert "readme.txt" in caplog.text
    assert "wrote 4 mask(s)" in capsys.readouterr().out
    expected = {"rgb": (77, 101), "grey": (50, 40), "g1": (60, 30), "single": (20, 90)}
    assert sorted(p.name for p in out.glob("*_mask.png")) == sorted(
        f"{k}_mask.png" for k in expected
    )
    assert not (out / "g2_mask.png").exists()
    for stem, size in expected.items():
        with Image.open(out / f"{stem}_mask.png") as im:
            assert im.size == size
            values = set(np.unique(np.asarray(im)).tolist())
        assert values <= {0, 255}
        with Image.open(out / f"{stem}_overlay.jpg") as im:
            assert im.size == size
    # the mask on disk is the API's prediction
    with Image.open(out / "rgb_mask.png") as im:
        np.testing.assert_array_equal(np.asarray(im) // 255, predictor.predict(folder / "rgb.png"))


def test_cli_predict_big_photo_and_no_overlay(model_file, tmp_path):
    big = _save(_photo(3000, 4000), tmp_path / "big.jpg")
    out = tmp_path / "out"
    assert (
        main(["predict", "--model", str(model_file), str(big), "--out", str(out), "--no-overlay"])
        == 0
    )
    with Image.open(out / "big_mask.png") as im:
        assert im.size == (4000, 3000)
    assert not (out / "big_overlay.jpg").exists()


def test_cli_predict_skips_unreadable_files_and_fails_when_none_is_readable(
    model_file, tmp_path, caplog, capsys
):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG truncated")
    good = _save(_photo(20, 30), tmp_path / "good.png")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="handseg"):
        assert (
            main(["predict", "--model", str(model_file), str(bad), str(good), "--out", str(out)])
            == 0
        )
    assert "bad.png" in caplog.text and (out / "good_mask.png").is_file()
    capsys.readouterr()
    assert main(["predict", "--model", str(model_file), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "could be read" in err[-1]


def _write_video(path: Path, n: int = 10, size=(64, 80), fps: float = 12.0) -> Path:
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        writer.write(cv2.cvtColor(_photo(h, w, seed=i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _read_video(path: Path) -> tuple[int, float, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    fps = cap.get(cv2.CAP_PROP_FPS)
    n, shape = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        shape = frame.shape[:2]
    cap.release()
    return n, fps, shape


def test_cli_predict_video_writes_an_overlay_video(model_file, tmp_path, capsys):
    clip = _write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model_file), str(clip), "--out", str(out)]) == 0
    assert "10 frames at" in capsys.readouterr().out
    n, fps, shape = _read_video(out / "clip_overlay.mp4")
    assert (n, shape) == (10, (64, 80))
    assert fps == pytest.approx(12.0)


def test_predict_video_api_and_unreadable_video(predictor, tmp_path):
    clip = _write_video(tmp_path / "c.avi", n=4, size=(48, 40), fps=5.0)
    info = predict_video(predictor, clip, tmp_path / "o.mp4", progress=False, batch_size=3)
    assert info["frames"] == 4 and info["size"] == (48, 40) and info["fps"] > 0
    assert _read_video(tmp_path / "o.mp4")[0] == 4
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video at all")
    with pytest.raises(HandsegError, match="fake.mp4"):
        predict_video(predictor, fake, tmp_path / "o2.mp4", progress=False)


# --- bad model files -------------------------------------------------------------------------


class _Payload:
    """An arbitrary Python object: unpickling it would import and run test code."""


def _bad_model(kind: str, path: Path, model_file: Path) -> Path:
    if kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "plain-dict":
        torch.save({"weights": torch.zeros(3), "epoch": 4}, path)
    elif kind == "torchvision-state-dict":
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(1000)}, path)
    elif kind == "format-version-99":
        obj = torch.load(model_file, map_location="cpu", weights_only=True)
        obj["format_version"] = 99
        torch.save(obj, path)
    elif kind == "pickled-object":
        torch.save({"format": "handseg-model", "obj": _Payload()}, path, pickle_protocol=2)
    elif kind == "empty":
        path.write_bytes(b"")
    return path


BAD_KINDS = [
    "random-bytes",
    "plain-dict",
    "torchvision-state-dict",
    "format-version-99",
    "pickled-object",
    "empty",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_model_file_is_a_one_line_cli_error(kind, model_file, tmp_path, capsys):
    bad = _bad_model(kind, tmp_path / f"{kind}.pt", model_file)
    img = _save(_photo(20, 30), tmp_path / "x.png")
    with pytest.raises(HandsegError):
        handseg.load_model(bad)
    rc = main(["predict", "--model", str(bad), str(img), "--out", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and bad.name in err
    assert not (tmp_path / "out").exists()


def test_missing_model_file_names_the_path(tmp_path, capsys):
    img = _save(_photo(20, 30), tmp_path / "x.png")
    assert (
        main(["predict", "--model", str(tmp_path / "nope.pt"), str(img), "--out", str(tmp_path)])
        == 2
    )
    assert "nope.pt" in capsys.readouterr().err


def test_model_file_round_trip_keeps_preprocessing(model_file):
    _, card = read_model_file(model_file)
    p = handseg.load_model(model_file)
    assert p.input_size == INPUT_SIZE == card.input_size
    assert p.card == card
    assert p.classes == ("background", "hand")
    h, w = p.working_size(3000, 4000)  # the training area at the photo's aspect
    assert abs(w / h - 4000 / 3000) < 0.05 and abs(h * w / (64 * 80) - 1) < 0.05
