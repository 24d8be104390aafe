"""Two-process DDP training on the CPU (gloo) gives the same kind of run folder as one
process: one model file, written by rank 0, whose metrics match a single-process
evaluation of the same model on the same data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

import handseg
from handseg.data.split import load_split
from handseg.eval.evaluate import evaluate_model


@pytest.fixture(scope="module")
def ddp_run(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    cmd = [
        sys.executable, "-m", "handseg.app.cli", "train",
        "--images", str(synth_dir / "images"), "--masks", str(synth_dir / "masks"),
        "--out", str(out), "--image-size", "64", "80", "--batch-size", "2", "--epochs", "1",
        "--backbone-weights", "none", "--workers", "0", "--precision", "32",
        "--device", "cpu", "--devices", "2", "--strategy", "ddp",
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_ddp_run_folder_matches_a_single_process_run(ddp_run):
    out, proc = ddp_run
    assert sorted(p.name for p in out.glob("*.pt")) == ["model.pt"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("config.yaml", "split.json", "metrics.csv", "test/metrics.json"):
        assert (out / name).is_file(), name
    assert proc.stdout.count("run folder:") == 1  # only rank 0 reports
    # the checkpoint loads on a CPU-only machine
    obj = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert obj["train_config"]["devices"] == 2


def test_ddp_metrics_equal_a_single_process_evaluation(ddp_run):
    out, _ = ddp_run
    stored = json.loads((out / "test" / "metrics.json").read_text())
    split = load_split(out / "split.json")
    # train() scores the test split with the exact fp32 network; do the same here
    predictor = handseg.load_model(out / "model.pt", runtime="torch", precision="fp32")
    again = evaluate_model(predictor, split["test"], progress=False)
    assert stored["confusion"] == again["confusion"]  # counts summed, identical
    for k, v in again["dataset"].items():
        assert stored["dataset"][k] == pytest.approx(v, nan_ok=True)


def test_ddp_history_has_one_row_per_iteration(ddp_run):
    out, _ = ddp_run
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train_rows = [r for r in rows if r["train_loss"]]
    val_rows = [r for r in rows if r["val_loss"]]
    # 12 training images, batch 2 per process, 2 processes -> 3 iterations in the epoch
    assert [int(r["step"]) for r in train_rows] == [1, 2, 3]
    assert len(val_rows) == 1
