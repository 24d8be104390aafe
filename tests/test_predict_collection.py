"""Prediction over whole collections (``handseg predict --devices N --skip-existing``):
two processes write the masks of one, a run killed with SIGKILL and restarted ends with
the files of an uninterrupted run, bad inputs are recorded in the manifest and skipped;
each mask equals ``Predictor.predict`` (or the hand pipeline, with ``--instances``) on its
image alone, and a batch that fails part-way falls back to one image at a time."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import handseg
from handseg.app.cli import main
from handseg.core.imaging import read_image
from handseg.infer.collection import (
    MANIFEST_COLUMNS,
    iter_inputs,
    predict_collection,
)

N = 60
SAME = ("input", "mask", "overlay", "height", "width", "hand_share")  # columns a rerun keeps
TORCH_1 = ["--runtime", "torch", "--precision", "fp32", "--threads", "1", "--device", "cpu"]


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 90)], 2)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) / 4) ** 2] = (230, 190, 160)
    return np.clip(img + rng.integers(0, 40, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """60 small photos, landscape and (every 7th) portrait, a few in a sub-folder."""
    root = tmp_path_factory.mktemp("collection") / "photos"
    for i in range(N):
        h, w = (64, 48) if i % 7 == 3 else (48, 64)
        path = root / ("signer2" if i % 5 == 0 else "") / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_photo(h, w, i)).save(path)
    return root


@pytest.fixture(scope="module")
def predictor(model_file):
    threads = torch.get_num_threads()
    yield handseg.load_model(model_file, runtime="torch", precision="fp32", threads=1)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(photos, predictor, tmp_path_factory) -> Path:
    """One uninterrupted single-process run (in this process)."""
    out = tmp_path_factory.mktemp("reference")
    predict_collection(predictor, [photos], out, workers=0, progress=False)
    return out


def _manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        return list(reader)


def _files(out: Path) -> dict[str, bytes]:
    """Every output file (the manifest and its parts aside) and its bytes."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and ".manifest-parts" not in p.parts and p.name != "manifest.csv"
    }


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "handseg.app.cli", "predict", *args]


ENV = os.environ | {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def test_reference_run_writes_every_input_once(reference, photos):
    rows = _manifest(reference)
    assert len(rows) == N
    assert sorted(r["input"] for r in rows) == sorted(str(p) for p in photos.rglob("*.png"))
    assert {r["status"] for r in rows} == {"ok"}
    assert (reference / "signer2" / "img05_mask.png").is_file()  # outputs mirror sub-folders
    assert len([f for f in _files(reference) if f.endswith("_mask.png")]) == N
    portrait = next(r for r in rows if r["input"].endswith("img03.png"))
    assert (portrait["height"], portrait["width"]) == ("64", "48")


def test_two_processes_write_the_masks_of_one_process(photos, model_file, reference, tmp_path):
    out = tmp_path / "out"
    args = [str(photos), "--model", str(model_file), "--out", str(out), "--devices", "2",
            "--workers", "1", *TORCH_1]  # fmt: skip
    proc = subprocess.run(_cli(args), capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("manifest:") == 1  # only rank 0 reports
    assert _files(out) == _files(reference)  # masks and overlays byte-identical
    rows, ref = _manifest(out), _manifest(reference)
    assert len(rows) == N
    assert [[r[c] for c in SAME] for r in rows] == [[r[c] for c in SAME] for r in ref]
    assert sorted((out / ".manifest-parts").iterdir()) == [
        out / ".manifest-parts" / "rank0.csv", out / ".manifest-parts" / "rank1.csv"
    ]  # fmt: skip


KILLED = """
import sys, handseg
from handseg.infer.collection import predict_collection
model, photos, out = sys.argv[1:]
p = handseg.load_model(model, runtime="torch", precision="fp32", threads=1)
predict_collection(p, [photos], out, skip_existing=True, workers=1, progress=False)
"""


def test_run_killed_midway_and_restarted_ends_as_an_uninterrupted_run(
    photos, model_file, predictor, reference, tmp_path
):
    """A real SIGKILL at a moment the test does not choose (after 20 masks at the earliest),
    then a restart with skip_existing. The killed process runs the library call, not the
    CLI, to spare the test Lightning's start-up (the CLI path is the two-process test's)."""
    out = tmp_path / "out"
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    cmd = [sys.executable, str(script), str(model_file), str(photos), str(out)]
    # its own process group, so that the kill takes its DataLoader worker too (as a job
    # scheduler's kill would) and no orphan outlives the test
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while len(list(out.rglob("*_mask.png"))) < 20 and proc.poll() is None:
            assert time.monotonic() < deadline, "the run wrote no masks"
            time.sleep(0.005)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
    assert not (out / "manifest.csv").exists()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*_mask.png")}
    assert 20 <= len(before) < N
    result = predict_collection(
        predictor, [photos], out, skip_existing=True, workers=0, progress=False
    )
    assert sum(result["counts"].values()) == N
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # skipped, not rewritten
    assert _files(out) == _files(reference)  # no half file, no temporary file left
    rows, ref = _manifest(out), _manifest(reference)
    assert [[r[c] for c in SAME] for r in rows] == [[r[c] for c in SAME] for r in ref]


def test_restart_after_a_half_written_row_or_lost_rows(photos, predictor, tmp_path):
    """The kill points a real kill rarely hits: in the middle of a manifest row, and after
    an input's files but before its row."""
    out = tmp_path / "out"
    folder = photos / "signer2"  # 12 photos
    predict_collection(predictor, [folder], out, workers=0, progress=False)
    files, first = _files(out), _manifest(out)
    part = out / ".manifest-parts" / "rank0.csv"
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join(lines[:6]) + lines[6][:17])  # rows 7.. lost, 7 half written
    (out / "manifest.csv").unlink()
    (out / first[9]["mask"]).unlink()  # the 10th input's files are gone too
    result = predict_collection(
        predictor, [folder], out, skip_existing=True, workers=0, progress=False
    )
    assert result["counts"] == {"ok": 7, "existing": 5}  # 6 rows kept, 5 rebuilt, 1 new
    rows = _manifest(out)
    assert [[r[c] for c in SAME] for r in rows] == [[r[c] for c in SAME] for r in first]
    assert [r["ms"] != "" for r in rows] == [i < 6 or i == 9 for i in range(12)]
    assert _files(out) == files


def test_bad_files_are_recorded_and_skipped(photos, model_file, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("signer2/img00.png", "signer2/img05.png", "img01.png"):
        (bad / Path(name).name).write_bytes((photos / name).read_bytes())
    (bad / "empty.jpg").write_bytes(b"")
    data = (photos / "img02.png").read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) // 2])
    (bad / "notes.jpg").write_text("not an image\n")
    (bad / "readme.txt").write_text("not listed: a folder gives its images only\n")
    listing = tmp_path / "paths.txt"
    listing.write_text(f"# more\n{tmp_path / 'missing.png'}\n\n{photos / 'img02.png'}\n")
    out = tmp_path / "out"
    rc = main(["predict", str(bad), "--list", str(listing), "--model", str(model_file),
               "--out", str(out), "--workers", "0", *TORCH_1])  # fmt: skip
    assert rc == 0
    assert "4 predicted, 0 already done, 4 unreadable" in capsys.readouterr().out
    rows = {Path(r["input"]).name: r for r in _manifest(out)}
    assert len(rows) == 8  # the folder's 6 images (not readme.txt) and the 2 listed paths
    errors = {name: r["error"] for name, r in rows.items() if r["status"] == "error"}
    assert sorted(errors) == ["empty.jpg", "missing.png", "notes.jpg", "truncated.png"]
    assert all(name in e for name, e in errors.items())  # each error names its file
    assert all(r["mask"] == "" for r in rows.values() if r["status"] == "error")
    assert sorted(p.name for p in out.glob("*_mask.png")) == [
        "img00_mask.png", "img01_mask.png", "img05_mask.png"
    ]  # fmt: skip
    # a listed path's outputs mirror it as written (an absolute one without its root)
    assert rows["img02.png"]["mask"] == str(photos / "img02_mask.png").lstrip("/")
    assert (out / rows["img02.png"]["mask"]).is_file()
    # nothing readable at all: a one-line error and exit code 2
    rc = main(["predict", str(bad / "empty.jpg"), "--collection", "--model", str(model_file),
               "--out", str(tmp_path / "none"), *TORCH_1])  # fmt: skip
    assert rc == 2
    assert len(_manifest(tmp_path / "none")) == 1


@pytest.mark.parametrize("extra", [["--camera", "0"], ["--clip"]])
def test_collection_options_refuse_a_camera_or_clips_before_loading(extra, photos, tmp_path,
                                                                    capsys):  # fmt: skip
    # the model does not exist: the refusal comes before anything is loaded
    rc = main(["predict", str(photos), "--skip-existing", "--model", str(tmp_path / "no.pt"),
               "--out", str(tmp_path / "out"), *extra])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{extra[0]} does not go with the collection options" in err
    assert not (tmp_path / "out").exists()


def test_inputs_are_listed_lazily_with_output_stems(tmp_path, photos):
    listing = tmp_path / "list.txt"
    listing.write_text("a/b/c.jpg\n/abs/d.png\n../up/e.png\n")
    gen = iter_inputs([photos / "signer2", str(photos / "img1*.png")], [listing])
    assert iter(gen) is gen  # a generator, not a list
    items = list(gen)
    stems = [i.stem for i in items]
    assert sorted(stems[:12]) == sorted(f"img{i:02d}" for i in range(0, N, 5))  # the folder
    assert sorted(stems[12:-3]) == ["img11", "img12", "img13", "img14", "img16", "img17",
                                    "img18", "img19"]  # the glob  # fmt: skip
    assert stems[-3:] == ["a/b/c", "abs/d", "up/e"]  # the list, as written


# --- against the per-image reference ---------------------------------------------------------
def test_each_mask_is_the_predictors_mask_of_its_own_image(reference, photos, predictor):
    """The collection's masks against ``Predictor.predict`` on each image alone (not the
    collection's own run): the right mask under the right name, batches or not."""
    for row in _manifest(reference):
        want = predictor.predict(read_image(row["input"]))
        got = np.asarray(Image.open(reference / row["mask"])) > 0
        np.testing.assert_array_equal(got, want > 0, err_msg=row["input"])
        assert float(row["hand_share"]) == pytest.approx(want.mean(), abs=1e-6)


class _FailingBatches:
    """A predictor whose batches fail whenever they hold the poisoned image (a batch of
    that image alone fails too): what a network error on one bad image looks like."""

    def __init__(self, inner, poisoned: np.ndarray) -> None:
        self.inner, self.poisoned, self.backend = inner, poisoned, inner.backend
        self.calls: list[int] = []

    def predict_many(self, images, batch_size=4):
        images = list(images)
        self.calls.append(len(images))
        if any(np.array_equal(i, self.poisoned) for i in images):
            raise RuntimeError("out of memory in the network")
        yield from self.inner.predict_many(images, batch_size=batch_size)


def test_a_batch_that_fails_part_way_falls_back_to_one_image_at_a_time(photos, predictor, tmp_path):
    folder = photos / "signer2"  # 12 photos: blocks of 4
    items = sorted(iter_inputs([folder]), key=lambda i: i.path)
    poisoned = read_image(items[5].path)
    flaky = _FailingBatches(predictor, poisoned)
    out = tmp_path / "out"
    result = predict_collection(flaky, [folder], out, batch_size=4, workers=0, progress=False)
    assert result["counts"] == {"ok": 11, "error": 1} and result["errors"] == 1
    assert 1 in flaky.calls  # the failed block was retried one image at a time
    rows = {r["input"]: r for r in _manifest(out)}
    bad = rows[items[5].path]
    assert bad["status"] == "error" and "out of memory" in bad["error"] and bad["mask"] == ""
    for item in items:
        if item is items[5]:
            assert not (out / f"{item.stem}_mask.png").exists()
            continue
        want = predictor.predict(read_image(item.path)) > 0
        got = np.asarray(Image.open(out / rows[item.path]["mask"])) > 0
        np.testing.assert_array_equal(got, want, err_msg=item.path)


def test_detector_pipeline_with_instances_matches_the_pipeline_per_image(shared_data, tmp_path):
    """``--detector mediapipe --instances`` over a collection (real photos, a hand-free one
    among them, batches of 2): each photo's mask, per-hand masks and hands JSON equal the
    hand pipeline run on that photo alone."""
    import json

    pytest.importorskip("ai_edge_litert", reason="the 'hands' extra is not installed")
    import cv2

    from handseg.infer.pipeline import load_segmenter

    folder = tmp_path / "photos"
    folder.mkdir()
    sources = sorted((shared_data / "images").iterdir())[:3]
    for k, src in enumerate(sources):
        rgb = cv2.resize(read_image(src), (320, 240), interpolation=cv2.INTER_AREA)
        Image.fromarray(rgb).save(folder / f"p{k}.png")
    Image.fromarray(np.full((240, 320, 3), (90, 120, 150), np.uint8)).save(folder / "p3.png")
    seg = load_segmenter(None, refine="color", mode="fast", threads=1)
    out = tmp_path / "out"
    result = predict_collection(seg, [folder], out, batch_size=2, instances=True, workers=0,
                                progress=False)  # fmt: skip
    assert result["counts"] == {"ok": 4}
    rows = {Path(r["input"]).stem: r for r in _manifest(out)}
    alone = load_segmenter(None, refine="color", mode="fast", threads=1)
    found = 0
    for stem in ("p0", "p1", "p2", "p3"):
        want = alone.predict(read_image(folder / f"{stem}.png"))
        hands = alone.last.hands
        got = np.asarray(Image.open(out / rows[stem]["mask"])) > 0
        np.testing.assert_array_equal(got, want > 0, err_msg=stem)
        doc = json.loads((out / rows[stem]["instances"]).read_text())
        assert [h["handedness"] for h in doc["hands"]] == [h.handedness for h in hands]
        assert rows[stem]["hands"] == str(len(hands))
        for h, inst in zip(doc["hands"], alone.last.instances):
            part = np.asarray(Image.open(out / h["mask"])) > 0
            np.testing.assert_array_equal(part, inst > 0, err_msg=h["mask"])
        found += len(hands)
    assert found >= 2 and rows["p3"]["hands"] == "0"  # hands in the photos, none on the wall
