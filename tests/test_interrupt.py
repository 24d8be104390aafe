"""Interrupted training: SIGKILL a ``handseg train`` run, resume it, get the same result.

A tiny run (10 synthetic 32 x 48 photos, 6 for training, batch 3, 3 epochs, learning rate
dropped every epoch so a scheduler that restarts wrongly would show in the ``lr`` column)
runs once without interruption and once killed with SIGKILL and resumed with
``handseg train --resume RUN`` until it finishes. Kill points: while a checkpoint that a
resume depends on is being replaced (its temporary file exists), at seeded random moments,
and (slow test) while ``model.pt`` is being written.

After every kill each file of the run loads (checkpoints, model, metrics.csv, split.json:
writes are atomic); the resumed run completes with the same split, every epoch validated
once and iterations numbered without gap or repeat; and it equals the uninterrupted run
exactly: every metrics.csv value but the wall-clock time, the test metrics, and the
weights in model.pt, bit for bit (one CPU thread, float32, no loader workers). The last
checkpoint holds the last epoch, so a kill loses at most the epoch in progress.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from handseg.data.split import load_split
from handseg.model.checkpoint import read_model_file

EPOCHS = 3
_REPLACING = "while replacing a checkpoint"
_CKPT_TEMP = re.compile(r"^tmp\w{8}$")  # fsspec's temporary file for Lightning checkpoints


def _train_cmd(data: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "handseg.app.cli", "train", "--images", str(data / "images"),
            "--masks", str(data / "masks"), "--out", str(run), "--image-size", "32", "48",
            "--batch-size", "3", "--epochs", str(EPOCHS), "--lr-drop-period", "1",
            "--backbone-weights", "none", "--workers", "0", "--precision", "32",
            "--device", "cpu", "--patience", "0", "--seed", "3"]  # fmt: skip


def _env(tmpdir: Path) -> dict[str, str]:
    tmpdir.mkdir(parents=True, exist_ok=True)
    return os.environ | {
        "TMPDIR": str(tmpdir),  # where Lightning (fsspec) stages checkpoint files
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from handseg.synth.hands import make_synthetic

    return make_synthetic(
        tmp_path_factory.mktemp("interrupt") / "data", n=10, size=(32, 48), seed=0,
        progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def baseline(tiny_data, tmp_path_factory) -> tuple[Path, float]:
    """The uninterrupted run, and how long after its start the last checkpoint was written
    (s): the horizon for random kills. The run's whole duration would not do: the test
    and the model.pt write after the last checkpoint take a share that differs between
    machines, and a kill there leaves no checkpoint replacement for the next kill point."""
    root = tmp_path_factory.mktemp("baseline")
    run = root / "run"
    t0 = time.time()  # wall clock, to compare with file times
    proc = subprocess.run(_train_cmd(tiny_data, run), env=_env(root / "tmp"),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    last_ckpt = max(p.stat().st_mtime for p in (run / "checkpoints").glob("*.ckpt"))
    return run, last_ckpt - t0


# --- killing --------------------------------------------------------------------------------


def _wait_and_kill(proc: subprocess.Popen, trigger, timeout: float = 600) -> bool:
    """Poll every 2 ms; SIGKILL ``proc`` as soon as ``trigger()`` is true. Returns whether
    it was killed (False: it finished first)."""
    end = time.monotonic() + timeout
    while proc.poll() is None:
        if trigger():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("training did not finish in time")
        time.sleep(0.002)
    return False


def _checkpoint_being_written(tmpdir: Path, run: Path):
    """True while a checkpoint is being written and last.ckpt already exists (so the kill
    hits the *replacement* of a checkpoint a resume depends on). Lightning stages it in
    TMPDIR (fsspec); an atomic writer stages ``.<name>.*.tmp.ckpt`` in checkpoints/."""
    ckpts = run / "checkpoints"

    def staged(folder: Path, pattern) -> bool:
        with os.scandir(folder) as it:
            return any(pattern(e.name) and e.is_file() for e in it)

    def trigger() -> bool:
        if not (ckpts / "last.ckpt").exists():
            return False
        return staged(tmpdir, _CKPT_TEMP.match) or staged(
            ckpts, lambda n: n.startswith(".") and ".tmp" in n
        )

    return trigger


def _model_being_written(run: Path):
    def trigger() -> bool:
        if not run.is_dir():  # killed before the run folder was made: not yet
            return False
        with os.scandir(run) as it:
            return any(e.name.startswith(".model.") and ".tmp" in e.name for e in it)

    return trigger


def _after(seconds: float):
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0 >= seconds


# --- checks ---------------------------------------------------------------------------------


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        return [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(f)]


def _check_files_load(run: Path) -> list[str]:
    """Every file of the run folder that exists must be whole. Returns what exists."""
    present = []
    ckpt_dir = run / "checkpoints"
    # hidden .<name>.*.tmp.ckpt files are an atomic writer's unfinished files, not checkpoints
    for ckpt in sorted(ckpt_dir.glob("[!.]*.ckpt")) if ckpt_dir.exists() else []:
        obj = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert {"state_dict", "optimizer_states", "loops", "callbacks"} <= set(obj), ckpt
        present.append(ckpt.name)
    if (run / "model.pt").exists():
        read_model_file(run / "model.pt")
        present.append("model.pt")
    if (run / "metrics.csv").exists():
        _rows(run)
        present.append("metrics.csv")
    if (run / "split.json").exists():
        load_split(run / "split.json")
        present.append("split.json")
    return present


def _resume_until_done(cmd_fresh, cmd_resume, env, kills, run: Path, log: list[str]) -> None:
    """Start the run, apply each (label, kill trigger factory) in turn, each to a new
    process resuming after the previous kill, then resume until it exits 0. A process that
    has nothing to resume (killed before the first checkpoint) starts afresh under the same
    kill point, so no kill point is spent on it."""
    cmd, pending, restarts = cmd_fresh, list(kills) + [("", None)] * 3, 0
    while pending:
        label, make_trigger = pending[0]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        if make_trigger is not None and _wait_and_kill(proc, make_trigger()):
            files = ", ".join(_check_files_load(run)) or "none yet"
            log.append(f"killed {label}; files intact: {files}")
        else:
            err = proc.communicate(timeout=600)[1]
            if proc.returncode == 0:
                log.append("finished")
                return
            if "cannot resume" in err and restarts < len(kills):
                log.append("nothing to resume: started afresh")
                cmd, restarts = cmd_fresh, restarts + 1
                continue
            raise AssertionError(f"exit {proc.returncode}: {err[-3000:]}")
        cmd = cmd_resume
        pending.pop(0)
    raise AssertionError(f"the run did not finish: {log}")


def _assert_completed(run: Path, ref: Path) -> None:
    """The resumed run finished every epoch once, on the same split, with whole files."""
    assert (
        json.loads((run / "split.json").read_text())["train"]
        == json.loads((ref / "split.json").read_text())["train"]
    )
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows if r["val_loss"]] == list(range(1, EPOCHS + 1))
    steps = [int(r["step"]) for r in rows if r["train_loss"]]
    assert steps == list(range(1, len(_rows(ref)) - EPOCHS + 1))  # no gap, no repeat
    assert [r["lr"] for r in rows] == [r["lr"] for r in _rows(ref)]  # schedule in step
    assert (run / "test" / "metrics.json").is_file()
    assert {"best.ckpt", "last.ckpt", "model.pt", "metrics.csv"} <= set(_check_files_load(run))


def _assert_same_result(run: Path, ref: Path) -> None:
    rows, ref_rows = _rows(run), _rows(ref)
    assert [r for r in rows if r["val_loss"]] == [r for r in ref_rows if r["val_loss"]]
    assert rows == ref_rows  # every iteration: epoch, step, lr, loss, accuracy
    got = json.loads((run / "test" / "metrics.json").read_text())
    want = json.loads((ref / "test" / "metrics.json").read_text())
    assert got["dataset"] == want["dataset"] and got["classes"] == want["classes"]
    sd = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    ref_sd = torch.load(ref / "model.pt", weights_only=True)["state_dict"]
    assert sd.keys() == ref_sd.keys()
    assert all(torch.equal(sd[k], ref_sd[k]) for k in sd), "weights differ"


def _report(log: list[str], tmpdir: Path, run: Path) -> None:
    """Print what happened (pytest -s), including staged checkpoint files kills left behind
    (in TMPDIR, or hidden in checkpoints/)."""
    leaked = [p for p in tmpdir.iterdir() if _CKPT_TEMP.match(p.name) and p.is_file()]
    if (run / "checkpoints").exists():
        leaked += list((run / "checkpoints").glob(".*.tmp*"))
    mb = sum(p.stat().st_size for p in leaked) / 2**20
    print("\n" + "\n".join(log) + f"\nstaged checkpoint files left: {len(leaked)} ({mb:.0f} MB)")


def _kill_schedule(seed: int, n_random: int, horizon: float) -> list:
    """``n_random`` triggers "kill d seconds after start", d seeded-uniform in 0.15..0.6 x
    horizon (when the uninterrupted run wrote its last checkpoint; well before it, as the
    load varies, so a checkpoint replacement is still to come after the kill)."""
    rng = random.Random(seed)
    delays = [rng.uniform(0.15, 0.6) * horizon for _ in range(n_random)]
    return [(f"{d:.1f} s after start", lambda d=d: _after(d)) for d in delays]


def _interrupted(tiny_data: Path, root: Path, kills: list) -> tuple[Path, list[str]]:
    run = root / "run"
    log: list[str] = []
    _resume_until_done(_train_cmd(tiny_data, run), _resume_cmd(run), _env(root / "tmp"), kills,
                       run, log)  # fmt: skip
    _report(log, root / "tmp", run)
    return run, log


def _resume_cmd(run: Path) -> list[str]:
    return [sys.executable, "-m", "handseg.app.cli", "train", "--resume", str(run)]


@pytest.fixture(scope="module")
def interrupted(tiny_data, baseline, tmp_path_factory) -> tuple[Path, list[str]]:
    """Killed while a checkpoint is replaced, then at a seeded random moment; resumed."""
    root = tmp_path_factory.mktemp("interrupted")
    kills = [(_REPLACING, lambda: _checkpoint_being_written(root / "tmp", root / "run"))]
    kills += _kill_schedule(seed=1, n_random=1, horizon=baseline[1])
    return _interrupted(tiny_data, root, kills)


def test_every_file_loads_after_every_kill_and_the_run_completes(interrupted, baseline):
    run, log = interrupted
    assert log[0].startswith(f"killed {_REPLACING}"), log
    assert log[-1] == "finished"
    _assert_completed(run, baseline[0])


def test_resumed_run_equals_the_uninterrupted_run(interrupted, baseline):
    _assert_same_result(interrupted[0], baseline[0])


def test_last_checkpoint_holds_the_last_epoch(baseline):
    """last.ckpt holds the last epoch and best.ckpt the epoch of the lowest val_loss,
    whichever epoch that was (no skip: both hold on every run)."""
    run = baseline[0]
    val = [float(r["val_loss"]) for r in _rows(run) if r["val_loss"]]
    assert len(val) == EPOCHS
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert last["epoch"] == EPOCHS - 1
    assert best["epoch"] == int(np.argmin(val))
    if best["epoch"] != last["epoch"]:  # two different states: last is not a copy of best
        assert any(not torch.equal(last["state_dict"][k], v)
                   for k, v in best["state_dict"].items())  # fmt: skip


@pytest.fixture(scope="module", params=[2, 3])
def many_kills(request, tiny_data, baseline, tmp_path_factory) -> tuple[Path, list[str]]:
    """Two random kills, two during checkpoint replacements, one during the model.pt write,
    two more random ones (those after the end of training are not reached)."""
    seed = request.param
    root = tmp_path_factory.mktemp(f"many{seed}")
    run = root / "run"
    kills = _kill_schedule(seed=seed, n_random=2, horizon=baseline[1])
    kills.insert(1, (_REPLACING, lambda: _checkpoint_being_written(root / "tmp", run)))
    kills.append((_REPLACING, lambda: _checkpoint_being_written(root / "tmp", run)))
    kills.append(("while writing model.pt", lambda: _model_being_written(run)))
    kills += _kill_schedule(seed=seed + 100, n_random=2, horizon=baseline[1])
    return _interrupted(tiny_data, root, kills)


@pytest.mark.slow
def test_many_kills_every_file_loads_and_the_run_completes(many_kills, baseline):
    run, log = many_kills
    # >= 2: later kill points are not reached when the run ends before them
    assert sum(line.startswith("killed") for line in log) >= 2, log
    _assert_completed(run, baseline[0])


@pytest.mark.slow
def test_many_kills_equal_the_uninterrupted_run(many_kills, baseline):
    _assert_same_result(many_kills[0], baseline[0])
