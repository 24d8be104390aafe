"""A classical baseline to measure the network against: skin colour in YCrCb plus morphology.

This is the rule a user would try first (Chai and Ngan's skin thresholds, Cr in
[133, 173] and Cb in [77, 127], on OpenCV's full-range YCrCb), cleaned up the usual way:

1. threshold Cr and Cb (no luma limit: the rule's point is to ignore brightness);
2. open (drop specks and thin skin-coloured lines), then close (bridge small gaps, e.g.
   creases and nails), with elliptical kernels whose radii default to 0.3 % and 1 % of
   the image diagonal;
3. fill holes (regions of non-skin fully enclosed by skin);
4. keep the ``keep`` largest connected components (8-connected) of at least
   ``min_area`` (a fraction of the image's pixels).

It knows nothing about shape, so faces, arms and skin-toned wood are hand to it; the
benchmark ``benchmarks/background_shift.py`` measures by how much the network does better.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from handseg.core.constants import SKIN_CB, SKIN_CR
from handseg.core.errors import HandsegError
from handseg.core.imaging import list_images, read_image, skin_pixels

DEFAULT_CR: tuple[int, int] = SKIN_CR
DEFAULT_CB: tuple[int, int] = SKIN_CB


def _check_range(name: str, r: Sequence[float]) -> tuple[float, float]:
    if len(r) != 2 or not 0 <= r[0] <= r[1] <= 255:
        raise HandsegError(f"{name} range must be LO HI with 0 <= LO <= HI <= 255, got {r}")
    return float(r[0]), float(r[1])


def _disk(radius: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def skin_baseline(
    image: np.ndarray,
    *,
    cr: Sequence[float] = DEFAULT_CR,
    cb: Sequence[float] = DEFAULT_CB,
    open_radius: int | None = None,
    close_radius: int | None = None,
    fill_holes: bool = True,
    min_area: float = 0.002,
    keep: int = 1,
) -> np.ndarray:
    """Segment skin-coloured regions as hand.

    Args:
        image: (H, W, 3) uint8 RGB.
        cr, cb: inclusive (lo, hi) ranges of Cr and Cb that count as skin.
        open_radius, close_radius: radii in pixels of the opening and closing disks;
            None = 0.3 % and 1 % of the image diagonal (at least 1); 0 = skip the step.
        fill_holes: fill non-skin regions fully enclosed by skin.
        min_area: smallest component kept, as a fraction of the image's pixels (0..1).
        keep: number of largest components kept (0 = all above ``min_area``).

    Returns:
        (H, W) uint8 mask, 1 = hand (skin), 0 = background.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise HandsegError(
            f"skin baseline needs an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
        )
    cr0, cr1 = _check_range("Cr", cr)
    cb0, cb1 = _check_range("Cb", cb)
    if not 0.0 <= min_area <= 1.0:
        raise HandsegError(f"min_area is a fraction of the image (0..1), got {min_area}")
    if keep < 0:
        raise HandsegError(f"keep must be 0 (all) or a positive number of components, got {keep}")
    h, w = image.shape[:2]
    diag = float(np.hypot(h, w))
    r_open = max(1, round(0.003 * diag)) if open_radius is None else int(open_radius)
    r_close = max(1, round(0.01 * diag)) if close_radius is None else int(close_radius)

    mask = skin_pixels(image, (cr0, cr1), (cb0, cb1))
    if r_open > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disk(r_open))
    if r_close > 0:
        # pad so that closing does not glue skin to the frame edge or lose it there
        pad = r_close + 1
        padded = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        mask = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, _disk(r_close))[pad:-pad, pad:-pad]
    if fill_holes:
        from scipy.ndimage import binary_fill_holes

        mask = binary_fill_holes(mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]  # component 0 is the background
    order = np.argsort(-areas, kind="stable")
    order = order[areas[order] >= min_area * h * w]
    if keep > 0:
        order = order[:keep]
    return np.isin(labels, order + 1).astype(np.uint8)


def run_skin_baseline(
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    progress: bool = True,
    **options,
) -> list[Path]:
    """Run :func:`skin_baseline` on every image of ``images_dir`` (natural order).

    Writes ``out_dir/<stem>_mask.png`` (8-bit, 0 = background, 255 = hand) at each image's
    size, the layout ``handseg evaluate --pred-masks OUT --masks GT`` pairs by stem.
    ``options`` go to :func:`skin_baseline`.

    Returns:
        The written mask paths, in the images' order.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    images = list_images(images_dir)
    stems = [p.stem for p in images]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise HandsegError(
            f"{images_dir} holds several images named {twins[0]}.* (masks are named by stem); "
            "rename or move one of them"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HandsegError(f"output {out} is a file; pass a folder with --out")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(images, desc="skin baseline", unit="img", disable=not progress):
        mask = skin_baseline(read_image(path), **options)
        target = out / f"{path.stem}_mask.png"
        Image.fromarray(mask * np.uint8(255), "L").save(target)
        written.append(target)
    return written
