"""Hands in photos from anywhere: the measurement every generalisation change is judged by.

Sets (all real photos; none is made by handseg's own generators):

- ``arsl-test``: the arsl-bg11 test split (60/20/20, seed 0: 6 photos), scored at the
  masks' resolution (960 x 720);
- ``wild``: ../shared/data/hands-wild (75 photos from three places), overall and per
  source (``ralf_``, ``luthaihoc_``, ``deepak_``); evaluation only, never trained on;
- ``backgrounds``: ../shared/data/backgrounds/images (184 photos with no hand): the mean
  share of pixels called hand, and the share of photos with more than 1 % of them.

Rows (methods):

- ``skin``: the skin-colour rule (``handseg baseline skin``);
- ``skin in boxes``: the skin rule kept inside the detector's enlarged hand boxes;
- ``landmarks``: the detector's 21 landmarks drawn as a mask;
- ``grabcut``: GrabCut seeded by the landmarks (``--detector mediapipe --refine grabcut``);
- ``MODEL``: a trained handseg network on the whole image (``--detector none``), for each
  ``--model`` given and for a run trained here with ``--preset`` (arsl-bg11 training
  split, seed 0; the training time is reported);
- ``MODEL in boxes``: the same network kept inside the detector's hand boxes;
- a crop segmenter (``--preset hands``): the detector's hands, one canonical crop each,
  segmented by the trained network and pasted back (the model's own pipeline); with
  with ``--grow N`` also with N rounds of the larger crop where a mask runs into its crop's
  border (a model trained with ``--set crop_grow=N`` does that in its own row).

Variants of a preset: ``--set KEY=VALUE`` (repeatable; training options, e.g.
``--set encoder_lr_factor=0.1``; ``--set seed=N``: another training, initialisation, crops and
order, on the same seed-0 split); ``--train-backgrounds half`` trains with ``--backgrounds``
on the first half of ../shared/data/backgrounds/images (natural order) and scores false
hands on the other half only. ``--hands-cache FILE`` keeps the detector's hands between
runs (they do not depend on the model).

ms/photo is the mean wall time per hands-wild photo (detector included where used), one
process, this machine's threads. Metrics follow MATLAB's evaluateSemanticSegmentation
(hand IoU from counts summed over the set; MeanBFScore averaged over images).

    OMP_NUM_THREADS=2 python benchmarks/wild.py [--model RUN/model.pt] [--preset hands]
        [--set KEY=VALUE ...] [--train-backgrounds DIR|half] [--hands-cache FILE]
        [--out bench-output/wild]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml

from handseg.core.config import resolve_config
from handseg.core.imaging import list_images, read_image, read_mask
from handseg.data.pairs import find_pairs
from handseg.data.split import make_split, save_split
from handseg.eval.baseline import skin_baseline
from handseg.eval.metrics import SegmentationMetrics
from handseg.infer.crop_segmenter import CropSegmenter
from handseg.infer.detect import DETECTOR_MODES, HandDetector
from handseg.infer.pipeline import box_region
from handseg.infer.predictor import load_model
from handseg.infer.refine import color_refine, grabcut_refine, landmark_mask
from handseg.model.checkpoint import read_model_file
from handseg.train.run import train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SOURCES = ("ralf_", "luthaihoc_", "deepak_")
Method = Callable[[np.ndarray, list], np.ndarray]  # (rgb, hands) -> (H, W) 0/1


def load_sets(
    backgrounds_limit: int | None, second_half: bool = False
) -> dict[str, list[tuple[str, np.ndarray, np.ndarray | None]]]:
    """name -> [(stem, rgb, gt mask or None)], every photo read once."""
    arsl = find_pairs(SHARED / "arsl-bg11" / "images", SHARED / "arsl-bg11" / "masks")
    test = make_split(arsl, seed=0)["test"]
    wild = find_pairs(SHARED / "hands-wild" / "images", SHARED / "hands-wild" / "masks")
    bgs = list_images(SHARED / "backgrounds" / "images")
    bgs = (bgs[len(bgs) // 2 :] if second_half else bgs)[:backgrounds_limit]
    return {
        "arsl-test": [(i.stem, read_image(i), read_mask(m)) for i, m in test],
        "wild": [(i.stem, read_image(i), read_mask(m)) for i, m in wild],
        "backgrounds": [(p.stem, read_image(p), None) for p in bgs],
    }


def detect_all(sets, detector: HandDetector, settings: dict) -> tuple[dict[str, list], float]:
    """Hands per photo for every set, and the mean detector ms per hands-wild photo."""
    hands, ms = {}, 0.0
    for name, items in sets.items():
        t0 = time.perf_counter()
        hands[name] = [detector(rgb, **settings) for _, rgb, _ in items]
        if name == "wild":
            ms = 1000 * (time.perf_counter() - t0) / len(items)
    return hands, ms


def _fit(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def _scores(metrics: SegmentationMetrics) -> dict[str, float]:
    r = metrics.compute()
    return {
        "hand_IoU": r["classes"]["hand"]["IoU"],
        "GlobalAccuracy": r["dataset"]["GlobalAccuracy"],
        "MeanBFScore": r["dataset"]["MeanBFScore"],
    }


def score(method: Method, sets, hands, uses_detector: bool, detect_ms: float) -> dict:
    """Every metric of one method on every set."""
    row: dict = {}
    for name in ("arsl-test", "wild"):
        overall = SegmentationMetrics()
        per_source = {s: SegmentationMetrics() for s in SOURCES}
        t0 = time.perf_counter()
        for (stem, rgb, gt), found in zip(sets[name], hands[name]):
            pred = _fit((method(rgb, found) > 0).astype(np.uint8), gt.shape)
            overall.update(pred, gt, image=stem)
            for s in SOURCES:
                if stem.startswith(s):
                    per_source[s].update(pred, gt, image=stem)
        if name == "wild":
            row["ms"] = 1000 * (time.perf_counter() - t0) / len(sets[name])
            row["ms"] += detect_ms if uses_detector else 0.0
            row["sources"] = {s: _scores(m)["hand_IoU"] for s, m in per_source.items() if len(m)}
        row[name] = _scores(overall)
    shares = np.array(
        [
            float((method(rgb, found) > 0).mean())
            for (_, rgb, _), found in zip(sets["backgrounds"], hands["backgrounds"])
        ]
    )
    row["false_share"] = float(shares.mean())
    row["false_photos"] = float((shares > 0.01).mean())
    return row


def peer_methods() -> dict[str, tuple[Method, bool]]:
    """name -> (method, uses the detector)."""
    return {
        "skin rule (YCrCb + morphology)": (lambda rgb, h: skin_baseline(rgb), False),
        "skin rule inside detector boxes": (
            lambda rgb, h: skin_baseline(rgb) * box_region(rgb.shape, h),
            True,
        ),
        "detector landmarks drawn as a mask": (lambda rgb, h: landmark_mask(rgb.shape, h), True),
        "detector + GrabCut from landmarks": (lambda rgb, h: grabcut_refine(rgb, h), True),
        "detector + colour model from landmarks": (lambda rgb, h: color_refine(rgb, h), True),
    }


def background_half(out: Path) -> Path:
    """A folder of links to the first half of the hand-free photos (natural order)."""
    folder = out / "backgrounds-first-half"
    folder.mkdir(parents=True, exist_ok=True)
    photos = list_images(SHARED / "backgrounds" / "images")
    for p in photos[: len(photos) // 2]:
        link = folder / p.name
        if not link.exists():
            os.symlink(p.resolve(), link)
    return folder


def model_methods(label: str, model_path: Path, grow: int = 0) -> dict[str, tuple[Method, bool]]:
    net, card = read_model_file(model_path)
    if card.is_crop_segmenter:  # the model's own pipeline: detector + crop segmenter
        segmenter = CropSegmenter(net, card)  # with the model's own rounds of growth
        rows = {label: (lambda rgb, h: segmenter(rgb, h)[0], True)}
        if (
            grow is not None and grow != segmenter.grow
        ):  # other rounds of the larger crop where a mask runs
            grown = CropSegmenter(net, card, grow=grow)  # into the crop's border
            rows[f"{label}, crops grown x{grow}"] = (lambda rgb, h: grown(rgb, h)[0], True)
        return rows
    predictor = load_model(model_path, runtime="torch", precision="fp32")
    return {
        label: (lambda rgb, h: predictor.predict(rgb), False),
        f"{label} inside detector boxes": (
            lambda rgb, h: predictor.predict(rgb) * box_region(rgb.shape, h),
            True,
        ),
    }


def train_preset(
    preset: str,
    out: Path,
    backgrounds: str | None,
    epochs: int | None,
    settings: dict | None = None,
) -> tuple[Path, float]:
    settings = dict(settings or {})
    seed = int(settings.pop("seed", 0))
    images, masks = SHARED / "arsl-bg11" / "images", SHARED / "arsl-bg11" / "masks"
    overrides = settings | {
        "preset": preset,
        "images": str(images),
        "masks": str(masks),
        "out": str(out),
        "seed": seed,
    }
    if seed:  # another training (initialisation, crops, order) on the same seed-0 split
        out.mkdir(parents=True, exist_ok=True)
        split = make_split(find_pairs(images, masks), seed=0)
        save_split(split, out.parent / "split-seed0.json", seed=0)
        overrides["split"] = str(out.parent / "split-seed0.json")
    if backgrounds:
        overrides["backgrounds"] = backgrounds
    if epochs:
        overrides["epochs"] = epochs
    cfg = resolve_config(overrides)
    t0 = time.perf_counter()
    train(cfg, progress=False)
    return out / "model.pt", time.perf_counter() - t0


def table(rows: dict[str, dict]) -> str:
    head = (
        "| method | arsl test IoU | wild IoU | ralf / luthaihoc / deepak | wild GlobalAcc | "
        "wild MeanBF | hand-free: mean false share | hand-free: > 1 % | ms/photo | train |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for name, r in rows.items():
        src = " / ".join(f"{r['sources'].get(s, float('nan')):.3f}" for s in SOURCES)
        train_s = f"{r['train_s'] / 60:.1f} min" if r.get("train_s") else "-"
        lines.append(
            f"| {name} | {r['arsl-test']['hand_IoU']:.3f} | {r['wild']['hand_IoU']:.3f} | {src} | "
            f"{r['wild']['GlobalAccuracy']:.3f} | {r['wild']['MeanBFScore']:.3f} | "
            f"{100 * r['false_share']:.2f} % | {100 * r['false_photos']:.0f} % | {r['ms']:.0f} | {train_s} |"
        )
    return head + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        help="a trained model.pt to add as a row (repeatable)",
    )
    ap.add_argument(
        "--preset",
        action="append",
        default=[],
        help="train this preset on the arsl-bg11 training split first (repeatable)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training option for the trained presets (repeatable; YAML values)",
    )
    ap.add_argument("--tag", default="", help="suffix of the trained rows' names")
    ap.add_argument(
        "--train-backgrounds",
        default=None,
        help="--backgrounds DIR for the trained presets; 'half': the first half of "
        "../shared/data/backgrounds/images (false hands then scored on the other half)",
    )
    ap.add_argument("--hands-cache", default=None, help="pickle of the detector's hands")
    ap.add_argument(
        "--grow",
        type=int,
        default=None,
        metavar="N",
        help="crop segmenters: also a row with N rounds of the larger crop for masks that "
        "run into their crop's border (the model's own rounds: --set crop_grow=N)",
    )
    ap.add_argument(
        "--no-peers", action="store_true", help="skip the skin-rule and detector-only rows"
    )
    ap.add_argument(
        "--backgrounds-limit",
        type=int,
        default=None,
        help="score only the first N hand-free photos",
    )
    ap.add_argument(
        "--detect",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a detector setting over --mode's (repeatable; YAML values, e.g. tiles=3x2 "
        "max_candidates=6: the earlier accurate mode)",
    )
    ap.add_argument("--threads", type=int, default=2, help="detector threads")
    ap.add_argument(
        "--mode", choices=sorted(DETECTOR_MODES), default="accurate", help="detector settings"
    )
    ap.add_argument("--out", default="bench-output/wild")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = [(Path(m).parent.name or Path(m).stem, Path(m), None) for m in args.model]
    half = args.train_backgrounds == "half"
    train_bgs = str(background_half(out)) if half else args.train_backgrounds
    settings = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    for preset in args.preset:
        tag = preset + ("+backgrounds" if args.train_backgrounds else "") + args.tag
        path, secs = train_preset(preset, out / f"run-{tag}", train_bgs, args.epochs, settings)
        models.append((f"--preset {tag}", path, secs))
    sets = load_sets(args.backgrounds_limit, second_half=half)
    cache = Path(args.hands_cache) if args.hands_cache else None
    detect = DETECTOR_MODES[args.mode] | {
        k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.detect)
    }
    settings_key = repr(sorted(detect.items()))  # other settings: detect again
    key = (args.mode, settings_key, half, args.backgrounds_limit)
    cached = pickle.loads(cache.read_bytes()) if cache and cache.is_file() else {}
    if key in cached:
        hands, detect_ms = cached[key]
    else:
        hands, detect_ms = detect_all(sets, HandDetector(num_threads=args.threads), detect)
        if cache:
            cache.write_bytes(pickle.dumps(cached | {key: (hands, detect_ms)}))
    found = {k: sum(bool(h) for h in v) for k, v in hands.items()}
    print(
        f"detector ({args.mode}{', ' if args.detect else ''}{' '.join(args.detect)}): hands found in {found} photos; {detect_ms:.1f} ms/photo on hands-wild"
    )
    methods = {} if args.no_peers else peer_methods()
    train_s = {}
    for label, path, secs in models:
        methods |= model_methods(label, path, args.grow)
        train_s[label] = secs
    rows = {}
    for name, (method, uses_detector) in methods.items():
        rows[name] = score(method, sets, hands, uses_detector, detect_ms)
        rows[name]["train_s"] = train_s.get(name)
        print(f"{name}: wild {rows[name]['wild']['hand_IoU']:.3f}", flush=True)
    text = table(rows)
    print(text)
    (out / "wild.md").write_text(text + "\n")
    (out / "wild.json").write_text(json.dumps({"detected": found, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
