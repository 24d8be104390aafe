"""Inference backends: every runtime x precision gives masks of the input size; fallbacks."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

import handseg
import handseg.infer.backends as rt
from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.infer.predictor import Predictor
from handseg.model.checkpoint import read_model_file
from test_export import _photo  # the same synthetic photo

INPUT_SIZE = (64, 80)
PATHS = [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"), ("auto", "auto")]


@pytest.fixture(scope="module")
def net_meta(model_file):
    return read_model_file(model_file)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 101, 77)).astype(np.float32)


@pytest.fixture(scope="module")
def fp32_logits(net_meta, batch) -> np.ndarray:
    net, _ = net_meta
    with torch.inference_mode():
        return net(torch.from_numpy(batch)).numpy()


@pytest.mark.parametrize(
    ("runtime", "precision", "scale"),
    [(r, p, 1.0) for r, p in PATHS] + [("torch", "fp32", 0.5), ("onnx", "int8", 0.5)],
)
def test_every_path_gives_masks_of_the_input_size(net_meta, runtime, precision, scale):
    net, meta = net_meta
    p = Predictor(net, meta, runtime=runtime, precision=precision, threads=2, scale=scale)
    if runtime != "auto":
        assert p.backend.runtime == runtime
    for h, w in [(101, 77), (64, 80)]:
        mask = p.predict(_photo(h, w))
        assert mask.shape == (h, w) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1}
    logits = p._logits(np.zeros((2, 3, 50, 70), np.float32))
    assert logits.shape == (2, 2, 50, 70) and logits.dtype == np.float32


def test_fp32_paths_agree_with_eager_pytorch(net_meta, batch, fp32_logits):
    net, meta = net_meta
    for runtime in ("torch", "onnx"):
        got = rt.make_backend(net, meta, runtime, "fp32")(batch)
        np.testing.assert_allclose(got, fp32_logits, atol=1e-4, rtol=1e-3, err_msg=runtime)


def test_bf16_and_int8_really_run_in_lower_precision(net_meta, batch, fp32_logits):
    net, meta = net_meta
    tol = 0.1 * np.abs(fp32_logits).max()
    for runtime, precision, supported in [
        ("torch", "bf16", rt.bf16_support()[0]),
        ("onnx", "int8", rt.int8_support()[0]),
    ]:
        if not supported:
            continue
        b = rt.make_backend(net, meta, runtime, precision)
        got = b(batch)
        assert b.precision == precision
        assert not np.array_equal(got, fp32_logits)  # not secretly fp32
        assert np.abs(got - fp32_logits).max() < tol  # but close to it
        assert np.corrcoef(got.ravel(), fp32_logits.ravel())[0, 1] > 0.95


def test_bf16_falls_back_to_fp32_with_a_warning(net_meta, batch, monkeypatch, caplog):
    net, meta = net_meta
    monkeypatch.setattr(rt, "bf16_support", lambda: (False, "test CPU has no bf16"))
    with caplog.at_level(logging.WARNING, logger="handseg"):
        b = rt.make_backend(net, meta, "torch", "bf16")
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "bf16" in msgs[0] and "fp32" in msgs[0]
    assert "test CPU has no bf16" in msgs[0]
    assert (b.runtime, b.precision) == ("torch", "fp32")
    np.testing.assert_array_equal(b(batch), rt.make_backend(net, meta, "torch", "fp32")(batch))


def test_int8_falls_back_to_fp32_with_a_warning(net_meta, batch, monkeypatch, caplog):
    net, meta = net_meta
    monkeypatch.setattr(rt, "int8_support", lambda: (False, "test runtime has no int8"))
    with caplog.at_level(logging.WARNING, logger="handseg"):
        b = rt.make_backend(net, meta, "onnx", "int8")
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "int8" in msgs[0] and "fp32" in msgs[0]
    assert (b.runtime, b.precision) == ("onnx", "fp32")
    np.testing.assert_array_equal(b(batch), rt.make_backend(net, meta, "onnx", "fp32")(batch))


def test_failed_quantisation_falls_back_to_fp32(net_meta, monkeypatch, caplog):
    net, meta = net_meta

    def broken(*a, **k):
        raise RuntimeError("quantiser exploded")

    monkeypatch.setattr(rt, "cached_int8", broken)
    with caplog.at_level(logging.WARNING, logger="handseg"):
        b = rt.make_backend(net, meta, "onnx", "int8")
    assert b.precision == "fp32"
    assert any("quantiser exploded" in r.getMessage() for r in caplog.records)


def test_auto_without_lower_precisions_is_fp32(net_meta, monkeypatch, caplog):
    net, meta = net_meta
    monkeypatch.setattr(rt, "bf16_support", lambda: (False, "no"))
    monkeypatch.setattr(rt, "int8_support", lambda: (False, "no"))
    with caplog.at_level(logging.WARNING, logger="handseg"):
        b = rt.make_backend(net, meta)
    assert b.precision == "fp32" and not caplog.records  # auto falls back silently
    assert rt.resolve_path("onnx", "auto") == ("onnx", "fp32")


def test_impossible_requests_are_handseg_errors(net_meta):
    net, meta = net_meta
    for runtime, precision, match in [
        ("torch", "int8", "onnxruntime"),
        ("onnx", "bf16", "PyTorch"),
        ("tensorrt", "auto", "--runtime"),
        ("auto", "fp16", "--precision"),
    ]:
        with pytest.raises(HandsegError, match=match):
            rt.make_backend(net, meta, runtime, precision)
    with pytest.raises(HandsegError, match="--scale"):
        rt.make_backend(net, meta, scale=0)
    with pytest.raises(HandsegError, match="--threads"):
        rt.make_backend(net, meta, threads=0)
    with pytest.raises(HandsegError, match="CPU only"):
        rt.resolve_path("onnx", "fp32", device="cuda")


def test_threads_reach_torch_and_onnxruntime(net_meta):
    net, meta = net_meta
    before = torch.get_num_threads()
    try:
        rt.make_backend(net, meta, "torch", "fp32", threads=1)
        assert torch.get_num_threads() == 1
        b = rt.make_backend(net, meta, "onnx", "fp32", threads=1)
        assert b._sess.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)


def test_exported_int8_file_is_self_describing(net_meta, tmp_path):
    net, meta = net_meta
    fp32 = rt.make_backend(net, meta, "onnx", "fp32").path
    out = rt.quantize_int8(fp32, tmp_path / "q.onnx", meta)
    p = handseg.load_model(out)
    assert (p.backend.runtime, p.backend.precision) == ("onnx", "int8")
    assert p.predict(_photo(101, 77)).shape == (101, 77)


def test_calibration_uses_training_images_when_they_exist(tmp_path):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), _photo(48, 64, seed=i)[:, :, ::-1])
    meta = {"input_size": [32, 48], "train_config": {"images": str(images)}}
    batches, source = rt.calibration_batches(meta, n=2)
    assert source == "2 training images" and [b.shape for b in batches] == [(1, 3, 32, 48)] * 2
    # with a run's split.json only its training images are used (3 asked, 2 listed)
    run = tmp_path / "run"
    run.mkdir()
    split = {"images_dir": str(images), "train": [{"image": "0.png"}, {"image": "1.png"}],
             "test": [{"image": "2.png"}]}  # fmt: skip
    (run / "split.json").write_text(json.dumps(split))
    meta["train_config"]["out"] = str(run)
    batches, source = rt.calibration_batches(meta, n=3)
    assert source == "2 training images" and len(batches) == 2
    batches, source = rt.calibration_batches({"input_size": [32, 48]}, n=2)
    assert "training" not in source and batches[0].shape == (1, 3, 32, 48)


def test_cache_keeps_the_most_recent_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDSEG_CACHE_DIR", str(tmp_path))
    for i in range(rt.CACHE_KEEP + 3):
        f = tmp_path / f"{i}.onnx"
        f.write_bytes(b"x")
        os.utime(f, (1000 + i, 1000 + i))
    rt._prune_cache()
    left = sorted(int(p.stem) for p in tmp_path.glob("*.onnx"))
    assert left == list(range(3, rt.CACHE_KEEP + 3))


def test_cli_predict_with_runtime_options(model_file, tmp_path):
    from PIL import Image

    img = tmp_path / "in" / "x.png"
    img.parent.mkdir()
    Image.fromarray(_photo(101, 77)).save(img)
    out = tmp_path / "out"
    args = ["predict", "--model", str(model_file), str(img), "--out", str(out), "--no-overlay"]
    rc = main([*args, "--runtime", "onnx", "--precision", "int8", "--threads", "1"])
    assert rc == 0
    (mask,) = out.glob("*_mask.png")
    assert np.asarray(Image.open(mask)).shape[:2] == (101, 77)
    assert main([*args, "--runtime", "torch", "--precision", "int8"]) == 2
