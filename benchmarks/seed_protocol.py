"""The seed protocol on real data: train on arsl-bg11 (60/20/20, seed 0) at 384 x 512 on the
CPU with ``--preset scratch`` and ``--preset seed``; report the test-split metrics (at the
masks' full resolution), training time and peak memory.

    python benchmarks/seed_protocol.py [--presets scratch seed] [--out bench-output/seed_protocol]

Each preset trains in its own process (``handseg train``), so its peak resident memory is
that process's own (``os.wait4``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "arsl-bg11"


def run_preset(preset: str, out: Path, data: Path, size: tuple[int, int], extra: list[str]) -> dict:
    run = out / preset
    cmd = [
        sys.executable, "-m", "handseg.app.cli", "train",
        "--images", str(data / "images"), "--masks", str(data / "masks"),
        "--out", str(run), "--preset", preset, "--image-size", str(size[0]), str(size[1]),
        "--seed", "0", "--device", "cpu", *extra,
    ]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{preset}: training failed (exit {os.waitstatus_to_exitcode(status)})")
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    return {
        "preset": preset,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        "metrics": metrics,
        "run": str(run),
    }


def table(results: list[dict]) -> str:
    lines = [
        "| preset | hand IoU | GlobalAccuracy | MeanAccuracy | MeanIoU | WeightedIoU | "
        "MeanBFScore | hand BF | epochs | train time | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["metrics"]
        ds, hand = m["dataset"], m["classes"]["hand"]
        cfg = Path(r["run"]) / "metrics.csv"
        epochs = max(int(line.split(",")[0]) for line in cfg.read_text().splitlines()[1:])
        lines.append(
            f"| {r['preset']} | {hand['IoU']:.4f} | {ds['GlobalAccuracy']:.4f} | "
            f"{ds['MeanAccuracy']:.4f} | {ds['MeanIoU']:.4f} | {ds['WeightedIoU']:.4f} | "
            f"{ds['MeanBFScore']:.4f} | {hand['MeanBFScore']:.4f} | {epochs} | "
            f"{r['wall_s'] / 60:.1f} min | {r['peak_rss_mib']:.0f} MiB |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["scratch", "seed"])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-output" / "seed_protocol")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--image-size", type=int, nargs=2, default=(384, 512))
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="more 'handseg train' flags after --")
    args = ap.parse_args()
    if not (args.data / "images").is_dir():
        raise SystemExit(f"real data not found at {args.data}")
    extra = [a for a in args.extra if a != "--"]
    results = [
        run_preset(p, args.out, args.data, tuple(args.image_size), extra) for p in args.presets
    ]
    print()
    print(
        f"arsl-bg11 test split (6 images), {args.image_size[0]}x{args.image_size[1]}, "
        f"{os.cpu_count()} CPU cores, metrics at the masks' full resolution (960x720):"
    )
    print(table(results))
    (args.out / "summary.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
