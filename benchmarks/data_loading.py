"""Time SegDataset loading of the real photos (1280x960 JPEG + 960x720 mask) at 384 x 512.

python benchmarks/data_loading.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from handseg.data.dataset import SegDataset
from handseg.data.pairs import find_pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "arsl-bg11"


def main() -> None:
    pairs = find_pairs(DATA / "images", DATA / "masks")
    for cache in (False, True):
        ds = SegDataset(pairs, image_size=(384, 512), cache=cache)
        ds[0]  # warm up imports
        per_epoch = []
        for _ in range(3):
            t = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            per_epoch.append((time.perf_counter() - t) / len(ds) * 1000)
        print(
            f"cache={cache}: ms per pair, epochs 1-3: "
            + ", ".join(f"{v:.1f}" for v in per_epoch)
            + f" (median {statistics.median(per_epoch):.1f})"
        )


if __name__ == "__main__":
    main()
