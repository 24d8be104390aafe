"""ONNX export: round trip, parity with PyTorch at dynamic sizes, metadata, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import handseg
from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.infer.export import export_onnx
from handseg.infer.onnx_file import INPUT_NAME, OUTPUT_NAME, OnnxModel, read_onnx_file
from handseg.model.checkpoint import read_model_file

INPUT_SIZE = (64, 80)


@pytest.fixture(scope="module")
def exported(model_file, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return out, export_onnx(model_file, out, n_checks=3)


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 90)], 2)
    img[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 4) ** 2] = (230, 190, 160)
    return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


def test_export_writes_a_checked_self_describing_file(exported, model_file):
    out, r = exported
    assert out.is_file() and r["path"] == str(out)
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]  # no temporary left
    assert len(r["checks"]) == 3
    assert {c["shape"][0] for c in r["checks"]} == {1, 2}  # batch 1 and 2
    assert any(s % 16 for c in r["checks"] for s in c["shape"][2:])  # not multiples of 16
    assert r["min_mask_agreement"] >= 0.999
    assert 0 <= r["max_abs_diff"] < 1e-3

    import onnx

    proto = onnx.load(str(out))
    (inp,), (outp,) = proto.graph.input, proto.graph.output
    assert (inp.name, outp.name) == (INPUT_NAME, OUTPUT_NAME)
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3]))

    model, card = read_onnx_file(out)
    _, pt_card = read_model_file(model_file)
    assert isinstance(model, OnnxModel) and model.precision == "fp32"
    assert card == pt_card  # the whole model card travels with the export
    assert card.classes == ("background", "hand") and card.input_size == INPUT_SIZE
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["handseg.version"] == handseg.__version__
    # the file layout of earlier versions: the card in model.pt's layout, and three
    # entries of it on their own for readers without handseg
    stored = torch.load(model_file, map_location="cpu", weights_only=True)
    stored.pop("state_dict")
    assert json.loads(props["handseg.meta"]) == stored
    assert json.loads(props["handseg.classes"]) == ["background", "hand"]
    assert json.loads(props["handseg.normalization"]) == stored["normalization"]
    assert json.loads(props["handseg.input_size"]) == list(INPUT_SIZE)


@pytest.mark.parametrize("shape", [(2, 3, 101, 77), (1, 3, 33, 17), (1, 3, 64, 80)])
def test_export_traced_at_one_size_runs_at_others(exported, model_file, shape):
    """The padding to a multiple of 16 is computed from the dynamic input shape."""
    from handseg.infer.onnx_file import ort_session

    out, _ = exported
    net, _ = read_model_file(model_file)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    got = ort_session(out).run(None, {INPUT_NAME: x})[0]
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape == (shape[0], 2, *shape[2:])
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)


def test_onnx_file_loads_via_load_model_and_matches_torch(exported, model_file):
    out, _ = exported
    p_onnx = handseg.load_model(out, precision="fp32")
    p_torch = handseg.load_model(model_file, runtime="torch", precision="fp32")
    assert p_onnx.backend.name == "onnx fp32" and p_onnx.model is None
    assert p_onnx.input_size == INPUT_SIZE and p_onnx.classes == ("background", "hand")
    for h, w in [(101, 77), (64, 80)]:
        img = _photo(h, w, seed=h)
        a, b = p_onnx.predict(img), p_torch.predict(img)
        assert a.shape == b.shape == (h, w)
        assert (a == b).mean() >= 0.999


def test_onnx_file_runs_on_onnxruntime_only(exported):
    auto = handseg.load_model(exported[0])
    assert auto.backend.runtime == "onnx"
    assert auto.predict(_photo(101, 77)).shape == (101, 77)
    with pytest.raises(HandsegError, match="PyTorch weights"):
        handseg.load_model(exported[0], runtime="torch")


def test_non_onnx_files_are_handseg_errors(tmp_path):
    text = tmp_path / "model.onnx"
    text.write_text("this is not a network\n" * 20)
    with pytest.raises(HandsegError, match="model.onnx"):
        read_onnx_file(text)
    with pytest.raises(HandsegError, match="model.onnx"):
        handseg.load_model(text)
    with pytest.raises(HandsegError, match="does not exist"):
        handseg.load_model(tmp_path / "missing.onnx")


def test_foreign_onnx_model_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "g", [x], [y])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(HandsegError, match="not one exported by handseg"):
        handseg.load_model(path)


def test_failed_parity_check_raises_and_writes_nothing(model_file, tmp_path, monkeypatch):
    import handseg.infer.export as export

    def bad_check(model, onnx_path, shapes, **kw):
        return [{"shape": list(s), "max_abs_diff": 3.0, "mask_agreement": 0.9} for s in shapes]

    monkeypatch.setattr(export, "parity_check", bad_check)
    out = tmp_path / "m.onnx"
    with pytest.raises(HandsegError, match=r"mask agreement 90\.000 % < 99\.9 %"):
        export_onnx(model_file, out, n_checks=1)
    assert list(tmp_path.iterdir()) == []


def test_cli_export_prints_the_parity_and_rejects_bad_names(model_file, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", "--model", str(model_file), "--out", str(out), "--checks", "1"]) == 0
    text = capsys.readouterr().out
    assert "max |logit difference|" in text and str(out) in text
    assert read_onnx_file(out)[1].input_size == INPUT_SIZE
    assert main(["export", "--model", str(model_file), "--out", str(tmp_path / "x.pt")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    assert "none.pt" in capsys.readouterr().err


def test_stride_32_network_exports_and_pads_to_its_own_stride(tmp_path):
    """A light network (stride 32, narrow decoder) pads to multiples of 32 in the ONNX graph."""
    from handseg.infer.onnx_file import ort_session
    from handseg.model.checkpoint import save_model_file
    from handseg.model.network import HandSegNet, model_config

    torch.manual_seed(0)
    net = HandSegNet(model_config(2, output_stride=32, decoder_channels=16)).eval()
    pt = save_model_file(
        tmp_path / "light.pt",
        net,
        classes=("background", "hand"),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        input_size=INPUT_SIZE,
    )
    out = tmp_path / "light.onnx"
    export_onnx(pt, out, n_checks=2)
    for shape in [(1, 3, 101, 77), (1, 3, 40, 48)]:  # 40 and 48 are multiples of 16, not 32
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        got = ort_session(out).run(None, {INPUT_NAME: x})[0]
        with torch.inference_mode():
            ref = net(torch.from_numpy(x)).numpy()
        assert got.shape == ref.shape == (1, 2, *shape[2:])
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
