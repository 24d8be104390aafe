"""Prediction over a whole collection: images/s for 1 and 2 processes, and memory vs size.

Makes ``--n`` (default 2,000) synthetic 480 x 640 JPEG photos in ``--data`` (default
``/tmp/handseg-predict-scale``; made once, reused) and a fresh, untrained small network
(resnet18 encoder, 32-channel ASPP/decoder, working size 96 x 128: speed does not depend
on the weights), then runs ``handseg predict --devices P`` on them as a user would
(a new command per run, the default runtime and workers) and reports for each run:

- images/s over the whole command (start-up, model loading and the manifest included),
- images/s in the steady state (masks written per second between the 10th and the last,
  from the masks' modification times),
- peak memory: the largest summed PSS of the command's process tree (all processes and
  DataLoader workers, sampled every 0.1 s) and the largest RSS of a single process
  (``ru_maxrss``).

Overlays are not written (``--no-overlay``: the masks are what a collection run is for;
an overlay costs about as much as the small network here, most of it drawing the outline
of an untrained network's ragged masks).

Memory is measured on the first ``--small`` (500) and on all ``--n`` images with one
process: flat memory means the two peaks are about equal.

    python benchmarks/predict_scale.py                     # CPU, 1 and 2 processes
    python benchmarks/predict_scale.py --device gpu --devices 1 2 4
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_photos(folder: Path, n: int, size: tuple[int, int] = (480, 640)) -> Path:
    """``n`` synthetic photos (gradient, a skin-coloured disc, noise) as JPEG, once."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 90)], 2)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 30, (8, h, w, 3))
    for i in range(n):
        path = folder / f"photo{i:05d}.jpg"
        if path.is_file():
            continue
        img = base.copy()
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < (h / 5) ** 2] = (230, 190, 160)
        img = np.clip(img + noise[i % 8], 0, 255).astype(np.uint8)
        Image.fromarray(img).save(path, quality=90)
    return folder


def make_model(path: Path) -> Path:
    import torch

    from handseg.model.checkpoint import save_model_file
    from handseg.model.network import HandSegNet, ModelConfig

    if not path.is_file():
        torch.manual_seed(0)
        cfg = ModelConfig(aspp_channels=32, decoder_channels=32, lowlevel_channels=16)
        save_model_file(
            path, HandSegNet(cfg), classes=("background", "hand"), mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225), input_size=(96, 128),
        )  # fmt: skip
    return path


def _tree_rss(root: int) -> int:
    """Summed PSS (bytes) of ``root`` and all its descendants, from /proc: each shared page
    counted once in all (a summed RSS would count the workers' copy-on-write pages again)."""
    parent, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/smaps_rollup") as f:
                pss = next(line for line in f if line.startswith("Pss:"))
                rss[int(d)] = int(pss.split()[1]) * 1024
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree and p not in tree}
        tree |= new
        grew = bool(new)
    return sum(rss.get(p, 0) for p in tree)


MAXRSS = """import resource, subprocess, sys
rc = subprocess.call(sys.argv[1:])
print("MAXRSS", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)
"""
"""Runs a command and prints the largest RSS (KiB) among it and its waited-for descendants."""


def run(cmd: list[str], out: Path) -> dict[str, float]:
    """Run one ``handseg predict`` command; its time, steady rate and peak memory."""
    peak = [0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    log = proc.communicate()[0]
    wall = time.perf_counter() - start
    t.join()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{log[-3000:]}")
    times = sorted(p.stat().st_mtime for p in out.rglob("*_mask.png"))
    n = len(times)
    steady = (n - 10) / (times[-1] - times[9]) if n > 20 else float("nan")
    largest = int(log.rsplit("MAXRSS", 1)[1].split()[0]) / 1024
    return {"n": n, "wall": wall, "rate": n / wall, "steady": steady,
            "peak_tree": peak[0] / 2**20, "largest": largest}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--data", type=Path, default=Path("/tmp/handseg-predict-scale"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", type=Path, help="a model file (default: the small fresh one)")
    args = ap.parse_args()

    photos = make_photos(args.data / "photos", args.n)
    model = args.model or make_model(args.data / "small-model.pt")
    lists = {}
    for k in (args.small, args.n):
        lists[k] = args.data / f"list{k}.txt"
        lists[k].write_text("".join(f"{photos / f'photo{i:05d}.jpg'}\n" for i in range(k)))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; model {model}")  # fmt: skip
    print("| images | processes | wall s | images/s (whole command) | images/s (steady) | "
          "peak PSS, process tree MiB | peak RSS, largest process MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    plan = [(args.small, 1)] + [(args.n, p) for p in args.devices]
    for n, p in plan:
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            out = Path(tmp) / "out"
            cmd = [sys.executable, "-m", "handseg.app.cli", "predict", "--list", str(lists[n]),
                   "--model", str(model), "--out", str(out), "--devices", str(p),
                   "--device", args.device, "--no-overlay"]  # fmt: skip
            r = run([sys.executable, "-c", MAXRSS, *cmd], out)
            print(f"| {r['n']} | {p} | {r['wall']:.1f} | {r['rate']:.1f} | {r['steady']:.1f} | "
                  f"{r['peak_tree']:.0f} | {r['largest']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
