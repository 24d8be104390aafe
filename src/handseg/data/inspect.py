"""Know your data first: pairing, sizes, class table and class weights of a data set.

:func:`inspect_data` reads every pair once (``handseg inspect``) and reports what training
would see: the pairing rule, image and mask sizes, a class table like MATLAB's
``countEachLabel`` and the median-frequency class weights; with ``out`` it also draws a
class-frequency bar chart and a grid of photos with their masks overlaid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handseg.core.constants import CLASS_NAMES
from handseg.core.imaging import (
    fit_mask_to_image,
    read_image_full,
    read_mask,
    resize_image,
    resize_mask,
)
from handseg.core.io import atomic_write_json
from handseg.core.mask_sources import FORMAT_NAMES
from handseg.data.dataset import label_counts, median_frequency_weights
from handseg.data.pairs import PairList, find_pairs

_MAX_SAMPLES = 8
_THUMB_HW = (180, 240)  # decode size hint for the sample grid (JPEG draft)
_RULES = {
    "stem": "file name",
    "natural-order": "natural sort order (no names match: i-th image with i-th mask)",
}


def _size_table(sizes: Counter) -> dict[str, int]:
    return {f"{w} x {h}": n for (w, h), n in sorted(sizes.items(), key=lambda kv: -kv[1])}


@dataclass
class _Tally:
    """What one pass over the pairs collects."""

    image_sizes: Counter = field(default_factory=Counter)  # (W, H) -> count
    mask_sizes: Counter = field(default_factory=Counter)
    pixel: np.ndarray = field(default_factory=lambda: np.zeros(len(CLASS_NAMES), np.int64))
    image_pixel: np.ndarray = field(default_factory=lambda: np.zeros(len(CLASS_NAMES), np.int64))
    shares: list[float] = field(default_factory=list)  # hand share of each image
    samples: list[tuple[str, np.ndarray, np.ndarray, float]] = field(default_factory=list)


def inspect_data(
    images_dir: str | Path,
    masks_dir: str | Path,
    out: str | Path | None = None,
    *,
    hand_value: int | Sequence[int] | str | None = None,
) -> dict[str, Any]:
    """Read every (image, mask) pair once and summarise the data set.

    Returns a JSON-serialisable dict with ``mask_format`` (``png``, ``coco``, ``labelme``
    or ``cvat``: what ``masks_dir`` held), ``rule``, ``num_pairs``, ``first_pairs``,
    ``image_sizes`` / ``mask_sizes`` ("W x H" -> count), ``classes`` (name, pixel_count,
    image_pixel_count, frequency, as MATLAB ``countEachLabel``; counted at each image's
    size, the mask fitted to it), ``class_weights`` (median-frequency, name -> weight),
    ``hand_share`` (min/mean/max share of hand pixels per image) and ``files`` (what was
    written). With ``out``: ``class-frequency.png``, ``samples.png`` and ``inspect.json``.
    Any unreadable file or undecodable mask raises ``HandsegError`` naming it.
    """
    pairs = find_pairs(images_dir, masks_dir)
    t = _tally(pairs, hand_value)
    weights = median_frequency_weights(t.pixel, t.image_pixel)
    info: dict[str, Any] = {
        "images_dir": str(images_dir),
        "masks_dir": str(masks_dir),
        "mask_format": pairs.mask_format,
        "rule": pairs.rule,
        "num_pairs": len(pairs),
        "first_pairs": [[i.name, m.name] for i, m in pairs[:3]],
        "last_pair": [pairs[-1][0].name, pairs[-1][1].name],
        "image_sizes": _size_table(t.image_sizes),
        "mask_sizes": _size_table(t.mask_sizes),
        "classes": _class_table(t.pixel, t.image_pixel),
        "class_weights": {name: float(weights[c]) for c, name in enumerate(CLASS_NAMES)},
        "hand_share": {
            "min": float(np.min(t.shares)),
            "mean": float(np.mean(t.shares)),
            "max": float(np.max(t.shares)),
        },
        "files": {},
    }
    if out is not None:
        info["files"] = _write_files(info, weights, t.samples, Path(out))
    return info


def _tally(pairs: PairList, hand_value: int | Sequence[int] | str | None) -> _Tally:
    """Sizes, class counts and hand shares of every pair, and up to 8 evenly spread samples
    (thumbnails with their masks) for the grid."""
    from tqdm.auto import tqdm

    n = len(pairs)
    sample_idx = set(np.linspace(0, n - 1, min(n, _MAX_SAMPLES)).round().astype(int).tolist())
    t = _Tally()
    with tqdm(pairs, desc="reading", unit="pair", disable=None) as bar:  # closed on an error
        for i, (image_path, mask_path) in enumerate(bar):
            _tally_pair(t, image_path, mask_path, hand_value, i in sample_idx)
    return t


def _tally_pair(
    t: _Tally,
    image_path: Path,
    mask_path: Path,
    hand_value: int | Sequence[int] | str | None,
    sample: bool,
) -> None:
    """Add one pair to ``t`` (and its thumbnail to the samples when ``sample``)."""
    # Decoding the whole photo (at reduced JPEG scale) also proves it is readable.
    thumb, (h, w) = read_image_full(image_path, draft_hw=_THUMB_HW)
    mask = read_mask(mask_path, hand_value=hand_value)
    t.image_sizes[(w, h)] += 1
    t.mask_sizes[(mask.shape[1], mask.shape[0])] += 1
    fitted = fit_mask_to_image(mask, (h, w), name=str(mask_path))  # (H, W) {0, 1}
    p, ip = label_counts([fitted], num_classes=len(CLASS_NAMES))
    t.pixel += p
    t.image_pixel += ip
    t.shares.append(float(fitted.mean()))
    if sample:
        scale = min(1.0, _THUMB_HW[1] * 1.5 / w)
        hw = (max(1, round(h * scale)), max(1, round(w * scale)))
        t.samples.append(
            (image_path.name, resize_image(thumb, hw), resize_mask(mask, hw), t.shares[-1])
        )


def _class_table(pixel: np.ndarray, image_pixel: np.ndarray) -> list[dict[str, Any]]:
    """One row per class, as MATLAB's ``countEachLabel`` (plus each class's share)."""
    total = max(int(pixel.sum()), 1)
    return [
        {
            "name": name,
            "pixel_count": int(pixel[c]),
            "image_pixel_count": int(image_pixel[c]),
            "frequency": float(pixel[c] / image_pixel[c]) if image_pixel[c] else 0.0,
            "share": float(pixel[c] / total),
        }
        for c, name in enumerate(CLASS_NAMES)
    ]


def _write_files(
    info: dict[str, Any],
    weights: np.ndarray,
    samples: list[tuple[str, np.ndarray, np.ndarray, float]],
    out: Path,
) -> dict[str, str]:
    """Write the two figures and ``inspect.json`` (``info`` with the file names) into
    ``out``; return ``{"class_frequency", "samples", "report"}`` paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "class_frequency": str(_plot_class_frequency(info["classes"], weights, out)),
        "samples": str(_plot_samples(samples, out)),
        "report": str(out / "inspect.json"),
    }
    atomic_write_json(out / "inspect.json", {**info, "files": files})
    return files


def _plot_class_frequency(classes: list[dict], weights: np.ndarray, out: Path) -> Path:
    """Bar chart of each class's share of all labelled pixels, weights in the labels."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg canvas)

    fig = Figure(figsize=(5, 3.5), dpi=100)
    ax = fig.add_subplot()
    names = [c["name"] for c in classes]
    shares = [100 * c["share"] for c in classes]
    bars = ax.bar(names, shares, color=["#555555", "#d95f02"][: len(names)])
    for bar, share, w in zip(bars, shares, weights):
        ax.annotate(
            f"{share:.1f} %\nweight {w:.3g}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center", va="bottom", fontsize=9,
        )  # fmt: skip
    ax.set_ylabel("share of labelled pixels (%)")
    ax.set_ylim(0, 115)
    ax.set_title("Class frequency")
    fig.tight_layout()
    path = out / "class-frequency.png"
    fig.savefig(path)
    return path


def _plot_samples(samples: list[tuple[str, np.ndarray, np.ndarray, float]], out: Path) -> Path:
    """Grid of up to 8 photos with their hand masks overlaid (orange, 50 % opaque)."""
    from matplotlib.figure import Figure

    cols = min(4, len(samples))
    rows = -(-len(samples) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.7 * rows), dpi=100)
    colour = np.array([255, 120, 0], np.float32)
    for k, (name, image, mask, share) in enumerate(samples):
        ax = fig.add_subplot(rows, cols, k + 1)
        blend = image.astype(np.float32)
        hand = mask == 1
        blend[hand] = 0.5 * blend[hand] + 0.5 * colour
        ax.imshow(blend.round().astype(np.uint8))
        title = name if len(name) <= 28 else name[:12] + "..." + name[-13:]
        ax.set_title(f"{title}\nhand {100 * share:.1f} %", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    path = out / "samples.png"
    fig.savefig(path)
    return path


def format_inspect_report(info: dict[str, Any]) -> str:
    """The terminal text for an :func:`inspect_data` result."""
    lines = [
        f"images: {info['images_dir']}",
        f"masks:  {info['masks_dir']} (read as {FORMAT_NAMES[info.get('mask_format', 'png')]})",
        f"pairs:  {info['num_pairs']}, paired by {_RULES.get(info['rule'], info['rule'])}",
    ]
    shown = [tuple(p) for p in info["first_pairs"]]
    if info["num_pairs"] > 4:
        shown.append(("...", None))
    if info["num_pairs"] > 3:
        shown.append(tuple(info["last_pair"]))
    for image, mask in shown:
        lines.append(f"        {image} <-> {mask}" if mask else f"        {image}")
    for label, key in (
        ("image sizes (W x H)", "image_sizes"),
        ("mask sizes (W x H) ", "mask_sizes"),
    ):
        sizes = ", ".join(f"{s} ({n})" for s, n in info[key].items())
        lines.append(f"{label}: {sizes}")
    if info["mask_sizes"].keys() != info["image_sizes"].keys():
        lines.append("  masks that differ in size are resized to their image (nearest neighbour)")
    hs = info["hand_share"]
    lines.append(
        f"hand pixels per image: min {100 * hs['min']:.1f} %, mean {100 * hs['mean']:.1f} %, "
        f"max {100 * hs['max']:.1f} %"
    )
    if hs["mean"] > 0.5:
        lines.append(
            "  hands cover more than half of the pixels: are the masks inverted? "
            "handseg reads white (bright) as hand"
        )
    lines += ["", f"{'Name':<12}{'PixelCount':>14}{'ImagePixelCount':>18}{'Frequency':>11}"]
    for c in info["classes"]:
        lines.append(
            f"{c['name']:<12}{c['pixel_count']:>14d}{c['image_pixel_count']:>18d}"
            f"{c['frequency']:>11.4f}"
        )
    weights = ", ".join(f"{k} {v:.4g}" for k, v in info["class_weights"].items())
    lines += ["", f"class weights (median frequency balancing): {weights}"]
    if info.get("files"):
        lines.append("wrote: " + ", ".join(info["files"].values()))
    return "\n".join(lines)
