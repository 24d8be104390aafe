"""The ``handseg`` command. Thin: parse arguments, call one library function, report.

Each subcommand has an ``_add_<name>(sub)`` function that builds its parser and sets
``func`` to a ``_run_<name>(args)`` handler; ``_COMMANDS`` lists them in help order.
Library errors (:class:`HandsegError`) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from handseg import __version__
from handseg.errors import HandsegError

__all__ = ["main", "build_parser"]

log = logging.getLogger("handseg")


# --- subcommands -------------------------------------------------------------------------


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate the built-in synthetic hand data set",
        description="Write DIR/images/*.png and DIR/masks/*.png (0/255): synthetic hands "
        "of varied shapes and skin tones on plain to cluttered backgrounds.",
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("-n", type=int, default=100, help="number of images (default 100)")
    p.add_argument(
        "--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"),
        help="image size, height then width (default 240 320)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from handseg.synthetic import make_synthetic

    out = make_synthetic(args.out, n=args.n, size=tuple(args.size), seed=args.seed)
    print(f"wrote {args.n} synthetic images to {out / 'images'} and masks to {out / 'masks'}")
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_synth,
]


# --- entry point -------------------------------------------------------------------------


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
        return int(args.func(args) or 0)
    except HandsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
