"""Render speed of the built-in synthetic data set (no file writing).

Run on one core, as the requirement is stated (at least 50 images/s at 240 x 320):

    OMP_NUM_THREADS=1 python benchmarks/synth_speed.py [-n 300]

Prints images/s of ``render_sample`` at 240 x 320 and 384 x 512, and of
``render_background`` per family at 240 x 320, per CPU-second of this process (the speed
of one core, robust to other load on the machine) and per wall-clock second.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _rate(fn, n: int) -> tuple[float, float]:
    """(images per CPU-second of this process, images per wall-clock second).

    CPU time is the fair measure of one core's speed on a shared machine; wall time is
    what you wait.
    """
    fn(0)  # warm-up: imports, OpenCV initialisation
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.process_time() - c0), n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="samples per measurement")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(1)  # one core, as the requirement says
    from handseg.core.constants import FAMILIES
    from handseg.synth.backgrounds import render_background
    from handseg.synth.hands import render_sample

    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cv2 threads=1")
    for size in ((240, 320), (384, 512)):
        cpu, wall = _rate(lambda i, s=size: render_sample(np.random.default_rng([0, i]), s), args.n)
        print(f"render_sample {size[0]}x{size[1]}: {cpu:7.1f} images/s ({wall:.1f} wall)")
    for fam in FAMILIES:
        cpu, wall = _rate(
            lambda i, f=fam: render_background(np.random.default_rng([1, i]), (240, 320), f),
            args.n,
        )
        print(f"render_background {fam:<9} 240x320: {cpu:7.1f} images/s ({wall:.1f} wall)")


if __name__ == "__main__":
    main()
