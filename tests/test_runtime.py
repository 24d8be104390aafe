"""Inference backends: every runtime x precision gives masks of the input size; fallbacks."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

import handseg
import handseg.core.device as dev
import handseg.infer.backends as rt
import handseg.infer.quantize as qz
from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.data.split import training_images
from handseg.infer.predictor import Predictor
from handseg.model.card import ModelCard
from handseg.model.checkpoint import read_model_file, save_model_file
from handseg.model.network import HandSegNet
from test_export import _photo  # the same synthetic photo

INPUT_SIZE = (64, 80)
PATHS = [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"), ("auto", "auto")]
# (H, W, 3) uint8 each: photos, and noise that spans the random test batches' range
CALIBRATION = [_photo(48, 64, seed=i) for i in range(2)] + [
    np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(2)
]


@pytest.fixture(scope="module")
def net_card(model_file):
    return read_model_file(model_file)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 101, 77)).astype(np.float32)


@pytest.fixture(scope="module")
def fp32_logits(net_card, batch) -> np.ndarray:
    net, _ = net_card
    with torch.inference_mode():
        return net(torch.from_numpy(batch)).numpy()


@pytest.mark.parametrize(
    ("runtime", "precision", "scale"),
    [(r, p, 1.0) for r, p in PATHS] + [("torch", "fp32", 0.5), ("onnx", "int8", 0.5)],
)
def test_every_path_gives_masks_of_the_input_size(net_card, runtime, precision, scale):
    net, card = net_card
    p = Predictor(net, card, runtime=runtime, precision=precision, threads=2, scale=scale,
                  calibration=CALIBRATION)  # fmt: skip
    if runtime != "auto":
        assert p.backend.runtime == runtime
    for h, w in [(101, 77), (64, 80)]:
        mask = p.predict(_photo(h, w))
        assert mask.shape == (h, w) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1}
    logits = p._logits(np.zeros((2, 3, 50, 70), np.float32))
    assert logits.shape == (2, 2, 50, 70) and logits.dtype == np.float32


def test_fp32_paths_agree_with_eager_pytorch(net_card, batch, fp32_logits):
    net, card = net_card
    for runtime in ("torch", "onnx"):
        got = rt.make_backend(net, card, runtime, "fp32")(batch)
        np.testing.assert_allclose(got, fp32_logits, atol=1e-4, rtol=1e-3, err_msg=runtime)


def test_bf16_and_int8_really_run_in_lower_precision(net_card, batch, fp32_logits):
    net, card = net_card
    tol = 0.1 * np.abs(fp32_logits).max()
    for runtime, precision, supported in [
        ("torch", "bf16", dev.bf16_support()[0]),
        ("onnx", "int8", dev.int8_support()[0]),
    ]:
        if not supported:
            continue
        b = rt.make_backend(net, card, runtime, precision, calibration=CALIBRATION)
        got = b(batch)
        assert b.precision == precision
        assert not np.array_equal(got, fp32_logits)  # not secretly fp32
        assert np.abs(got - fp32_logits).max() < tol  # but close to it
        assert np.corrcoef(got.ravel(), fp32_logits.ravel())[0, 1] > 0.95


def test_bf16_falls_back_to_fp32_with_a_warning(net_card, batch, monkeypatch, caplog):
    net, card = net_card
    monkeypatch.setattr(dev, "bf16_support", lambda *a: (False, "test CPU has no bf16"))
    with caplog.at_level(logging.WARNING, logger="handseg"):
        b = rt.make_backend(net, card, "torch", "bf16")
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "bf16" in msgs[0] and "fp32" in msgs[0]
    assert "test CPU has no bf16" in msgs[0]
    assert (b.runtime, b.precision) == ("torch", "fp32")
    np.testing.assert_array_equal(b(batch), rt.make_backend(net, card, "torch", "fp32")(batch))


def test_int8_falls_back_to_fp32_with_a_warning(net_card, batch, monkeypatch, caplog):
    net, card = net_card
    monkeypatch.setattr(dev, "int8_support", lambda: (False, "test runtime has no int8"))
    with caplog.at_level(logging.WARNING, logger="handseg"):
        b = rt.make_backend(net, card, "onnx", "int8", calibration=CALIBRATION)
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "int8" in msgs[0] and "fp32" in msgs[0]
    assert (b.runtime, b.precision) == ("onnx", "fp32")
    np.testing.assert_array_equal(b(batch), rt.make_backend(net, card, "onnx", "fp32")(batch))


def test_failed_quantisation_falls_back_to_fp32(net_card, monkeypatch, caplog):
    net, card = net_card

    def broken(*a, **k):
        raise RuntimeError("quantiser exploded")

    monkeypatch.setattr(rt, "cached_int8", broken)
    with caplog.at_level(logging.WARNING, logger="handseg"):
        b = rt.make_backend(net, card, "onnx", "int8", calibration=CALIBRATION)
    assert b.precision == "fp32"
    assert any("quantiser exploded" in r.getMessage() for r in caplog.records)


def test_auto_without_lower_precisions_is_fp32(net_card, monkeypatch, caplog):
    net, card = net_card
    monkeypatch.setattr(dev, "bf16_support", lambda *a: (False, "no"))
    monkeypatch.setattr(dev, "int8_support", lambda: (False, "no"))
    with caplog.at_level(logging.WARNING, logger="handseg"):
        b = rt.make_backend(net, card, calibration=CALIBRATION)
    assert b.precision == "fp32" and not caplog.records  # auto falls back silently
    assert dev.inference_path("onnx", "auto") == ("onnx", "fp32")


@pytest.mark.parametrize(
    ("machine", "flags", "path", "words"),
    [
        ("x86_64", {"avx2", "fma"}, ("onnx", "fp32"), "no VNNI, so int8 would be slower"),
        ("x86_64", {"avx2", "avx512_vnni"}, ("onnx", "int8"), "VNNI (avx512_vnni)"),
        ("x86_64", {"avx2", "avx_vnni"}, ("onnx", "int8"), "VNNI (avx_vnni)"),
        ("x86_64", {"avx2", "avx512_bf16"}, ("torch", "bf16"), "no VNNI"),
        ("x86_64", {"avx512_vnni", "avx512_bf16"}, ("onnx", "int8"), "VNNI"),
        ("aarch64", {"asimd", "asimddp"}, ("onnx", "int8"), "dot-product"),
        ("aarch64", {"asimd"}, ("onnx", "fp32"), "no Arm dot-product"),
        ("x86_64", set(), ("onnx", "fp32"), "cannot be read"),
    ],
)
def test_auto_chooses_by_what_the_cpu_can_do(net_card, monkeypatch, caplog, machine, flags,
                                             path, words):  # fmt: skip
    """int8 only with VNNI / Arm dot-product (else it is slower than fp32), bf16 only with
    native bf16, else onnx fp32; one INFO line says which and why."""
    if path[1] == "bf16" and not torch.backends.mkldnn.is_available():
        pytest.skip("PyTorch without oneDNN: no bf16 here")
    net, card = net_card
    monkeypatch.setattr(dev.platform, "machine", lambda: machine)
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset(flags))
    chosen = dev.choose_inference_path()
    assert (chosen.runtime, chosen.precision) == path == dev.inference_path()
    assert words in chosen.reason
    with caplog.at_level(logging.INFO, logger="handseg"):
        b = rt.make_backend(net, card, calibration=CALIBRATION)
    assert (b.runtime, b.precision) == path and b.reason == chosen.reason
    (msg,) = [r.getMessage() for r in caplog.records if r.name == "handseg.infer.backends"]
    assert msg == f"runtime {path[0]} {path[1]}: {chosen.reason}"
    assert all(r.levelno == logging.INFO for r in caplog.records)
    # an explicit int8 request still runs int8 without VNNI (slower, but asked for)
    assert dev.inference_path("onnx", "int8") == ("onnx", "int8")


def test_the_choice_message_on_this_machine_kind(monkeypatch):
    """AVX2 without VNNI or native bf16 (the 2-core machine the project is timed on)."""
    monkeypatch.setattr(dev.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma"}))
    assert str(dev.choose_inference_path("onnx")) == (
        "onnx fp32: this CPU has no VNNI, so int8 would be slower"
    )
    assert dev.choose_inference_path(calibrated=False).reason.startswith("this CPU has no VNNI")
    assert dev.choose_inference_path("onnx", "fp32").reason == "as requested"
    assert dev.choose_inference_path("auto", "fp32").reason == "the faster runtime for fp32"
    assert "native bf16" in dev.choose_inference_path("torch").reason


def test_impossible_requests_are_handseg_errors(net_card):
    net, card = net_card
    for runtime, precision, match in [
        ("torch", "int8", "onnxruntime"),
        ("onnx", "bf16", "PyTorch"),
        ("tensorrt", "auto", "--runtime"),
        ("auto", "fp16", "--precision"),
    ]:
        with pytest.raises(HandsegError, match=match):
            rt.make_backend(net, card, runtime, precision)
    with pytest.raises(HandsegError, match="--scale"):
        rt.make_backend(net, card, scale=0)
    with pytest.raises(HandsegError, match="--threads"):
        rt.make_backend(net, card, threads=0)
    with pytest.raises(HandsegError, match="CPU only"):
        dev.inference_path("onnx", "fp32", device="cuda")


def test_threads_reach_torch_and_onnxruntime(net_card):
    net, card = net_card
    before = torch.get_num_threads()
    try:
        rt.make_backend(net, card, "torch", "fp32", threads=1)
        assert torch.get_num_threads() == 1
        b = rt.make_backend(net, card, "onnx", "fp32", threads=1)
        assert b._sess.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)


def test_exported_int8_file_is_self_describing(net_card, tmp_path):
    net, card = net_card
    fp32 = rt.make_backend(net, card, "onnx", "fp32").path
    out = qz.quantize_int8(fp32, tmp_path / "q.onnx", card, CALIBRATION)
    p = handseg.load_model(out)  # no calibration needed: the file is int8 already
    assert (p.backend.runtime, p.backend.precision) == ("onnx", "int8")
    assert p.card == card
    assert p.predict(_photo(101, 77)).shape == (101, 77)


def test_without_calibration_images_int8_is_not_used(net_card, monkeypatch, caplog):
    """auto takes the next path with an INFO note; an explicit int8 request runs fp32 with
    a warning that says what to pass."""
    net, card = net_card
    monkeypatch.setattr(dev, "int8_support", lambda: (True, "test"))
    monkeypatch.setattr(dev, "int8_speedup", lambda: (True, "test CPU has VNNI"))
    monkeypatch.setattr(dev, "bf16_support", lambda *a: (False, "no"))
    with caplog.at_level(logging.INFO, logger="handseg"):
        b = rt.make_backend(net, card)
    assert (b.runtime, b.precision) == ("onnx", "fp32")
    assert any("calibration" in r.getMessage() for r in caplog.records)
    assert all(r.levelno < logging.WARNING for r in caplog.records)
    caplog.clear()
    for calibration in (None, [], lambda card: []):  # none given, or none found
        with caplog.at_level(logging.WARNING, logger="handseg"):
            b = rt.make_backend(net, card, "onnx", "int8", calibration=calibration)
        assert (b.runtime, b.precision) == ("onnx", "fp32")
        (msg,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "calibration" in msg and "fp32" in msg
        caplog.clear()


def test_calibration_function_is_called_only_for_int8(net_card):
    net, card = net_card
    calls = []

    def calibration(c):
        calls.append(c)
        return CALIBRATION

    rt.make_backend(net, card, "torch", "fp32", calibration=calibration)
    rt.make_backend(net, card, "onnx", "fp32", calibration=calibration)
    assert calls == []
    if dev.int8_support()[0]:
        b = rt.make_backend(net, card, "onnx", "int8", calibration=calibration)
        assert b.precision == "int8" and calls == [card]


def test_int8_cache_is_keyed_by_the_calibration_set(net_card):
    net, card = net_card
    if not dev.int8_support()[0]:
        pytest.skip("no int8 here")
    a = rt.make_backend(net, card, "onnx", "int8", calibration=CALIBRATION).path
    again = rt.make_backend(net, card, "onnx", "int8", calibration=list(CALIBRATION)).path
    other = rt.make_backend(net, card, "onnx", "int8", calibration=CALIBRATION[:2]).path
    assert a == again != other


def test_calibration_batches_resize_and_normalise(net_card, tmp_path):
    import cv2

    _, card = net_card
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), CALIBRATION[1][:, :, ::-1])
    batches = qz.calibration_batches([CALIBRATION[0], path, tmp_path / "missing.png"], card)
    assert [b.shape for b in batches] == [(1, 3, 64, 80)] * 2  # the unreadable one skipped
    assert batches[0].dtype == np.float32
    with pytest.raises(HandsegError, match="uint8"):
        qz.calibration_batches([np.zeros((8, 8, 3), np.float32)], card)
    with pytest.raises(HandsegError, match="could be read"):
        qz.calibration_batches([tmp_path / "missing.png"], card)


def test_training_images_of_a_model(tmp_path):
    """handseg.data.split.training_images: the split's train entries, else the folder."""
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), _photo(48, 64, seed=i)[:, :, ::-1])
    config = {"images": str(images)}
    assert [p.name for p in training_images(config)] == ["0.png", "1.png", "2.png"]
    # with a run's split.json only its training images are used
    run = tmp_path / "run"
    run.mkdir()
    split = {"images_dir": str(images), "train": [{"image": "0.png"}, {"image": "1.png"}],
             "test": [{"image": "2.png"}]}  # fmt: skip
    (run / "split.json").write_text(json.dumps(split))
    assert [p.name for p in training_images(config | {"out": str(run)})] == ["0.png", "1.png"]
    (run / "split.json").write_text("{not json")
    assert training_images({"out": str(run)}) == []
    assert training_images({}) == [] == training_images({"images": str(tmp_path / "gone")})
    card = ModelCard(train_config=config)  # a model card works as well as its options
    assert training_images(card) == training_images(config)


def test_cache_keeps_the_most_recent_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDSEG_CACHE_DIR", str(tmp_path))
    for i in range(qz.CACHE_KEEP + 3):
        f = tmp_path / f"{i}.onnx"
        f.write_bytes(b"x")
        os.utime(f, (1000 + i, 1000 + i))
    qz.prune_cache()
    left = sorted(int(p.stem) for p in tmp_path.glob("*.onnx"))
    assert left == list(range(3, qz.CACHE_KEEP + 3))


def test_cli_predict_with_runtime_options(tmp_path, caplog):
    """The command line calibrates int8 on the model's training images."""
    from PIL import Image

    img = tmp_path / "in" / "x.png"
    img.parent.mkdir()
    Image.fromarray(_photo(101, 77)).save(img)
    torch.manual_seed(0)
    model = save_model_file(tmp_path / "model.pt", HandSegNet(), input_size=INPUT_SIZE,
                            train_config={"images": str(img.parent)})  # fmt: skip
    out = tmp_path / "out"
    args = ["predict", "--model", str(model), str(img), "--out", str(out), "--no-overlay"]
    with caplog.at_level(logging.WARNING, logger="handseg"):
        rc = main([*args, "--runtime", "onnx", "--precision", "int8", "--threads", "1"])
    assert rc == 0
    if dev.int8_support()[0]:
        assert not [r for r in caplog.records if "fp32" in r.getMessage()]  # really int8
    (mask,) = out.glob("*_mask.png")
    assert np.asarray(Image.open(mask)).shape[:2] == (101, 77)
    assert main([*args, "--runtime", "torch", "--precision", "int8"]) == 2


def test_precision_vocabulary_is_shared_by_train_and_predict(net_card):
    """One --precision vocabulary; Lightning's older spellings are aliases."""
    net, card = net_card
    for spelling, name in [("32", "fp32"), ("32-true", "fp32"), ("fp32", "fp32"),
                           ("bf16-mixed", "bf16"), ("16-mixed", "fp16"), ("BF16", "bf16")]:  # fmt: skip
        assert dev.canonical_precision(spelling) == name
    assert dev.training_precision("cpu", "32") == dev.training_precision("cpu", "fp32") == "32-true"
    assert dev.training_precision("cpu", "bf16") == "bf16-mixed"
    assert dev.training_precision("gpu", "16-mixed") == "16-mixed"
    assert dev.training_precision("cpu", "auto") in ("32-true", "bf16-mixed")
    with pytest.raises(HandsegError, match="--precision int8"):
        dev.training_precision("cpu", "int8")
    assert rt.make_backend(net, card, "torch", "32").precision == "fp32"
    assert dev.inference_path("auto", "32-true") == ("onnx", "fp32")


def test_device_resolution():
    assert dev.resolve_device("cpu") == "cpu"
    assert dev.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        for name in ("gpu", "cuda", "cuda:1"):
            with pytest.raises(HandsegError, match="no CUDA GPU"):
                dev.resolve_device(name)
    assert dev.accelerator("cuda") == "gpu" and dev.accelerator("cpu") == "cpu"
