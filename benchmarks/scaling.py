"""Training throughput for 1 and 2 processes (Lightning DDP, gloo on the CPU).

    python benchmarks/scaling.py                       # CPU: 1 process x 2 threads vs 2 x 1
    python benchmarks/scaling.py --device gpu --image-size 720 960 --precision bf16-mixed \
        --devices 1 2 4                                # on a GPU server

The global batch is ``batch-size x processes``; images/s counts training images seen per
second of the fit loop (from ``metrics.csv``'s clock, validation included).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(n_proc: int, data: Path, out: Path, a) -> float:
    threads = max(1, (os.cpu_count() or 2) // n_proc) if a.device == "cpu" else 4
    cmd = [
        sys.executable, "-m", "handseg.app.cli", "train",
        "--images", str(data / "images"), "--masks", str(data / "masks"), "--out", str(out),
        "--image-size", *map(str, a.image_size), "--batch-size", str(a.batch_size),
        "--epochs", str(a.epochs), "--preset", "scratch", "--no-test", "--workers", "0",
        "--device", a.device, "--devices", str(n_proc), "--precision", a.precision,
        "--strategy", "ddp" if n_proc > 1 else "auto",
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n_train = len(__import__("json").loads((out / "split.json").read_text())["train"])
    # the first epoch includes process start-up and warm-up: time epochs 2.. only
    t_first = max(float(r["time_s"]) for r in rows if r["epoch"] == "1")
    t_end = float(rows[-1]["time_s"])
    return n_train * (a.epochs - 1) / (t_end - t_first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("-n", type=int, default=120)
    ap.add_argument("--image-size", type=int, nargs=2, default=(128, 160))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-output" / "scaling")
    a = ap.parse_args()
    from handseg.synth.hands import make_synthetic

    data = a.out / f"data-{a.n}-{a.image_size[0]}x{a.image_size[1]}"
    if not (data / "images").is_dir():
        make_synthetic(data, n=a.n, size=tuple(a.image_size), seed=3, progress=False)
    print(f"| processes | device | {a.image_size[0]}x{a.image_size[1]}, batch {a.batch_size}/process"
          f" | images/s | vs 1 process |")  # fmt: skip
    print("|---|---|---|---|---|")
    base = None
    for n in a.devices:
        ips = run(n, data, a.out / f"run-{a.device}-{n}", a)
        base = base or ips
        print(f"| {n} | {a.device} | precision {a.precision} | {ips:.1f} | {ips / base:.2f}x |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
