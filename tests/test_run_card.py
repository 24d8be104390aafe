"""RUN/MODEL_CARD.md: written by training and by ``handseg card``, shown by the report."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.core.imaging import read_mask
from handseg.core.rundir import RunDir
from handseg.data.dataset import label_counts
from handseg.data.split import load_split
from handseg.train.model_card import render_model_card


@pytest.fixture(scope="module")
def data8(synth_dir, tmp_path_factory) -> Path:
    """8 of the synthetic pairs (64 x 80): images/ and masks/."""
    root = tmp_path_factory.mktemp("card-data")
    for sub in ("images", "masks"):
        (root / sub).mkdir()
        for p in sorted((synth_dir / sub).iterdir())[:8]:
            shutil.copy(p, root / sub / p.name)
    return root


@pytest.fixture(scope="module")
def card_run(data8, tmp_path_factory) -> RunDir:
    """A one-epoch run trained from a CVAT mask zip (the third import format that trains,
    beside COCO and LabelMe in test_annotations.py), with its test split evaluated."""
    from handseg.core.config import resolve_config
    from handseg.data.convert import convert_masks
    from handseg.train.run import train

    cvat = convert_masks(data8 / "masks", "cvat", data8 / "cvat.zip", images=data8 / "images",
                         progress=False)["out"]  # fmt: skip
    cfg = resolve_config(
        {
            "images": str(data8 / "images"),
            "masks": cvat,
            "out": str(tmp_path_factory.mktemp("card") / "run"),
            "preset": "scratch",
            "epochs": 1,
            "image_size": (64, 80),
            "batch_size": 4,
            "backbone_weights": "none",
            "workers": 0,
            "device": "cpu",
            "split_fractions": (0.5, 0.25, 0.25),
        }
    )
    return RunDir(train(cfg, progress=False))


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_training_writes_the_card_with_the_runs_facts(card_run):
    text = card_run.model_card.read_text()
    for title in ("Model", "Data", "Training", "Test metrics", "Intended use and known limits",
                  "How to load it"):  # fmt: skip
        assert f"\n## {title}\n" in text
    model = _section(text, "Model")
    assert "| preset | scratch |" in model and "| input size | 64 x 80 " in model
    data = _section(text, "Data")
    assert f"`{card_run.read_config()['images']}`" in data
    assert "(CVAT Segmentation mask 1.1 zip)" in data
    assert "| split | 4 / 2 / 2 photos (train / val / test), seed 0" in data
    # class shares: the train masks' pixels, counted here independently
    train = load_split(card_run.split)["train"]
    pixel, _ = label_counts(read_mask(m) for _, m in train)
    hand = 100 * pixel[1] / pixel.sum()
    assert re.search(rf"\| train \| 4 \| [\d.]+ % \| {hand:.1f} % \|", data)
    training = _section(text, "Training")
    assert "| epochs | 1 of 1 |" in training
    assert re.search(r"\| hardware \| CPU: .+ core\(s\) available \|", training)
    test = json.loads(card_run.test_metrics.read_text())
    iou = test["classes"]["hand"]["IoU"]
    assert f"| hand | {test['classes']['hand']['Accuracy']:.4f} | {iou:.4f} |" in text
    assert "On the 2 photos of the test split" in text
    assert "**not measured**" in _section(text, "Intended use and known limits")
    assert f'load_model("{card_run.path.as_posix()}/model.pt")' in text


def test_card_command_lists_evaluations_of_other_data(card_run, capsys):
    other = card_run.path / "eval-wild"  # as `handseg evaluate ... --out RUN/eval-wild` writes
    other.mkdir()
    doc = {"num_images": 75, "classes": {"hand": {"IoU": 0.2617, "MeanBFScore": 0.31}}}
    (other / "metrics.json").write_text(json.dumps(doc))
    assert main(["card", str(card_run)]) == 0
    assert capsys.readouterr().out.strip().endswith("MODEL_CARD.md")
    limits = _section(card_run.model_card.read_text(), "Intended use and known limits")
    assert "| wild | 75 | 0.2617 | 0.3100 | `eval-wild/` |" in limits
    assert "not measured" not in limits
    shutil.rmtree(other)


def test_card_without_test_metrics_or_data_says_so(card_run, tmp_path):
    copy = RunDir(tmp_path / "run")
    shutil.copytree(card_run.path, copy.path)
    shutil.rmtree(copy.test)
    doc = json.loads(copy.split.read_text())
    doc["images_dir"] = str(tmp_path / "moved")  # the photos moved away
    copy.split.write_text(json.dumps(doc))
    text = render_model_card(copy)
    assert "Not measured: this run has no `test/metrics.json`" in text
    assert "Class shares: not available (the data could not be read" in text
    copy.model.unlink()
    with pytest.raises(HandsegError, match="holds no model.pt"):
        render_model_card(copy)


def test_report_shows_the_card(card_run, tmp_path):
    from handseg.report.report import write_report

    html = Path(write_report(card_run, tmp_path / "report.html")).read_text()
    section = html.split('id="model-card"', 1)[1].split("</section>", 1)[0]
    assert "<h2>Model card</h2>" in section and "<table>" in section
    assert "<h2>Test metrics</h2>" in section  # the card's own headings, rendered
    assert html.count('href="#model-card"') == 1
