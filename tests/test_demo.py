"""``handseg demo``: synthetic data -> training -> report, at a tiny size."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from urllib.parse import unquote

import pytest

from handseg.app.cli import main
from test_report import _Links  # the same link parser


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["demo", "--out", str(out), "--n", "16", "--size", "48", "64", "--epochs", "1",
                   "--device", "cpu"])  # fmt: skip
    assert rc == 0
    return out, buf.getvalue()


def test_demo_writes_data_run_overlays_and_report(demo):
    out, _ = demo
    assert len(list((out / "data" / "images").iterdir())) == 16
    assert len(list((out / "data" / "masks").iterdir())) == 16
    run = out / "run"
    for name in ("config.yaml", "split.json", "metrics.csv", "training-progress.png", "model.pt",
                 "test/metrics.json", "test/per-image.csv", "test/confusion.png"):  # fmt: skip
        assert (run / name).is_file(), name
    assert json.loads((run / "test" / "metrics.json").read_text())["num_images"] >= 1
    test = [Path(e["image"]).stem for e in json.loads((run / "split.json").read_text())["test"]]
    for stem in test:
        assert (out / "overlays" / f"{stem}_overlay.jpg").is_file(), stem
        assert (out / "overlays" / f"{stem}_mask.png").is_file(), stem


def test_report_refers_only_to_files_that_exist(demo):
    out, _ = demo
    page = out / "report.html"
    text = page.read_text(encoding="utf-8")
    # named by the demo's output folder (its data is demo-output/data) and the preset
    assert "<h1>Hand segmentation report: demo-output, preset demo</h1>" in text
    parsed = _Links()
    parsed.feed(text)
    files = []
    for link in parsed.links:
        if link.startswith("#"):
            assert link[1:] in parsed.ids, f"dangling anchor {link}"
        elif not link.startswith(("data:", "http://", "https://", "mailto:")):
            assert not Path(unquote(link)).is_absolute(), link
            files.append((page.parent / unquote(link)).resolve())
    missing = [f for f in files if not f.is_file()]
    assert files and not missing, missing
    assert all(f.is_relative_to(out.resolve()) for f in files)  # moves with the folder
    # one comparison figure per test image, plus the progress plot and confusion matrix
    n_test = len(json.loads((out / "run" / "split.json").read_text())["test"])
    assert len({f for f in files if f.parent.name == "compare"}) == n_test
    assert {"training-progress.png", "confusion.png"} <= {f.name for f in files}


def test_demo_prints_progress_the_headline_and_the_report_path(demo):
    out, text = demo
    for step in range(1, 6):
        assert f"[{step}/5" in text
    metrics = json.loads((out / "run" / "test" / "metrics.json").read_text())
    iou = metrics["classes"]["hand"]["IoU"]
    headline = next(line for line in text.splitlines() if line.startswith("test split"))
    assert "hand IoU" in headline and "GlobalAccuracy" in headline and "MeanBFScore" in headline
    assert (f"{iou:.4f}" if iou is not None else "n/a") in headline
    assert f"report: {(out / 'report.html').resolve()}" in text


def test_demo_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path), "--n", "8", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(tmp_path) in err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "data").exists()


def test_demo_families_flag(monkeypatch, tmp_path):
    """The demo's photos use the default families unless --families says otherwise."""
    import handseg.app.cli
    from handseg.app.demo import DEMO_FAMILIES

    seen = []
    # the name the command calls (a real demo here would train for minutes)
    monkeypatch.setattr(handseg.app.cli, "run_demo", lambda out, **kw: seen.append(kw["families"]))
    out = str(tmp_path / "x")
    assert main(["demo", "--out", out]) == 0
    assert main(["demo", "--out", out, "--families", "plain", "skin"]) == 0
    assert main(["demo", "--out", out, "--families", "all"]) == 0
    assert seen == [DEMO_FAMILIES, ("plain", "skin"), None]


@pytest.mark.parametrize("command", ["demo", "synth"])
def test_n_is_spelled_the_same_in_demo_and_synth(monkeypatch, tmp_path, command):
    """-n and --n both set the number of photos, in both commands."""
    import handseg.app.cli

    seen = []
    # the names the commands call (a real run here would generate and train)
    monkeypatch.setattr(handseg.app.cli, "run_demo", lambda out, **kw: seen.append(kw["n"]))
    monkeypatch.setattr(
        handseg.app.cli, "make_synthetic", lambda out, **kw: seen.append(kw["n"]) or Path(out)
    )
    out = str(tmp_path / "x")
    assert main([command, "--out", out, "-n", "7"]) == 0
    assert main([command, "--out", out, "--n", "9"]) == 0
    assert seen == [7, 9]
