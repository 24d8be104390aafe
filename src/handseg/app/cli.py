"""The ``handseg`` command. Thin: parse arguments, call one library function, report.

Each subcommand has an ``_add_<name>(sub)`` function that builds its parser and sets
``func`` to a ``_run_<name>(args)`` handler; ``_COMMANDS`` lists them in help order. The
commands that run a model on new photos (predict, serve, export, fetch-hand-models) live in
:mod:`handseg.app.cli_predict`.
Library errors (:class:`HandsegError`) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from handseg.app.cli_predict import add_export, add_fetch_hand_models, add_predict, add_serve
from handseg.app.commands import run_compare, run_evaluate, run_hand_value
from handseg.app.demo import DEMO_FAMILIES, DEMO_PHOTOS, run_demo
from handseg.app.flags import (
    add_config_options,
    add_device_option,
    add_pixel_limit_option,
    add_runtime_options,
    config_options,
    pixel_limit,
    runtime_kwargs,
)
from handseg.core.annotations import DEFAULT_TOLERANCE
from handseg.core.config import PRESETS
from handseg.core.constants import __version__
from handseg.core.errors import HandsegError
from handseg.core.rundir import RunDir
from handseg.data.convert import TARGETS as CONVERT_TARGETS
from handseg.data.convert import convert_masks
from handseg.data.convert import describe as describe_conversion
from handseg.data.inspect import format_inspect_report, inspect_data
from handseg.eval.baseline import run_skin_baseline
from handseg.eval.clips import stability_line
from handseg.eval.evaluate import headline
from handseg.eval.metrics import format_metrics_tables
from handseg.report.report import write_report
from handseg.synth.hands import make_synthetic
from handseg.train.model_card import write_model_card
from handseg.train.run import is_rank_zero, train_from_options

__all__ = ["build_parser", "main", "run_hand_value"]  # run_hand_value: its old home, kept

log = logging.getLogger("handseg")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate the built-in synthetic hand data set",
        description="Write DIR/images/*.png and DIR/masks/*.png (0/255): synthetic hands "
        "of varied shapes and skin tones on plain to cluttered backgrounds.",
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument(  # -n as in `handseg demo`; --n is an alias
        "-n", "--n", dest="n", type=int, default=100, help="number of images (default 100)"
    )
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(240, 320),
        metavar=("H", "W"),
        help="image size, height then width (default 240 320)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:

    out = make_synthetic(args.out, n=args.n, size=tuple(args.size), seed=args.seed)
    print(f"wrote {args.n} synthetic images to {out / 'images'} and masks to {out / 'masks'}")
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="check a photo/mask folder pair before training",
        description="Pair the photos with their masks and report the pairing rule, image "
        "and mask sizes, a class table like MATLAB's countEachLabel and the median-frequency "
        "class weights training would use; with --out also a class-frequency chart and a "
        "grid of photos with their masks overlaid.",
    )
    p.add_argument("--images", required=True, help="folder of photos")
    p.add_argument("--masks", required=True,
                   help="folder of masks (white = hand), or a COCO JSON, a folder of LabelMe "
                   "JSON files or a CVAT mask zip")  # fmt: skip
    p.add_argument("--out", help="folder for class-frequency.png, samples.png, inspect.json")
    p.add_argument(
        "--hand-value", metavar="V",
        help="mask value that means hand, for masks with several label values "
        "(an integer, palette index, or R,G,B colour)",
    )  # fmt: skip
    p.set_defaults(func=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:

    info = inspect_data(args.images, args.masks, args.out, hand_value=args.hand_value)
    print(format_inspect_report(info))
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="masks to annotation tools and back: COCO, CVAT, LabelMe, PNG",
        description="Write the masks of MASKS (a folder of masks such as handseg predict "
        "writes, a COCO JSON, a folder of LabelMe JSON files or a CVAT mask zip) as: coco "
        "(one JSON, an RLE per connected hand, or per hand where predict --instances wrote "
        "<name>_hand<i>.png), cvat (a 'Segmentation mask 1.1' zip to upload into a CVAT "
        "task), labelme (one JSON of polygons per photo; holes are 'background' polygons), "
        "png (0/255) or palette (indexed PNG). Overlays beside the masks are left out.",
        epilog="Example: handseg predict --model runs/r1/model.pt new_photos --out pred && "
        "handseg convert pred --to cvat --images new_photos --out pred_cvat.zip",
    )
    p.add_argument("masks", metavar="MASKS", help="masks folder or annotation file to read")
    p.add_argument("--to", required=True, choices=CONVERT_TARGETS, help="format to write")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="file for coco (.json) and cvat (.zip), folder for the others")  # fmt: skip
    p.add_argument("--images", metavar="DIR",
                   help="the photos: their real file names and sizes go into the files "
                   "(without it <name>_mask.png stands for <name>.jpg at the mask's size)")  # fmt: skip
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="PX",
                   help="labelme: polygon simplification in pixels, 0 keeps every corner "
                   f"(default {DEFAULT_TOLERANCE:g})")  # fmt: skip
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    result = convert_masks(args.masks, args.to, args.out, images=args.images,
                           tolerance=args.tolerance)  # fmt: skip
    print(describe_conversion(result))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train DeepLab v3+ (ResNet-18) on a photo/mask folder pair",
        description="Train on --images/--masks with the seed workflow's options "
        "(--preset seed: SGD 1e-3, x0.3 every 10 epochs, batch 8, patience 4, "
        "median-frequency class weights), --preset scratch (for random initialisation) or "
        "--preset robust (scratch + background compositing, for photos taken elsewhere than "
        "the training photos; three times the epochs). "
        "Options come from: defaults < preset < --config FILE < flags. The run folder gets "
        "config.yaml, split.json, checkpoints/, metrics.csv, training-progress.png, model.pt "
        "and test/ (test-split metrics).",
        epilog=f"presets: {', '.join(PRESETS)}. Example: handseg train --images photos "
        "--masks masks --out runs/r1 --preset scratch --image-size 384 512",
        argument_default=None,
    )
    add_config_options(p)
    p.add_argument("--config", help="YAML file of options (flags override it)")
    p.add_argument(
        "--resume", metavar="RUN", help="continue an interrupted run from RUN/checkpoints/last.ckpt"
    )
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    options = config_options(args)
    run = train_from_options(options, config_file=args.config, resume=args.resume)
    if is_rank_zero():  # under DDP every process returns here; one reports
        print(f"run folder: {run}  (model: {RunDir(run).model})")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model, or another tool's masks, against ground-truth masks",
        description="Print the data-set and class metrics MATLAB's "
        "evaluateSemanticSegmentation reports (global/mean accuracy, IoU, weighted IoU, BF "
        "score; counts at each mask's own resolution, BF averaged over images); with --out "
        "also write metrics.json, per-image.csv (worst first) and confusion.png.",
        epilog="Examples: handseg evaluate --model runs/r1/model.pt --images photos --masks "
        "masks | handseg evaluate --run runs/r1 --split test | handseg evaluate --pred-masks "
        "other_tool_out --masks masks",
    )
    p.add_argument("--model", help="model file (RUN/model.pt) to run on --images")
    p.add_argument("--pred-masks", metavar="DIR", help="masks predicted by any tool, to score")
    p.add_argument("--images", help="folder of photos (with --model)")
    p.add_argument("--masks", help="ground-truth masks: a folder (white/bright = hand), a "
                   "COCO JSON, a LabelMe folder or a CVAT mask zip")  # fmt: skip
    p.add_argument(
        "--split", choices=["train", "val", "test"],
        help="evaluate this subset of RUN/split.json (folders default to those in the split)",
    )  # fmt: skip
    p.add_argument("--run", help="training run folder (holds split.json and model.pt)")
    p.add_argument("--out", help="folder for metrics.json, per-image.csv, confusion.png")
    p.add_argument("--hand-value", metavar="V", help="ground-truth mask value that means hand")
    p.add_argument("--clip", action="store_true",
                   help="score a clip: --images is a video or a folder of frames (hands "
                   "tracked as handseg predict does; --model optional: the built-in "
                   "detector), or --pred-masks a mask clip (folder or video); --masks the "
                   "ground-truth mask clip. Per-frame rows, the clip's metrics and the "
                   "temporal stability (flicker). Implied when one of them is a video")  # fmt: skip
    add_device_option(p)
    add_runtime_options(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    result, written = run_evaluate(
        model=args.model, pred_masks=args.pred_masks, images=args.images, masks=args.masks,
        split=args.split, run=args.run, hand_value=args.hand_value, out=args.out,
        device=args.device, clip=args.clip, **runtime_kwargs(args),
    )  # fmt: skip
    print(format_metrics_tables(result))
    print(headline(result))
    if "temporal" in result:
        print(stability_line(result))
    if written:
        print(f"wrote {', '.join(p.name for p in written.values())} to {args.out}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="the seed's test figure: prediction overlay and comparison with the ground truth",
        description="Left: the photo with the predicted hand overlaid. Right: hand found "
        "correctly white, background black, mismatches green (--split-errors: false hand "
        "green, missed hand magenta). Hand IoU and BF score, computed at the mask's "
        "resolution, are printed and drawn in the title.",
    )
    p.add_argument("--model", required=True, help="model file (RUN/model.pt)")
    p.add_argument("--image", required=True, help="photo")
    p.add_argument("--mask", required=True, help="its ground-truth mask")
    p.add_argument("--out", required=True, help="figure to write (.png)")
    p.add_argument("--split-errors", action="store_true",
                   help="colour false hand green and missed hand magenta")  # fmt: skip
    p.add_argument("--hand-value", metavar="V", help="ground-truth mask value that means hand")
    add_device_option(p)
    add_runtime_options(p)
    p.set_defaults(func=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    r = run_compare(
        args.model, args.image, args.mask, args.out, split_errors=args.split_errors,
        hand_value=args.hand_value, device=args.device, **runtime_kwargs(args),
    )  # fmt: skip
    print(
        f"{r['image']}: hand IoU {r['hand_iou']:.4f}  BF {r['bf']:.4f}  "
        f"accuracy {r['accuracy']:.4f}"
    )
    print(f"wrote {r['out']}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    preset = PRESETS["demo"]
    n, (h, w), e = DEMO_PHOTOS, preset["image_size"], preset["epochs"]
    p = sub.add_parser(
        "demo",
        help="synthetic data -> trained model -> HTML report, in one command",
        description="Generate the built-in synthetic hand photos, train the scratch preset at "
        "a small size, evaluate the test split and write DIR/report.html (open it in a "
        "browser), DIR/run (the training run), DIR/overlays and DIR/data. The defaults took "
        "9 minutes on 2 shared CPU cores.",
    )
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument(  # -n as in `handseg synth`; --n is an alias
        "-n", "--n", dest="n", type=int, default=n, help=f"synthetic photos (default {n})"
    )
    p.add_argument(
        "--size", type=int, nargs=2, default=(h, w), metavar=("H", "W"),
        help=f"photo and training size, height width (default {h} {w})",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, default=e, help=f"training epochs (default {e})")
    fam = " ".join(DEMO_FAMILIES)
    p.add_argument(
        "--families",
        nargs="+",
        metavar="NAME",
        default=list(DEMO_FAMILIES),
        help="background families of the synthetic photos: plain gradient texture clutter "
        f"indoor skin, or all (default {fam}: the hardest ones, skin-coloured distractors and "
        "indoor scenes, need far more training than a demo's budget)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_device_option(p)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    run_demo(
        args.out, n=args.n, size=tuple(args.size), epochs=args.epochs, seed=args.seed,
        device=args.device, families=None if "all" in args.families else tuple(args.families),
    )  # fmt: skip
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report of a training run",
        description="Write RUN/report.html: what was trained, the headline test metrics, the "
        "training-progress plot, the data-set and class metric tables, the normalised "
        "confusion matrix and the comparison figure of every test image (worst first), each "
        "explained in plain words. Pictures go beside it in report-files/.",
        epilog="Example: handseg report runs/r1 && open runs/r1/report.html",
    )
    p.add_argument("run", metavar="RUN", help="training run folder (handseg train --out)")
    p.add_argument("--out", metavar="FILE", help="HTML file to write (default RUN/report.html)")
    p.add_argument("--embed", action="store_true",
                   help="put the pictures inside the HTML file (one file to share)")  # fmt: skip
    add_device_option(p)
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:

    path = write_report(args.run, args.out, embed=args.embed, device=args.device, progress=True)
    print(path)
    return 0


def _add_card(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "card",
        help="write RUN/MODEL_CARD.md: what was trained, on what, how well, how to load it",
        description="Write the model card of a training run (training writes it too): model "
        "and preset, data (folders, counts, split, class shares), training (options, time, "
        "hardware, epochs), test metrics, intended use and known limits, and how to load "
        "the model. Evaluations of other data sets kept in RUN/eval-<name>/ (handseg "
        "evaluate ... --out RUN/eval-<name>) are listed as checks on photos unlike the "
        "training photos.",
        epilog="Example: handseg evaluate --model runs/r1/model.pt --images wild/images "
        "--masks wild/masks --out runs/r1/eval-wild && handseg card runs/r1",
    )
    p.add_argument("run", metavar="RUN", help="training run folder (handseg train --out)")
    p.add_argument("--print", dest="show", action="store_true",
                   help="also print the card")  # fmt: skip
    p.set_defaults(func=_run_card)


def _run_card(args: argparse.Namespace) -> int:
    path = write_model_card(args.run)
    if args.show:
        print(path.read_text(encoding="utf-8"))
    print(path)
    return 0


def _add_baseline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="a classical baseline to measure against: skin colour (YCrCb) + morphology",
        description="Segment every photo of --images with skin-colour thresholds (Cr, Cb in "
        "OpenCV's YCrCb), opening, closing, hole filling and the largest component(s), and "
        "write OUT/<stem>_mask.png (0/255) for 'handseg evaluate --pred-masks OUT --masks GT'.",
        epilog="Example: handseg baseline skin --images photos --out skin_masks && handseg "
        "evaluate --pred-masks skin_masks --masks masks",
    )
    p.add_argument("method", choices=["skin"], help="baseline to run (skin)")
    p.add_argument("--images", required=True, help="folder of photos")
    p.add_argument("--out", required=True, help="folder for the masks (created)")
    p.add_argument("--cr", type=float, nargs=2, default=(133, 173), metavar=("LO", "HI"),
                   help="Cr range of skin (default 133 173)")  # fmt: skip
    p.add_argument("--cb", type=float, nargs=2, default=(77, 127), metavar=("LO", "HI"),
                   help="Cb range of skin (default 77 127)")  # fmt: skip
    p.add_argument("--open-radius", type=int, metavar="PX",
                   help="opening disk radius (default 0.3%% of the image diagonal; 0 = off)")  # fmt: skip
    p.add_argument("--close-radius", type=int, metavar="PX",
                   help="closing disk radius (default 1%% of the image diagonal; 0 = off)")  # fmt: skip
    p.add_argument("--no-fill-holes", dest="fill_holes", action="store_false",
                   help="do not fill holes enclosed by skin")  # fmt: skip
    p.add_argument("--min-area", type=float, default=0.002, metavar="FRAC",
                   help="smallest component kept, as a fraction of the image (default 0.002)")  # fmt: skip
    p.add_argument("--keep", type=int, default=1, metavar="N",
                   help="keep the N largest components (0 = all; default 1)")  # fmt: skip
    p.set_defaults(func=_run_baseline)


def _run_baseline(args: argparse.Namespace) -> int:
    written = run_skin_baseline(
        args.images, args.out, cr=tuple(args.cr), cb=tuple(args.cb),
        open_radius=args.open_radius, close_radius=args.close_radius,
        fill_holes=args.fill_holes, min_area=args.min_area, keep=args.keep,
    )  # fmt: skip
    print(f"wrote {len(written)} skin-baseline masks to {args.out}")
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_synth,
    _add_inspect,
    _add_convert,
    _add_train,
    _add_evaluate,
    add_predict,
    _add_compare,
    _add_report,
    _add_card,
    _add_demo,
    _add_baseline,
    add_export,
    add_fetch_hand_models,
    add_serve,
]


_READERS = ("inspect", "convert", "train", "evaluate", "predict", "compare", "report",
            "baseline", "export")  # fmt: skip
"""The commands that read photos, masks or annotation files: they get ``--max-megapixels``
(serve has its own, the upload limit, which sets the same budget)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handseg",
        description="Segment hands in photos of Arabic Sign Language: train DeepLab v3+ "
        "(ResNet-18) on your photo/mask folders, evaluate it with the metrics the field "
        "reports, and run it on new photos and video.",
        epilog="Run 'handseg COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"handseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    for name in _READERS:
        add_pixel_limit_option(sub.choices[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        with pixel_limit(args):
            return int(args.func(args) or 0)
    except HandsegError as exc:
        # one line, even where a file or member name holds a line break
        print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
