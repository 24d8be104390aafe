"""Demo variants: run ``handseg demo`` with changed options and score each model on one fixed
synthetic evaluation set, so that variants (and seeds) are compared on the same images.

The demo's own test split is 40 images drawn with the demo's seed: its hand IoU moves by
0.1 between seeds, more than most option changes. The fixed set (``--eval-n`` images of
the demo's size and families, seed 7, never used for training) gives a steadier number.

    OMP_NUM_THREADS=2 python benchmarks/demo_variants.py --name s16 output_stride=16
    OMP_NUM_THREADS=2 python benchmarks/demo_variants.py --name s16-seed1 output_stride=16 seed=1

``key=value`` pairs: ``n``, ``size``, ``epochs``, ``families``, ``seed`` go to
:func:`handseg.app.demo.run_demo`; any other key overrides a training option of the demo
(the ``demo`` preset of ``handseg.core.config.PRESETS``). Values are Python literals
(``size=(128,160)``).
Prints one ``RESULT`` line: the printed test-split hand IoU, the fixed-set hand IoU and
MeanBFScore, and the wall time of the demo.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_KEYS = ("n", "size", "epochs", "families", "seed")


def parse_pairs(pairs: list[str]) -> tuple[dict, dict]:
    """Split ``key=value`` pairs into run_demo keywords and training overrides."""
    demo_kw, train_kw = {}, {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a plain string such as ce+dice
        (demo_kw if key in DEMO_KEYS else train_kw)[key] = value
    return demo_kw, train_kw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="variant name (output folder OUT/NAME)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-output" / "demo_variants")
    ap.add_argument("--eval-n", type=int, default=200, help="images in the fixed set")
    ap.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()

    import handseg.app.demo as demo
    from handseg.core.config import PRESETS
    from handseg.data.pairs import find_pairs
    from handseg.eval.evaluate import evaluate_model
    from handseg.infer.predictor import load_model
    from handseg.synth.hands import make_synthetic

    demo_kw, train_kw = parse_pairs(args.pairs)
    t0 = time.perf_counter()
    result = demo.run_demo(args.out / args.name, progress=False, train_options=train_kw, **demo_kw)
    wall = time.perf_counter() - t0

    size = tuple(demo_kw.get("size", PRESETS["demo"]["image_size"]))
    families = demo_kw.get("families", demo.DEMO_FAMILIES)
    fixed = args.out / f"fixed-{args.eval_n}-{size[0]}x{size[1]}-{'-'.join(families or ['all'])}"
    if not (fixed / "masks").is_dir():
        make_synthetic(fixed, n=args.eval_n, size=size, seed=7, progress=False, families=families)
    predictor = load_model(result["run"] / "model.pt", device="cpu")
    scores = evaluate_model(
        predictor, find_pairs(fixed / "images", fixed / "masks"), progress=False
    )
    print(
        f"RESULT {args.name} {demo_kw} {train_kw}: test-split hand IoU {result['hand_iou']:.4f}, "
        f"fixed set ({scores['num_images']} images) hand IoU "
        f"{scores['classes']['hand']['IoU']:.4f} BF {scores['dataset']['MeanBFScore']:.4f}, "
        f"demo {wall:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
