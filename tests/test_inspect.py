"""Contracts of ``handseg inspect``: the report's numbers and the files it writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handseg.app.cli import main
from handseg.core.constants import CLASS_NAMES
from handseg.data.inspect import format_inspect_report, inspect_data

H, W = 48, 64
HAND_BOXES = [(10, 20), (5, 8), (20, 30), (12, 12), (30, 10), (16, 16)]  # (h, w) of each hand


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, Path]:
    """Six photos with masks (named <stem>_mask.png) whose hand is a box of known size."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for k, (bh, bw) in enumerate(HAND_BOXES):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(images / f"p{k}.png")
        mask = np.zeros((H, W), np.uint8)
        mask[5 : 5 + bh, 7 : 7 + bw] = 255
        Image.fromarray(mask).save(masks / f"p{k}_mask.png")
    return images, masks


def test_inspect_counts_sizes_and_weights(tiny, tmp_path):
    info = inspect_data(*tiny, out=tmp_path / "report")
    assert info["rule"] == "stem" and info["num_pairs"] == 6
    assert info["image_sizes"] == {"64 x 48": 6} and info["mask_sizes"] == {"64 x 48": 6}
    hand = sum(h * w for h, w in HAND_BOXES)
    total = 6 * H * W
    bg, fg = info["classes"]
    assert (bg["name"], fg["name"]) == CLASS_NAMES
    assert (bg["pixel_count"], bg["image_pixel_count"]) == (total - hand, total)
    assert (fg["pixel_count"], fg["image_pixel_count"]) == (hand, total)
    freq = np.array([(total - hand) / total, hand / total])
    assert fg["frequency"] == pytest.approx(freq[1])
    weights = np.median(freq) / freq
    assert info["class_weights"]["background"] == pytest.approx(weights[0], rel=1e-6)
    assert info["class_weights"]["hand"] == pytest.approx(weights[1], rel=1e-6)
    shares = [h * w / (H * W) for h, w in HAND_BOXES]
    assert info["hand_share"]["min"] == pytest.approx(min(shares))
    assert info["hand_share"]["max"] == pytest.approx(max(shares))
    for name in ("class-frequency.png", "samples.png", "inspect.json"):
        assert (tmp_path / "report" / name).is_file()
    with Image.open(tmp_path / "report" / "samples.png") as im:
        assert im.format == "PNG" and im.width > 300

    text = format_inspect_report(info)
    for word in ("PixelCount", "ImagePixelCount", "Frequency", "background", "hand", "file name"):
        assert word in text
    assert f"{total - hand:d}" in text and f"{weights[1]:.4g}" in text


def test_cli_inspect_writes_both_pngs(tiny, tmp_path, capsys):
    out = tmp_path / "inspect"
    rc = main(["inspect", "--images", str(tiny[0]), "--masks", str(tiny[1]), "--out", str(out)])
    assert rc == 0
    for name in ("class-frequency.png", "samples.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG"
    stdout = capsys.readouterr().out
    assert "pairs:  6" in stdout and "PixelCount" in stdout


def test_cli_missing_folder_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope"
    rc = main(["inspect", "--images", str(missing), "--masks", str(missing)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]


def test_cli_unknown_mask_encoding_then_hand_value(tiny, capsys):
    images, masks = tiny
    labels = np.zeros((H, W), np.uint8)
    labels[:, 16:32], labels[:, 32:48], labels[:, 48:] = 60, 120, 180
    Image.fromarray(labels).save(masks / "p3_mask.png")
    rc = main(["inspect", "--images", str(images), "--masks", str(masks)])
    err = capsys.readouterr().err
    assert rc == 2 and "p3_mask.png" in err and "--hand-value" in err
    assert "Traceback" not in err
    # every mask stores hand as 255 except p3 which holds labels: 255 occurs nowhere there
    rc = main(["inspect", "--images", str(images), "--masks", str(masks), "--hand-value", "255"])
    assert rc == 0


def test_cli_process_exit_status_and_no_traceback(tmp_path):
    missing = str(tmp_path / "missing")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "handseg.app.cli",
            "inspect",
            "--images",
            missing,
            "--masks",
            missing,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error:") and "missing" in lines[0]
    assert "Traceback" not in proc.stderr
