"""Two-process DDP training on the CPU (gloo) gives the same kind of run folder as one
process: one model file, written by rank 0; the validation figures the two processes
computed together (each on its share of the validation set, sums reduced across them)
equal a single-process computation of the same figures here, with plain torch; the test
metrics rank 0 wrote equal a separate evaluation of the model.

The data set has 25 photos, so the validation set (5) does not split evenly between the
two processes: a sampler that pads the shorter share with a repeated photo would count
that photo twice and fail the comparison."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import handseg
from handseg.core.constants import IGNORE_INDEX
from handseg.data.dataset import SegDataset
from handseg.data.split import load_split
from handseg.eval.evaluate import evaluate_model
from handseg.model.checkpoint import read_model_file


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory):
    """25 synthetic 64 x 80 photos: split 15 / 5 / 5."""
    from handseg.synth.hands import make_synthetic

    root = tmp_path_factory.mktemp("ddp-data") / "synth"
    return make_synthetic(root, n=25, size=(64, 80), seed=1, progress=False)


@pytest.fixture(scope="module")
def ddp_run(odd_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    cmd = [
        sys.executable, "-m", "handseg.app.cli", "train",
        "--images", str(odd_data / "images"), "--masks", str(odd_data / "masks"),
        "--out", str(out), "--image-size", "64", "80", "--batch-size", "2", "--epochs", "1",
        "--backbone-weights", "none", "--workers", "0", "--precision", "32",
        "--class-weighting", "none", "--device", "cpu", "--devices", "2", "--strategy", "ddp",
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


def test_ddp_validation_figures_equal_a_single_process_computation(ddp_run):
    """val_loss (mean cross-entropy over the validation pixels; no class weights in this
    run) and val_acc of the one epoch, as the 2-process run logged them, against the same
    figures computed here in one process from model.pt (the weights that epoch ended with:
    one epoch, so the best) on the 5 validation photos, each counted once."""
    out, _ = ddp_run
    split = load_split(out / "split.json")
    assert len(split["val"]) == 5  # odd: two processes cannot hold equal shares
    net, _ = read_model_file(out / "model.pt")
    net.eval()
    loss_sum = correct = valid = 0.0
    data = SegDataset(split["val"], (64, 80), None)
    with torch.inference_mode():
        for i in range(len(data)):
            x, y = data[i]
            logits = net(x[None].float())
            keep = y[None] != IGNORE_INDEX
            loss = F.cross_entropy(logits, y[None].long(), ignore_index=IGNORE_INDEX,
                                   reduction="sum")  # fmt: skip
            loss_sum += float(loss)
            correct += float((logits.argmax(1)[keep] == y[None][keep]).sum())
            valid += float(keep.sum())
    with open(out / "metrics.csv", newline="") as f:
        (row,) = [r for r in csv.DictReader(f) if r["val_loss"]]
    assert float(row["val_loss"]) == pytest.approx(loss_sum / valid, rel=1e-4)
    assert float(row["val_acc"]) == pytest.approx(correct / valid, abs=0.5 / valid)


def test_ddp_test_metrics_equal_a_separate_evaluation(ddp_run):
    """Rank 0 scores the test split after training; a separate evaluation agrees."""
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
    # 15 training images, batch 2 per process, 2 processes -> 4 iterations in the epoch
    assert [int(r["step"]) for r in train_rows] == [1, 2, 3, 4]
    assert len(val_rows) == 1
