"""Inference speed (and, with a trained model, hand IoU) of every handseg inference path.

One run, batch 1, ``--threads`` threads (default 2). For each input size it times the
network alone on a normalised (1, 3, H, W) float32 array (median over ``--repeats`` runs,
each path in blocks of consecutive calls after ``--warmup`` runs, in two passes of opposite
order so that other load on the machine affects them alike), for

- the baseline a user would write: ``segmentation_models_pytorch.DeepLabV3Plus('resnet18',
  encoder_weights=None, classes=2)`` in fp32 eager mode (NCHW, ``torch.inference_mode``);
- each handseg path (:mod:`handseg.infer.backends`; int8 calibrated on the model's training
  photos, else on synthetic hands): torch fp32 / bf16, onnx fp32 / int8, and the
  same at a lower working scale (``@0.5``: the network runs at half the height and width).

With ``--model RUN/model.pt`` it also scores each path on the arsl-bg11 test split
(``--split``, default the model's own ``split.json``, else the seed-0 60/20/20 split) with
:func:`handseg.eval.evaluate.evaluate_model`, masks at their own resolution, and reports the hand
IoU and its difference to torch fp32 (eager PyTorch; BatchNorm folding does not change it).
Without ``--model`` an untrained network is timed (speed does not depend on the weights).

    python benchmarks/inference_speed.py --model bench-output/seed_protocol/scratch/model.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "arsl-bg11"
SIZES = ((240, 320), (384, 512), (720, 960))
PATHS = (
    ("torch", "fp32", 1.0),
    ("torch", "bf16", 1.0),
    ("onnx", "fp32", 1.0),
    ("onnx", "int8", 1.0),
    ("torch", "bf16", 0.5),
    ("onnx", "int8", 0.5),
    ("auto", "auto", 1.0),
)


def _baseline():
    import segmentation_models_pytorch as smp

    net = smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=2).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return run


def _model(path: str | None):
    """(network, model card): the trained model, else an untrained network at 384 x 512."""
    if path:
        from handseg.model.checkpoint import read_model_file

        return read_model_file(path)
    from handseg.model.card import ModelCard
    from handseg.model.network import HandSegNet

    torch.manual_seed(0)
    return HandSegNet().eval(), ModelCard(input_size=(384, 512))


def _calibration(card) -> list:
    """int8 calibration images: the model's training photos, else 6 synthetic hands."""
    from handseg.data.split import training_images
    from handseg.synth.hands import render_sample

    found = training_images(card.train_config)
    if found:
        return found
    rng = np.random.default_rng(0)
    return [render_sample(rng, (384, 512))[0] for _ in range(6)]


def _test_pairs(args, card):
    from handseg.data.pairs import find_pairs
    from handseg.data.split import load_split, make_split

    split = args.split
    tc = card.train_config
    if split is None and tc.get("out") and (Path(tc["out"]) / "split.json").is_file():
        split = Path(tc["out"]) / "split.json"
    if split is not None:
        return load_split(split)["test"], f"test split of {split}"
    pairs = find_pairs(Path(args.data) / "images", Path(args.data) / "masks")
    seed = int(tc.get("seed", 0) or 0)
    return make_split(pairs, (0.6, 0.2, 0.2), seed=seed)["test"], f"seed-{seed} 60/20/20 split"


def _label(rt: str, pr: str, scale: float, backend) -> str:
    s = f"handseg {rt} {pr}"
    if rt == "auto":
        s = f"handseg auto (= {backend.runtime} {backend.precision})"
    return s if scale == 1.0 else f"{s} @ scale {scale:g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="trained model.pt (optional; enables the IoU columns)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="arsl-bg11 folder")
    p.add_argument("--split", help="RUN/split.json whose 'test' entries are scored")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sizes", nargs="+", default=[f"{h}x{w}" for h, w in SIZES], help="HxW sizes")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    from handseg.core.device import bf16_support, int8_support
    from handseg.infer.backends import make_backend

    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    model, card = _model(args.model)
    calibration = _calibration(card)
    load0 = os.getloadavg()[0]
    t_start = time.time()

    # each path is timed in a block of consecutive calls, as a user's process runs it: PyTorch's
    # OpenMP threads keep spinning for a while after a call and would steal the cores from an
    # onnxruntime call made right after (round-robin timing measured onnx int8 1.5x slower).
    # Two passes, the second in reverse order, so that a change of load hits all paths alike.
    rng = np.random.default_rng(0)
    inputs = {hw: rng.standard_normal((1, 3, *hw)).astype(np.float32) for hw in sizes}
    fns = {"baseline smp DeepLabV3Plus fp32 eager": _baseline()}
    backends = {}
    for rt, pr, scale in PATHS:
        b = make_backend(model, card, rt, pr, args.threads, scale=scale, calibration=calibration)
        label = _label(rt, pr, scale, b)
        if (rt, pr) != ("auto", "auto") and b.precision != pr:
            label += f" (fell back to {b.precision})"
        backends[label] = (rt, pr, scale)
        fns[label] = b
    rows: list[dict[str, Any]] = [{"path": k, "ms": {}} for k in fns]
    for hw in sizes:
        x = inputs[hw]
        times: dict[str, list[float]] = {k: [] for k in fns}
        order = list(fns.items())
        for n, items in (
            (args.repeats - args.repeats // 2, order),
            (args.repeats // 2, order[::-1]),
        ):
            for k, f in items:
                for _ in range(args.warmup):
                    f(x)
                for _ in range(n):
                    t = time.perf_counter()
                    f(x)
                    times[k].append(time.perf_counter() - t)
        for row in rows:
            row["ms"][hw] = 1000 * statistics.median(times[row["path"]])
        print(f"timed {hw[0]}x{hw[1]}", file=sys.stderr)
    load1 = os.getloadavg()[0]

    iou_note = ""
    if args.model:
        from handseg.eval.evaluate import evaluate_model
        from handseg.infer.predictor import Predictor

        pairs, where = _test_pairs(args, card)
        hand = card.classes[1]
        for row in rows[1:]:
            rt, pr, scale = backends[row["path"]]
            pred = Predictor(
                model, card, runtime=rt, precision=pr, threads=args.threads, scale=scale,
                calibration=calibration,
            )  # fmt: skip
            res = evaluate_model(pred, pairs, progress=False)
            row["iou"] = float(res["classes"][hand]["IoU"])
            print(f"scored {row['path']}: hand IoU {row['iou']:.4f}", file=sys.stderr)
        ref = next(r["iou"] for r in rows if r["path"] == "handseg torch fp32")
        for r in rows[1:]:
            r["d_iou"] = r["iou"] - ref
        iou_note = (
            f"hand IoU on {len(pairs)} test images ({where}) at the model's input size "
            f"{card.input_size[0]}x{card.input_size[1]} x scale; ΔIoU vs torch fp32"
        )

    base_ms = rows[0]["ms"]
    head = ["path"]
    for h, w in sizes:
        head += [f"{h}x{w} ms", "x base"]
    if args.model:
        head += ["hand IoU", "ΔIoU"]
    print()
    print(
        f"CPU: {_cpu_name()}, {args.threads} threads, batch 1; torch {torch.__version__}, "
        f"onnxruntime {_ort_version()}; bf16: {bf16_support()[1]}; int8: {int8_support()[1]}"
    )
    print(
        f"load average (1 min) before {load0:.2f}, after {load1:.2f}; "
        f"median of {args.repeats} after {args.warmup} warm-up; {time.time() - t_start:.0f} s"
    )
    if iou_note:
        print(iou_note)
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for r in rows:
        cells = [r["path"]]
        for hw in sizes:
            cells += [f"{r['ms'][hw]:.0f}", f"{base_ms[hw] / r['ms'][hw]:.2f}"]
        if args.model:
            cells += [f"{r['iou']:.4f}", f"{r['d_iou']:+.4f}"] if "iou" in r else ["", ""]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        doc = [{**r, "ms": {f"{h}x{w}": v for (h, w), v in r["ms"].items()}} for r in rows]
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    sys.exit(main())
