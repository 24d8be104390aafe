"""Time per photo of the hand pipelines, end to end, in one process (ratios hold on noisy cores).

Each hands-wild photo is resized to 640 x 480 and run through ``HandSegmenter.predict``
(detector + refiner, everything after decoding) by each pipeline in turn, photo by photo,
so that every pipeline sees the same load: the crop segmenter of ``--model`` with each
detector mode (fast, accurate, thorough) on each runtime asked for, and GrabCut / the colour model with
the accurate detector (the pipelines without training). Reported: mean and median ms per
photo and the ratio to GrabCut measured in the same run.

    OMP_NUM_THREADS=2 python benchmarks/hands_speed.py --model RUN/model.pt [--runtime onnx torch]
        [--photos 40] [--repeats 2] [--modes fast accurate thorough]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from handseg.core.imaging import list_images, read_image
from handseg.infer.crop_segmenter import CropSegmenter
from handseg.infer.detect import DETECTOR_MODES, HandDetector
from handseg.infer.pipeline import HandPipeline, HandSegmenter
from handseg.model.checkpoint import read_model_file
from handseg.train.model_card import hardware

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="a crop segmenter (--preset hands) model.pt")
    ap.add_argument("--runtime", nargs="+", default=["onnx", "torch"])
    ap.add_argument("--modes", nargs="+", default=["fast", "accurate", "thorough"],
                    choices=sorted(DETECTOR_MODES), help="detector modes for the crop segmenter")  # fmt: skip
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    photos = [
        cv2.resize(read_image(p), (640, 480), interpolation=cv2.INTER_AREA)
        for p in list_images(SHARED / "hands-wild" / "images")[: args.photos]
    ]
    detector = HandDetector(num_threads=args.threads)
    net, card = read_model_file(args.model)
    pipelines: dict[str, HandSegmenter] = {}
    for runtime in args.runtime:
        crops = CropSegmenter(net, card, runtime=runtime, precision="fp32", threads=args.threads)
        for mode in args.modes:
            name = f"detector ({mode}) + crop segmenter ({crops.runtime})"
            pipelines[name] = HandSegmenter(
                HandPipeline(refine="crops", mode=mode, detector=detector, crops=crops)
            )
    for refine in ("grabcut", "color"):
        pipelines[f"detector (accurate) + {refine}"] = HandSegmenter(
            HandPipeline(refine=refine, mode="accurate", detector=detector)
        )
    for seg in pipelines.values():  # warm-up (ONNX session, first allocations)
        seg.predict(photos[0])
    times: dict[str, list[float]] = {k: [] for k in pipelines}
    for _ in range(args.repeats):
        for rgb in photos:
            for name, seg in pipelines.items():
                t0 = time.perf_counter()
                seg.predict(rgb)
                times[name].append(1000 * (time.perf_counter() - t0))
    ref = np.mean(times["detector (accurate) + grabcut"])
    print(f"{hardware()}, {args.threads} threads; {len(photos)} hands-wild photos at 640 x 480, "
          f"{args.repeats} passes, interleaved")  # fmt: skip
    print("| pipeline | mean ms | median ms | / GrabCut |\n|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {np.mean(t):.1f} | {np.median(t):.1f} | {np.mean(t) / ref:.2f} |")


if __name__ == "__main__":
    main()
