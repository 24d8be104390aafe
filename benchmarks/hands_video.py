"""Frames per second of the hand detector pipeline on a 640 x 480 video, end to end.

The clip is made in a temporary folder from the 19 hands-wild ``luthaihoc_`` frames
(640 x 480, head-mounted, both hands): each still is held for ``--hold`` frames with a
slow pan (1 px a frame, as a head-mounted camera drifts), then the next one cuts in, up
to ``--frames`` frames; so every frame has real hands in it and a scene cut every
``--hold`` frames makes the detector find them again. ``handseg predict``'s video path runs on it (read, detect, refine,
overlay, write MP4) with the settings it uses for video (``fast`` detection + ``color``
refiner); the figure is frames written / wall time, as ``predict_video`` reports it.

    OMP_NUM_THREADS=2 python benchmarks/hands_video.py [--frames 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from handseg.core.imaging import read_image
from handseg.infer.media import predict_video
from handseg.infer.pipeline import load_segmenter

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "hands-wild" / "images"


def make_clip(path: Path, frames: int, hold: int) -> None:
    stills = [read_image(p) for p in sorted(SHARED.glob("luthaihoc_*.png"))]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for i in range(frames):
        still = cv2.resize(
            stills[(i // hold) % len(stills)], (640, 480), interpolation=cv2.INTER_AREA
        )
        pan = np.float32([[1, 0, i % hold], [0, 1, 0]])  # 1 px a frame to the right
        frame = cv2.warpAffine(still, pan, (640, 480), borderMode=cv2.BORDER_REPLICATE)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument(
        "--hold", type=int, default=30, help="frames per still (a scene cut after each)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", default=None, help="detector mode (default: the video setting, fast)")
    ap.add_argument("--refine", default=None, help="refiner (default: the video setting, color)")
    ap.add_argument("--no-tracking", action="store_true", help="detect afresh on every frame")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.frames, args.hold)
        seg = load_segmenter(None, detector="mediapipe", threads=args.threads)
        seg = seg.for_video()
        seg.pipeline.tracking = not args.no_tracking
        if args.mode or args.refine:
            seg.pipeline.mode = args.mode or seg.pipeline.mode
            seg.pipeline.refine = args.refine or seg.pipeline.refine
        info = predict_video(seg, clip, Path(tmp) / "out.mp4", progress=False)
    print(
        f"{seg.description}: {info['frames']} frames of {info['size'][1]} x {info['size'][0]}, "
        f"{info['fps']:.1f} frames/s end to end"
    )


if __name__ == "__main__":
    main()
