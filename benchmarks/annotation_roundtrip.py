"""Masks through annotation formats and back, on the 30 arsl-bg11 masks.

PNG -> COCO RLE -> PNG and PNG -> CVAT zip -> PNG must be exact; PNG -> LabelMe polygons ->
PNG is measured as hand IoU (pixels of all 30 masks pooled, and the worst single mask) at
several simplification tolerances, with the polygon count and the LabelMe files' size.
Each conversion goes through ``handseg.data.convert.convert_masks`` and every mask is read
back through ``read_mask``, as ``handseg train --masks EXPORT`` would read it.

    python benchmarks/annotation_roundtrip.py [--data ../shared/data/arsl-bg11]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from handseg.core.annotations import DEFAULT_TOLERANCE
from handseg.core.imaging import read_mask
from handseg.data.convert import convert_masks
from handseg.data.pairs import find_pairs


def _read(images: Path, masks: Path) -> dict[str, np.ndarray]:
    return {i.name: read_mask(m) for i, m in find_pairs(images, masks)}


def _size_kb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[2]
    ap.add_argument("--data", type=Path, default=here / "shared" / "data" / "arsl-bg11")
    ap.add_argument("--tolerances", type=float, nargs="+", default=[0, 0.5, DEFAULT_TOLERANCE, 2])
    args = ap.parse_args()
    logging.getLogger("handseg").setLevel(logging.ERROR)  # "no --images": on purpose here
    images, masks = args.data / "images", args.data / "masks"
    # the masks at their own size (960 x 720): no --images, so nothing is resized
    want = _read(images, masks)
    names = list(want)
    print(f"{len(want)} masks of {args.data}, {next(iter(want.values())).shape[::-1]} (W, H)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for to in ("coco", "cvat", "palette"):
            t = time.perf_counter()
            out = Path(convert_masks(masks, to, tmp / to, progress=False)["out"])
            dt = time.perf_counter() - t
            got = _read(images, out)
            exact = sum(np.array_equal(want[k], got[k]) for k in names)
            print(f"{to:8s} exact {exact}/{len(names)}  {_size_kb(out):8.0f} KiB  write {dt:.1f} s")
        print("\nLabelMe polygons (hand IoU over all pixels, worst mask, shapes, size)")
        for tol in args.tolerances:
            out = tmp / f"labelme-{tol}"
            t = time.perf_counter()
            r = convert_masks(masks, "labelme", out, tolerance=tol, progress=False)
            dt = time.perf_counter() - t
            got = _read(images, out)
            inter = sum(int((want[k] & got[k]).sum()) for k in names)
            union = sum(int((want[k] | got[k]).sum()) for k in names)
            worst = min((want[k] & got[k]).sum() / max((want[k] | got[k]).sum(), 1) for k in names)
            mark = "  (default)" if tol == DEFAULT_TOLERANCE else ""
            print(
                f"tolerance {tol:4g} px: IoU {inter / union:.5f}, worst {worst:.5f}, "
                f"{r['annotations']} polygons, {_size_kb(out):6.0f} KiB, write {dt:.1f} s{mark}"
            )


if __name__ == "__main__":
    main()
