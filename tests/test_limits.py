"""Disk and memory limits.

A full disk while writing outputs gives a one-line error that names the file and says
"no space left"; files written earlier stay intact and no partial or temporary file is
left behind (every output is written by :mod:`handseg.io_safety`: temporary file, then
rename). The disk is "filled" at the one place outputs are opened (``_open_temp``) in two
ways: the kernel's own ``/dev/full`` (every write fails with ENOSPC when the buffer is
flushed) and a writer that fails with ENOSPC after a byte budget, mid-file.

A very large photo is either predicted at full resolution within a bounded amount of
memory, or refused from its header with a clear error when it is above handseg's pixel
budget (``MAX_MEGAPIXELS``, 50 MP unless ``--max-megapixels`` raises it) or PIL's
decompression-bomb limit (about 179 megapixels); all are measured in a subprocess.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import handseg.core.io
from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.core.io import atomic_write, atomic_write_text
from handseg.eval.evaluate import write_evaluation
from handseg.eval.metrics import SegmentationMetrics
from handseg.model.checkpoint import read_model_file, save_model_file
from handseg.model.network import HandSegNet

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --- a disk that fills up ------------------------------------------------------------------


class _Budget(io.RawIOBase):
    """A writer over a real file that fails with ENOSPC once ``budget`` bytes are written."""

    def __init__(self, real, budget: int):
        self.real, self.budget = real, budget

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        data = b if isinstance(b, str) else bytes(b)
        room = self.budget - len(data)
        if room < 0:
            self.real.write(data[: self.budget])  # the disk takes what fits, then fails
            self.real.flush()
            self.budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget = room
        return self.real.write(data)

    def flush(self) -> None:
        if not self.real.closed:
            self.real.flush()

    def close(self) -> None:
        if not self.closed:
            super().close()  # flushes first
            self.real.close()


class FullDisk:
    """Makes output files fail to write, after ``healthy`` files were written fine."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, how: str, only: str = ""):
        if how == "/dev/full" and not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full on this system")
        self.how, self.only = how, only  # only: count and fail files with this suffix
        self.healthy: int | None = None  # None: the disk is fine
        self.opened: list[Path] = []
        self.real = handseg.core.io._open_temp
        monkeypatch.setattr(handseg.core.io, "_open_temp", self._open_temp)

    def fill_after(self, healthy: int) -> None:
        self.healthy, self.opened = healthy, []

    def _open_temp(self, path: Path, mode: str, **kwargs):
        f, tmp = self.real(path, mode, **kwargs)
        if not path.name.endswith(self.only):
            return f, tmp
        self.opened.append(path)
        if self.healthy is None or len(self.opened) <= self.healthy:
            return f, tmp
        if self.how == "/dev/full":  # the temp file stays empty; writes hit the kernel's ENOSPC
            f.close()
            return open("/dev/full", mode, **kwargs), tmp
        if "b" in mode:
            return _Budget(f, 16), tmp
        return io.TextIOWrapper(_Budget(f.detach(), 16), **kwargs), tmp


@pytest.fixture(params=["/dev/full", "budget"])
def full_disk(request, monkeypatch) -> FullDisk:
    return FullDisk(monkeypatch, request.param)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*") if ".tmp" in p.name]


# --- full disk: the io_safety primitives -----------------------------------------------------


def test_atomic_write_keeps_the_old_file_and_names_the_new_one(tmp_path, full_disk):
    target = tmp_path / "notes.txt"
    atomic_write_text(target, "old contents\n")
    full_disk.fill_after(0)
    with pytest.raises(HandsegError, match="no space left") as info:
        atomic_write_text(target, "new contents that will not fit\n" * 1000)
    assert str(target) in str(info.value) and "\n" not in str(info.value)
    assert target.read_text() == "old contents\n"
    assert _leftovers(tmp_path) == []


def test_atomic_write_removes_its_temporary_file_on_any_error(tmp_path):
    target = tmp_path / "a.bin"
    with pytest.raises(ZeroDivisionError), atomic_write(target) as f:
        f.write(b"partial")
        1 / 0  # noqa: B018
    assert not target.exists() and _leftovers(tmp_path) == []


def test_outputs_are_created_with_normal_permissions(tmp_path):
    """Temporary files are private (0600); the renamed output gets the usual mode."""
    p = atomic_write_text(tmp_path / "m.json", "{}")
    umask = os.umask(0o022)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


# --- full disk: handseg predict ---------------------------------------------------------------


def _model(path: Path, seed: int, hand_bias: float = 0.0) -> Path:
    torch.manual_seed(seed)
    net = HandSegNet()
    with torch.no_grad():
        net.classifier.bias += torch.tensor([-hand_bias, hand_bias])
    return save_model_file(path, net, classes=("background", "hand"), mean=MEAN, std=STD,
                           input_size=(32, 40))  # fmt: skip


def _photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    return (
        _model(folder / "a.pt", seed=0, hand_bias=-20),  # all background
        _model(folder / "b.pt", seed=1, hand_bias=20),  # all hand: other output bytes
    )


@pytest.mark.parametrize("healthy", [0, 3])
def test_predict_on_a_full_disk(tmp_path, full_disk, healthy, two_models):
    photos = _photos(tmp_path / "photos", 3)
    out = tmp_path / "out"
    model_a, model_b = two_models
    base = ["predict", str(photos), "--out", str(out), "--device", "cpu"]
    assert _cli(base + ["--model", str(model_a)])[0] == 0
    before = _snapshot(out)
    assert len(before) == 6  # a mask and an overlay per photo

    full_disk.fill_after(healthy)  # the disk fills up after `healthy` more files
    code, err = _cli(base + ["--model", str(model_b)])
    assert code == 2 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    failed = full_disk.opened[healthy]
    assert "no space left" in line and str(failed) in line
    after = _snapshot(out)
    assert set(after) == set(before)  # no partial or temporary file
    assert _leftovers(out) == []
    rewritten = {p.name for p in full_disk.opened[:healthy]}
    for name, data in after.items():
        if name in rewritten:
            assert data != before[name]  # the new, complete file
        else:
            assert data == before[name], name  # untouched by the failed run
        with Image.open(out / name) as im:
            im.load()  # every file on disk is whole


# --- full disk: evaluation, model files, split files --------------------------------------------


def _result() -> dict:
    acc = SegmentationMetrics(("background", "hand"))
    m = np.zeros((20, 30), np.uint8)
    m[5:15, 5:20] = 1
    acc.update(m, m, image="a.png", mask="a.png")
    acc.update(1 - m, m, image="b.png", mask="b.png")
    return acc.compute()


@pytest.mark.parametrize("healthy", [0, 1, 2])
def test_write_evaluation_on_a_full_disk(tmp_path, full_disk, healthy):
    out = tmp_path / "eval"
    write_evaluation(_result(), out)
    before = _snapshot(out)
    new = _result()
    new["dataset"]["GlobalAccuracy"] = 0.123  # so the new files differ from the old
    new["images"] = new["images"][:1]
    full_disk.fill_after(healthy)
    with pytest.raises(HandsegError, match="no space left") as info:
        write_evaluation(new, out)
    failed = full_disk.opened[healthy]
    assert str(failed) in str(info.value)
    after = _snapshot(out)
    assert set(after) == set(before) and _leftovers(out) == []
    for name in after:
        changed = name in {p.name for p in full_disk.opened[:healthy]}
        assert (after[name] != before[name]) == changed, name
    json.loads(after["metrics.json"])  # whole, whichever version


def test_save_model_file_on_a_full_disk(tmp_path, full_disk):
    path = _model(tmp_path / "model.pt", seed=0)
    before = path.read_bytes()
    full_disk.fill_after(0)
    with pytest.raises(HandsegError, match="no space left") as info:
        _model(path, seed=1)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []
    read_model_file(path)  # still a loadable model


def test_save_split_on_a_full_disk(tmp_path, full_disk):
    from handseg.data.split import load_split, save_split

    split = {"train": [(tmp_path / "a.png", tmp_path / "a_mask.png")], "val": [], "test": []}
    for p in split["train"][0]:
        p.write_bytes(b"x")
    save_split(split, tmp_path / "split.json")
    before = (tmp_path / "split.json").read_bytes()
    full_disk.fill_after(0)
    with pytest.raises(HandsegError, match="no space left"):
        save_split({**split, "test": split["train"]}, tmp_path / "split.json")
    assert (tmp_path / "split.json").read_bytes() == before
    assert load_split(tmp_path / "split.json")["train"] == split["train"]


def test_metrics_csv_on_a_full_disk(tmp_path, monkeypatch):
    """Training's metrics.csv: one-line error, the previous file kept, nothing left over
    (the disk is filled both at io_safety's seam and at ``open``, whichever is used)."""
    import builtins

    from handseg.train.callbacks import History as _History

    history = _History(tmp_path, plot=False)
    history.rows = [{"epoch": 1, "step": 1, "lr": 0.001, "train_loss": 0.5, "time_s": 1.0}]
    history.write()
    before = (tmp_path / "metrics.csv").read_bytes()
    history.rows.append({"epoch": 1, "step": 1, "val_loss": 0.4, "val_acc": 0.9, "time_s": 2.0})

    disk = FullDisk(monkeypatch, "budget")
    disk.fill_after(0)
    real_open = builtins.open

    def open_on_full_disk(file, mode="r", *args, **kwargs):  # whichever way it is written
        f = real_open(file, mode, *args, **kwargs)
        if "metrics.csv" in str(file) and "w" in mode:
            return io.TextIOWrapper(_Budget(f.detach(), 10), newline=kwargs.get("newline"))
        return f

    monkeypatch.setattr(builtins, "open", open_on_full_disk)
    with pytest.raises(HandsegError, match="no space left") as info:
        history.write()
    monkeypatch.setattr(builtins, "open", real_open)
    assert "metrics.csv" in str(info.value)
    assert (tmp_path / "metrics.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_training_on_a_full_disk(tmp_path, monkeypatch):
    """The disk fills while epoch 2's checkpoint is written: training stops with one line
    that says how to go on, and epoch 1's checkpoint is intact."""
    from handseg.core.config import resolve_config
    from handseg.synth.hands import make_synthetic
    from handseg.train.run import train

    data = make_synthetic(tmp_path / "data", n=10, size=(32, 48), seed=0, progress=False)
    cfg = resolve_config({"images": str(data / "images"), "masks": str(data / "masks"),
                          "out": str(tmp_path / "run"), "image_size": (32, 48), "epochs": 3,
                          "batch_size": 3, "backbone_weights": "none", "workers": 0,
                          "device": "cpu", "precision": "32", "patience": 0})  # fmt: skip
    disk = FullDisk(monkeypatch, "budget", only=".ckpt")
    disk.fill_after(2)  # epoch 1 writes best.ckpt and last.ckpt; epoch 2 fails
    with pytest.raises(HandsegError, match="no space left") as info:
        train(cfg, progress=False)
    msg = str(info.value)
    assert "--resume" in msg and "\n" not in msg
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]  # no partial
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 0


# --- very large images ---------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _flat_png(path: Path, h: int, w: int, rgb=(200, 150, 120), *, claim_only: bool = False):
    """An RGB PNG of one colour, h x w, streamed through zlib (cheap at any size). With
    ``claim_only`` the header claims h x w over a few bytes (a decompression bomb)."""
    z = zlib.compressobj(1)
    if claim_only:
        idat = zlib.compress(b"\x00" * 64)
    else:
        row = b"\x00" + bytes(rgb) * w
        idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
    return path


_MEASURE = """
import json, os, sys
from pathlib import Path
import handseg
from handseg.core.errors import HandsegError
from handseg.infer.media import predict_inputs

def status_mb(key):
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(key + ":"))
    return int(line.split()[1]) / 1024

model, small, out, *photos = sys.argv[1:]
predictor = handseg.load_model(model)
predict_inputs(predictor, [small], out + "-warm", progress=False)  # thread pools, caches
try:  # hand freed memory back to the OS, so that RSS is a fair baseline (glibc)
    import ctypes
    trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    trim = lambda pad: 0
results = []
for photo in photos:
    trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    base = status_mb("VmRSS")
    try:
        records = predict_inputs(predictor, [photo], out, progress=False)
        result = {"ok": records[0]["ok"], "error": records[0].get("error")}
    except HandsegError as exc:
        result = {"ok": False, "error": str(exc)}
    result["extra_mb"] = status_mb("VmHWM") - base
    results.append(result)
print(json.dumps(results))
"""


def _can_measure_peak() -> bool:
    """Linux >= 4.0 lets a process reset its peak resident size (/proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


BIG_HW = (3000, 4000)  # 12 MP, a phone photo


@pytest.fixture(scope="module")
def big_photos(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """One subprocess predicts, each with its own peak-memory measurement: a header that
    claims 12000 x 16000 (192 MP, above PIL's limit), one that claims 7000 x 8000 (56 MP,
    above handseg's budget only), then a real 3000 x 4000 photo."""
    if not _can_measure_peak():
        pytest.skip("needs Linux /proc/self/clear_refs")
    folder = tmp_path_factory.mktemp("big")
    model = _model(folder / "hand.pt", seed=0, hand_bias=20)  # predicts hand everywhere
    small = _flat_png(folder / "small.png", 48, 64)
    photos = {
        "huge": _flat_png(folder / "huge.png", 12000, 16000, claim_only=True),
        "over budget": _flat_png(folder / "over.png", 7000, 8000, claim_only=True),
        "big": _flat_png(folder / "big.png", *BIG_HW),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(model), str(small), str(folder / "o"),
         *map(str, photos.values())],
        capture_output=True, text=True, timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return folder, {name: r | {"path": str(photos[name])} for name, r in zip(photos, results)}


def test_a_12_megapixel_photo_is_predicted_in_bounded_memory(big_photos):
    """3000 x 4000, all hand (the overlay tints every pixel). Peak memory above the
    loaded model stays under 30 bytes per pixel (343 MB); the overlay alone used to take
    ~72 bytes per pixel in float64 copies."""
    folder, results = big_photos
    r = results["big"]
    assert r["ok"], r
    h, w = BIG_HW
    print(f"\n12 MP photo: {r['extra_mb']:.0f} MB above the loaded model; 192 MP header: "
          f"{results['huge']['extra_mb']:.0f} MB")  # fmt: skip
    assert r["extra_mb"] < 30 * h * w / 2**20, r
    with Image.open(folder / "o" / "big_mask.png") as im:
        assert im.size == (w, h)
        assert np.asarray(im).min() == 255  # all hand, at full resolution


def test_a_photo_above_the_pixel_limit_is_refused_without_decoding(big_photos):
    """12000 x 16000 (192 MP) is above the limit: a clear error, and almost no memory (the
    header is read, the pixels never)."""
    r = big_photos[1]["huge"]
    assert not r["ok"]
    assert "too large to decode safely" in r["error"] and r["path"] in r["error"]
    assert r["extra_mb"] < 50, r


def test_a_photo_above_the_pixel_budget_is_refused_from_its_header(big_photos):
    """7000 x 8000 (56 MP) is within PIL's limit but above the 50 MP budget: refused before
    decoding, with the flag that raises the budget in the message."""
    r = big_photos[1]["over budget"]
    assert not r["ok"] and r["path"] in r["error"]
    assert "8000 x 7000 = 56,000,000 pixels" in r["error"] and "--max-megapixels" in r["error"]
    assert r["extra_mb"] < 50, r


def test_the_pixel_limit_is_the_documented_one():
    """docs/reliability.md quotes PIL's limit: 2 x Image.MAX_IMAGE_PIXELS."""
    assert 2 * Image.MAX_IMAGE_PIXELS == 178_956_970
