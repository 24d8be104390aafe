"""The model card: one typed record of a model's metadata, read from and written to model.pt
and the ONNX file, with one set of defaults; and the one normalize()."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import handseg
from handseg.core.constants import CLASS_NAMES, DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD
from handseg.core.errors import HandsegError
from handseg.core.imaging import normalize
from handseg.model.card import FORMAT, FORMAT_VERSION, ModelCard
from handseg.model.checkpoint import read_model_file, save_model_file
from handseg.model.network import HandSegNet, model_config
from test_export import _photo

TRAIN_CONFIG = {"preset": "scratch", "image_size": [64, 80], "out": "runs/x", "lr": 0.01}


def _old_layout_file(path, net: HandSegNet) -> None:
    """A model.pt exactly as handseg wrote it before the model card (save_model_file of
    c81e297^:src/handseg/checkpoint.py): a plain dict built field by field."""
    torch.save(
        {
            "format": "handseg-model",
            "format_version": 1,
            "model": net.cfg.to_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            "classes": ["background", "hand"],
            "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "input_size": [64, 80],
            "train_config": TRAIN_CONFIG,
            "backbone_weights": "none",
            "metrics": {"best_val_loss": 0.25, "test": {"hand_IoU": 0.5}},
            "versions": {"handseg": "0.1.0", "torch": "2.2.0"},
        },
        path,
    )


@pytest.fixture(scope="module")
def light_net() -> HandSegNet:
    torch.manual_seed(0)
    return HandSegNet(model_config(2, output_stride=32, decoder_channels=16)).eval()


def test_one_set_of_defaults():
    card = ModelCard()
    assert card.input_size == DEFAULT_INPUT_SIZE == (720, 960)
    assert card.classes == CLASS_NAMES
    assert (card.mean, card.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert ModelCard.from_dict({}) == card  # a file that names nothing gets the same


def test_dict_round_trip_keeps_everything_and_unknown_keys():
    card = ModelCard(
        architecture=model_config(2, output_stride=32, decoder_channels=16),
        input_size=(64, 80),
        train_config=TRAIN_CONFIG,
        metrics={"test": {"hand_IoU": 0.5}},
        extra={"added_later": [1, 2]},
    )
    d = card.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain containers only
    assert (d["format"], d["format_version"]) == (FORMAT, FORMAT_VERSION)
    assert d["input_size"] == [64, 80] and d["model"]["aspp_rates"] == [3, 6, 9]
    assert d["added_later"] == [1, 2]
    assert ModelCard.from_dict(d) == card


def test_old_layout_file_loads_and_predicts_identically(light_net, tmp_path):
    old, new = tmp_path / "old.pt", tmp_path / "new.pt"
    _old_layout_file(old, light_net)
    card = ModelCard(
        input_size=(64, 80),
        train_config=TRAIN_CONFIG,
        metrics={"best_val_loss": 0.25, "test": {"hand_IoU": 0.5}},
    )
    save_model_file(new, light_net, card)

    a, b = torch.load(old, weights_only=True), torch.load(new, weights_only=True)
    assert list(a) == list(b)  # the same keys in the same order
    assert {k: v for k, v in a.items() if k not in ("state_dict", "versions")} == {
        k: v for k, v in b.items() if k not in ("state_dict", "versions")
    }
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])

    (_, card_a), (_, card_b) = read_model_file(old), read_model_file(new)
    assert card_a.versions == {"handseg": "0.1.0", "torch": "2.2.0"}
    assert card_a == ModelCard.from_dict(card_b.to_dict() | {"versions": card_a.versions})
    assert card_a.architecture == light_net.cfg
    image = _photo(101, 77)
    pa = handseg.load_model(old, runtime="torch", precision="fp32")
    pb = handseg.load_model(new, runtime="torch", precision="fp32")
    x = pa._preprocess(image)[None]
    np.testing.assert_array_equal(pa._logits(x), pb._logits(x))
    np.testing.assert_array_equal(pa.predict(image), pb.predict(image))


def test_save_model_file_takes_a_card_or_its_fields(light_net, tmp_path):
    path = save_model_file(tmp_path / "m.pt", light_net, ModelCard(input_size=(32, 48)),
                           metrics={"epochs_run": 2})  # fmt: skip
    _, card = read_model_file(path)
    assert card.input_size == (32, 48) and card.metrics == {"epochs_run": 2}
    assert card.architecture == light_net.cfg  # always the network's own
    assert "torch" in card.versions  # the writer's versions
    path = save_model_file(tmp_path / "k.pt", light_net, classes=("bg", "hand"), mean=(0.5,) * 3)
    _, card = read_model_file(path)
    assert card.classes == ("bg", "hand") and card.mean == (0.5, 0.5, 0.5)
    assert card.input_size == DEFAULT_INPUT_SIZE


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("input_size", "large"),
        ("input_size", [64]),
        ("normalization", {"mean": [0.5, 0.5], "std": [1, 1, 1]}),
        ("normalization", [1, 2]),
        ("classes", ["hand"]),
        ("train_config", [1, 2]),
        ("model", {"output_stride": 5}),
    ],
)
def test_damaged_metadata_is_a_handseg_error_naming_the_file(light_net, tmp_path, key, value):
    path = tmp_path / "m.pt"
    save_model_file(path, light_net)
    obj = torch.load(path, weights_only=True)
    obj[key] = value
    torch.save(obj, path)
    with pytest.raises(HandsegError, match="m.pt") as info:
        handseg.load_model(path)
    assert "\n" not in str(info.value)


def test_normalize_is_the_z_score_of_x_over_255():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = normalize(image)
    assert x.shape == (3, 5, 7) and x.dtype == np.float32 and x.flags.c_contiguous
    expect = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x, expect.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
    y = normalize(image, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    np.testing.assert_allclose(y, image.transpose(2, 0, 1) / 127.5 - 1, atol=1e-5)
