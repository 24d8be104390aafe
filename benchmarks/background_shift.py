"""Background shift: does background augmentation make the network work on backgrounds it
never saw, and by how much does it beat the skin-colour rule there?

Protocol (arsl-bg11, split 60/20/20 with seed 0, ``--preset scratch`` at ``--size``):

- training runs (same seed, same options except augmentation):
  ``none``: the scratch preset's augmentation (seed flip/translate, scale-rotate, colour),
  no background compositing; ``background``: the same plus background compositing with
  probability ``--background-prob`` from the generator families in ``--train-families``
  (by default plain, gradient, texture, clutter: ``indoor`` and ``skin`` are held out),
  a share ``--camouflage-prob`` of them recoloured towards the hand's own colour.
- test sets: ``plain`` = the 6 test-split photos as they are; ``shifted-<family>`` = the
  same 6 hands composited (:class:`handseg.synth.compositing.BackgroundComposite`, arm bands
  included) onto ``--per-image`` backgrounds of one held-out family each, drawn with
  their own seeds, at the masks' full resolution (960x720), saved under
  ``OUT/shifted-<family>/{images,masks}``.
- the skin baseline (:func:`handseg.eval.baseline.skin_baseline`, default options) on every set.

Metrics at the masks' resolution: hand IoU, global accuracy, MeanBFScore (mean over
images). Goal: on every shifted set hand IoU >= 0.85 and >= 0.2 above the skin baseline,
while the plain test split loses <= 0.005 hand IoU against ``none``.

    OMP_NUM_THREADS=2 python benchmarks/background_shift.py [--out bench-output/background_shift]

Note: the shifted sets are built with the same compositing code as the training
augmentation (same seam and arm statistics); only the background families are unseen.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "arsl-bg11"


class SkinPredictor:
    """The skin baseline behind the predictor interface ``evaluate_model`` uses."""

    classes = ("background", "hand")

    def predict(self, image: np.ndarray, *, out_size: tuple[int, int] | None = None):
        import cv2

        from handseg.eval.baseline import skin_baseline

        mask = skin_baseline(image)
        if out_size is not None and tuple(out_size) != mask.shape:
            mask = cv2.resize(mask, (out_size[1], out_size[0]), interpolation=cv2.INTER_NEAREST)
        return mask


def make_shifted(test_pairs, family: str, out: Path, per_image: int, seed: int) -> list:
    """Composite every test hand onto ``per_image`` backgrounds of ``family``; save PNGs."""
    from PIL import Image

    from handseg.core.imaging import read_image, read_mask
    from handseg.core.imaging import resize_image as _resize_image
    from handseg.synth.backgrounds import BackgroundSource
    from handseg.synth.compositing import BackgroundComposite

    images, masks = out / "images", out / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    t = BackgroundComposite(
        BackgroundSource(families=(family,)), p=1.0, arm_prob=0.5, camouflage_prob=0.0
    )
    for i, (image_path, mask_path) in enumerate(test_pairs):
        mask = read_mask(mask_path)  # (720, 960) {0, 1}
        image = _resize_image(read_image(image_path), mask.shape[:2])  # photo to mask size
        for k in range(per_image):
            comp, _ = t(image, mask, np.random.default_rng([seed, i, k]))
            stem = f"{Path(image_path).stem}_{family}{k}"
            Image.fromarray(comp).save(images / f"{stem}.png", compress_level=3)
            Image.fromarray(mask * np.uint8(255)).save(masks / f"{stem}_mask.png")
    from handseg.data.pairs import find_pairs

    return list(find_pairs(images, masks))


def train_run(name: str, out: Path, args, augment: tuple[str, ...], **extra) -> Path:
    from handseg.core.config import resolve_config
    from handseg.train.run import train

    run = out / "runs" / name
    if (run / "model.pt").is_file() and not args.retrain:
        print(f"[{name}] reusing {run / 'model.pt'}", flush=True)
        return run
    cfg = resolve_config(
        {
            "images": str(args.data / "images"), "masks": str(args.data / "masks"),
            "preset": "scratch", "image_size": tuple(args.size), "seed": args.seed, "device": "cpu",
            "workers": 0, "out": str(run), "augment": augment, "split": str(args.split_file),
            **({"epochs": args.epochs} if args.epochs else {}), **extra,
        }
    )  # fmt: skip
    # a run killed part-way (e.g. by the OOM killer on a shared machine) continues
    resume = (run / "checkpoints" / "last.ckpt").is_file() and not args.retrain
    print(
        f"[{name}] {'resuming' if resume else 'training'}: augment={cfg.augment} "
        f"epochs={cfg.epochs} {extra}",
        flush=True,
    )
    t0 = time.perf_counter()
    train(cfg, resume=resume, progress=False)
    print(f"[{name}] trained in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return run


def scores(result: dict) -> dict:
    return {
        "hand_IoU": result["classes"]["hand"]["IoU"],
        "GlobalAccuracy": result["dataset"]["GlobalAccuracy"],
        "MeanBFScore": result["dataset"]["MeanBFScore"],
        "images": result["num_images"],
    }


def table(results: dict, sets: list[str]) -> str:
    head = "| method | " + " | ".join(f"{s}: hand IoU / acc / BF" for s in sets) + " |"
    lines = [head, "|---" * (len(sets) + 1) + "|"]
    for method, per_set in results.items():
        cells = [
            f"{per_set[s]['hand_IoU']:.4f} / {per_set[s]['GlobalAccuracy']:.4f} / "
            f"{per_set[s]['MeanBFScore']:.4f}"
            for s in sets
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-output" / "background_shift")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("H", "W"))
    ap.add_argument("--epochs", type=int, help="override the scratch preset's epochs")
    ap.add_argument("--background-prob", type=float, default=0.5)
    ap.add_argument("--synthetic-fraction", type=float, default=0.0)
    ap.add_argument("--camouflage-prob", type=float, default=0.0)
    ap.add_argument(
        "--train-families", nargs="+", default=["plain", "gradient", "texture", "clutter"]
    )
    ap.add_argument("--test-families", nargs="+", default=["indoor", "skin"])
    ap.add_argument("--per-image", type=int, default=5, help="backgrounds per test hand")
    ap.add_argument("--runs", nargs="+", default=["none", "background"])
    ap.add_argument("--tag", default="", help="suffix for the background run's folder")
    ap.add_argument("--retrain", action="store_true", help="train even if a run exists")
    ap.add_argument(
        "--seed", type=int, default=0, help="training seed (the split and test sets stay seed 0)"
    )
    args = ap.parse_args()
    if not (args.data / "images").is_dir():
        raise SystemExit(f"real data not found at {args.data}")
    if set(args.train_families) & set(args.test_families):
        print("note: some test families are also used in training", flush=True)

    from handseg.data.pairs import find_pairs
    from handseg.data.split import make_split, save_split
    from handseg.eval.evaluate import evaluate_model
    from handseg.infer.predictor import load_model

    args.out.mkdir(parents=True, exist_ok=True)
    split = make_split(find_pairs(args.data / "images", args.data / "masks"), (0.6, 0.2, 0.2), 0)
    # every run trains on this split whatever its seed, so no test photo is trained on
    args.split_file = args.out / "split.json"
    save_split(split, args.split_file)
    sets = {"plain": split["test"]}
    for j, family in enumerate(args.test_families):
        sets[f"shifted-{family}"] = make_shifted(
            split["test"], family, args.out / f"shifted-{family}", args.per_image, 1000 + j
        )
    print("test sets:", {k: len(v) for k, v in sets.items()}, flush=True)

    # background compositing (and synthetic hands) from the training families only
    train_families = tuple(args.train_families)
    base_aug = ("seed", "scale-rotate", "color")
    runs = {}
    seed_tag = f"-seed{args.seed}" if args.seed else ""  # seed 0 keeps the old folder names
    if "none" in args.runs:
        runs["scratch, no background aug"] = train_run(f"none{seed_tag}", args.out, args, base_aug)
    if "background" in args.runs:
        name = f"background{args.tag}{seed_tag}"
        extra = {
            "background_families": train_families,
            "background_prob": args.background_prob,
            "synthetic_fraction": args.synthetic_fraction,
            "camouflage_prob": args.camouflage_prob,
        }
        aug = ("seed", "scale-rotate", "background", "color")
        label = f"scratch + background aug p={args.background_prob} ({', '.join(train_families)})"
        if args.camouflage_prob:
            label += f" + camouflage {args.camouflage_prob}"
        if args.synthetic_fraction:
            label += f" + synthetic {args.synthetic_fraction}"
        runs[label] = train_run(name, args.out, args, aug, **extra)

    results: dict[str, dict] = {}
    for label, run in runs.items():
        predictor = load_model(run / "model.pt")
        results[label] = {
            s: scores(evaluate_model(predictor, pairs, progress=False, desc=s))
            for s, pairs in sets.items()
        }
        print(label, json.dumps(results[label]), flush=True)
    results["skin baseline (YCrCb + morphology)"] = {
        s: scores(evaluate_model(SkinPredictor(), pairs, progress=False))
        for s, pairs in sets.items()
    }
    names = list(sets)
    md = table(results, names)
    header = (
        f"arsl-bg11 test split (6 photos) and shifted sets ({args.per_image} backgrounds per "
        f"test hand from the families {', '.join(args.test_families)}; background "
        f"augmentation drew from {', '.join(train_families)}); trained at "
        f"{args.size[0]}x{args.size[1]}, metrics at 960x720:"
    )
    print()
    print(header)
    print(md)
    (args.out / f"results{args.tag}.md").write_text(header + "\n\n" + md + "\n")
    (args.out / f"results{args.tag}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
