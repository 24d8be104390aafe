"""``handseg report``: the HTML report of a training run, complete or missing pieces."""

from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from handseg.app.cli import main
from handseg.core.config import resolve_config
from handseg.core.errors import HandsegError
from handseg.core.rundir import RunDir
from handseg.report.context import run_title
from handseg.report.report import write_report
from handseg.report.run import read_run
from handseg.train.run import train


class _Links(HTMLParser):
    """Every src= and href= value of a page; also its ids, text and attribute values
    (entities decoded)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.text = ""
        self.attr_values: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v is not None:
                self.links.append(v)
            if k == "id" and v:
                self.ids.add(v)
            if v is not None:
                self.attr_values.append(v)

    def handle_data(self, data):
        self.text += data


def _links(html_path: Path) -> _Links:
    p = _Links()
    p.feed(html_path.read_text(encoding="utf-8"))
    return p


def _local_files(html_path: Path) -> list[Path]:
    """The files the page refers to (not data: URIs, #anchors or web links); anchors must
    name an element of the page."""
    parsed = _links(html_path)
    files = []
    for link in parsed.links:
        if link.startswith("#"):
            assert link[1:] in parsed.ids, f"dangling anchor {link}"
        elif not link.startswith(("data:", "http://", "https://", "mailto:")):
            files.append(html_path.parent / unquote(link))
    return files


@pytest.fixture(scope="module")
def run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    cfg = resolve_config(
        {
            "images": str(synth_dir / "images"),
            "masks": str(synth_dir / "masks"),
            "out": str(out),
            "image_size": (64, 80),
            "batch_size": 4,
            "backbone_weights": "none",
            "workers": 0,
            "device": "cpu",
            "epochs": 1,
            "preset": "scratch",
        }
    )
    return train(cfg, progress=False)


def _test_names(run: Path) -> list[str]:
    return [Path(e["image"]).name for e in json.loads((run / "split.json").read_text())["test"]]


def _copy_run(run: Path, dest: Path, *, without: tuple[str, ...] = ()) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoints", "report*", *without))
    return dest


def test_cli_report_explains_the_metrics_and_shows_every_test_image(run, tmp_path, capsys):
    run = _copy_run(run, tmp_path / "r")
    assert main(["report", str(run), "--device", "cpu"]) == 0
    page = run / "report.html"
    assert capsys.readouterr().out.strip().endswith(str(page))
    text = page.read_text(encoding="utf-8")
    for name in ("GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore",
                 "Hand IoU", "BF score", "Training progress", "confusion matrix"):  # fmt: skip
        assert name in text, name
    assert "Missing from this run" not in text
    # named by its data folder and preset, and the run folder's name ("r", not the default)
    assert "<h1>Hand segmentation report: synth, preset scratch (r)</h1>" in text
    names = _test_names(run)
    assert names
    for name in names:
        assert name in text, name
    # every picture is a file beside the page, and each one exists
    files = _local_files(page)
    assert files and all(f.is_file() for f in files), [f for f in files if not f.is_file()]
    assert sum("/compare/" in f.as_posix() for f in set(files)) == len(names)
    assert {"training-progress.png", "confusion.png"} <= {f.name for f in files}


def test_test_images_come_worst_first_with_the_evaluation_scores(run, tmp_path):
    page = write_report(_copy_run(run, tmp_path / "r"), device="cpu")
    text = page.read_text(encoding="utf-8")
    # figure headings: "<h3>1. name <span>hand IoU 0.1234 &middot; BF 0.5678</span>"
    shown = re.findall(
        r'id="img-\d+"><h3>\d+\. (.+?) <span>hand IoU ([^<\s]+) &middot; BF ([^<\s]+)<', text
    )
    assert [n for n, _, _ in shown] and len(shown) == len(_test_names(run))
    ious = [float(v) if v != "n/a" else float("inf") for _, v, _ in shown]
    assert ious == sorted(ious)
    # the same per-image numbers as the test-split evaluation of the training run
    with open(run / "test" / "per-image.csv", newline="") as f:
        expected = {r["image"]: r for r in csv.DictReader(f)}
    for name, iou, bf in shown:
        row = expected[name]
        if row["hand_iou"]:
            assert float(iou) == pytest.approx(float(row["hand_iou"]), abs=1e-4)
        if row["bf"]:
            assert float(bf) == pytest.approx(float(row["bf"]), abs=1e-4)


def test_embedded_report_is_one_file(run, tmp_path):
    page = write_report(run, tmp_path / "share" / "one.html", embed=True, device="cpu")
    assert page == tmp_path / "share" / "one.html"
    assert sorted(p.name for p in page.parent.iterdir()) == ["one.html"]
    parsed = _links(page)
    images = [v for v in parsed.links if not v.startswith("#")]
    assert images and all(v.startswith("data:image/") for v in images)
    assert _local_files(page) == []
    # the style sheet is inlined from its file, and no template syntax is left over
    text = page.read_text(encoding="utf-8")
    style = text[text.index("<style>") : text.index("</style>")]
    assert ".tile" in style and ".gallery" in style
    assert "{{" not in text and "{%" not in text


def test_report_of_a_run_without_test_evaluation_says_what_is_missing(run, tmp_path):
    partial = _copy_run(run, tmp_path / "no-test", without=("test",))
    page = write_report(partial, device="cpu")
    text = page.read_text(encoding="utf-8")
    assert "Missing from this run" in text and "test/metrics.json" in text
    assert "handseg evaluate" in text  # says how to add it
    assert 'id="headline"' not in text and 'id="metrics"' not in text
    # the model and the split are there, so the test images are still shown
    for name in _test_names(partial):
        assert name in text
    assert all(f.is_file() for f in _local_files(page))


def test_report_of_an_interrupted_run_without_a_model(run, tmp_path):
    partial = _copy_run(run, tmp_path / "no-model", without=("test", "model.pt"))
    text = write_report(partial, device="cpu").read_text(encoding="utf-8")
    assert "model.pt" in text and "--resume" in text
    assert "Training progress" in text  # metrics.csv is still there
    assert 'id="images"' not in text


def test_file_names_are_escaped(run, tmp_path):
    """Names with HTML characters appear escaped, never as markup."""
    r = _copy_run(run, tmp_path / "odd", without=("test",))
    split = json.loads((r / "split.json").read_text())
    images = tmp_path / "odd-images"
    images.mkdir()
    entry = split["test"][0]
    odd = 'a<b>&"x.png'
    shutil.copyfile(Path(split["images_dir"]) / entry["image"], images / odd)
    for name in ("train", "val", "test"):
        for e in split[name]:
            if e is not entry:
                shutil.copyfile(Path(split["images_dir"]) / e["image"], images / e["image"])
    entry["image"] = odd
    split["images_dir"] = str(images)
    (r / "split.json").write_text(json.dumps(split))
    text = write_report(r, device="cpu").read_text(encoding="utf-8")
    assert odd not in text and "<b>&" not in text
    # a parser reads the escaped name back (whichever entity spelling the escaping chose),
    # in the page's text and in attribute values (alt=)
    parsed = _Links()
    parsed.feed(text)
    assert odd in parsed.text and any(odd in v for v in parsed.attr_values)


def test_not_a_run_folder_is_refused(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"")
    with pytest.raises(HandsegError, match="not a training run folder"):
        write_report(tmp_path / "photos")
    with pytest.raises(HandsegError, match="does not exist"):
        write_report(tmp_path / "nowhere")
    assert main(["report", str(tmp_path / "photos")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "photos" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("folder", "config", "title"),
    [
        # the demo's layout: DIR/data/images -> the demo's output folder
        ("demo-output/run", {"images": "{tmp}/demo-output/data/images", "preset": "demo"},
         "demo-output, preset demo"),
        ("runs/run", {"images": "/d/arsl-bg11", "masks": "/d/arsl-gt", "preset": "robust"},
         "arsl-bg11, preset robust"),
        ("runs/lr-1e-3", {"images": "/d/arsl-bg11/Images", "preset": "scratch"},
         "arsl-bg11, preset scratch (lr-1e-3)"),
        ("runs/exp3", {"preset": "hands"}, "preset hands (exp3)"),  # split file only
        ("runs/exp4", None, "exp4"),  # no config.yaml: the folder's name
    ],
)  # fmt: skip
def test_the_title_names_the_data_folder_and_the_preset(tmp_path, folder, config, title):
    run_dir = tmp_path / folder
    run_dir.mkdir(parents=True)
    if config is not None:
        images = config.get("images", "")
        config = config | ({"images": images.format(tmp=tmp_path)} if images else {})
        (run_dir / "config.yaml").write_text(
            "".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items())
        )
    assert run_title(read_run(RunDir(run_dir))) == title
