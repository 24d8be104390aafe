"""The commands that run a model on new photos: ``predict`` (files, folders, videos, a
camera, whole collections), ``serve`` (web page and HTTP API), ``export`` (ONNX) and
``fetch-hand-models``. Same pattern as :mod:`handseg.app.cli`, which lists them: an
``add_<name>(sub)`` parser builder whose ``_run_<name>(args)`` calls one library function.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from handseg.app.commands import run_predict
from handseg.app.flags import add_device_option, add_runtime_options, runtime_kwargs
from handseg.app.serve import ServeLimits, serve
from handseg.core.constants import DETECTOR_MODES, DETECTORS, REFINERS
from handseg.infer.export import export_onnx
from handseg.infer.hand_models import fetch_hand_models

__all__ = ["add_export", "add_fetch_hand_models", "add_predict", "add_serve"]


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment hands in photos, folders, glob patterns and videos",
        description="Write OUT/<name>_mask.png (0/255) and OUT/<name>_overlay.jpg for every "
        "image, at the image's own resolution, and per-frame outputs for every video "
        "(.mp4 .avi .mov .mkv .webm; see 'clips' below). Unreadable inputs are skipped with "
        "a warning.",
        epilog="Example: handseg predict --model runs/r1/model.pt photos/ 'more/*.jpg' "
        "clip.mp4 --out predictions",
    )
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="image or video files, folders, glob patterns (quote a pattern to let handseg "
        "expand it, e.g. 'data/**/*.png')",
    )  # fmt: skip
    p.add_argument(
        "--model",
        help="model file (RUN/model.pt); it brings its own pipeline (whole-image network, or "
        "hand detector + refiner for models trained with --preset hands). Optional with "
        "--detector mediapipe (no training needed)",
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--batch-size", type=int, default=4, help="images per network call (default 4)")
    hands = p.add_argument_group(
        "hand detector",
        "Find hands first (MediaPipe's hand models; pip install 'handseg[hands]' and "
        "handseg fetch-hand-models), then segment only them: for photos unlike the training "
        "photos. Default: what the model recorded (--detector none for older models).",
    )
    hands.add_argument("--detector", choices=DETECTORS, help="none | mediapipe")
    hands.add_argument("--refine", choices=REFINERS,
                       help="how found hands become masks (default: the model's, else grabcut)")  # fmt: skip
    hands.add_argument("--detector-mode", choices=DETECTOR_MODES,
                       help="accurate (photos, default) | fast | thorough (accurate + a window "
                       "search for a missed second hand; ~5x slower, for offline "
                       "collections); video always runs fast")  # fmt: skip
    hands.add_argument("--instances", action="store_true",
                       help="also write OUT/<name>_hand<i>.png per hand and OUT/<name>_hands.json "
                       "(box, left/right, score, landmarks); needs the detector")  # fmt: skip
    add_device_option(p)
    add_runtime_options(p)
    p.add_argument("--no-overlay", dest="overlay", action="store_false",
                   help="write only the masks, no overlay images")  # fmt: skip
    _add_clip_options(p)
    live = p.add_argument_group("live video")
    live.add_argument("--camera", type=int, metavar="N",
                      help="segment camera N (0 = the default webcam) live, hands tracked as "
                      "in a video; writes OUT/camera<N>_* (a clip's outputs) and prints the "
                      "achieved frame rate")  # fmt: skip
    live.add_argument(
        "--show",
        action="store_true",
        help="also show the overlaid frames in a window (q or Esc stops)",
    )
    live.add_argument("--max-frames", type=int, help="stop after this many frames")
    _add_collection_options(p)
    p.set_defaults(func=_run_predict)


def _add_clip_options(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group(
        "clips (videos, folders of frames)",
        "A video gets per-frame outputs with both hands tracked (left stays left through "
        "crossings and gaps; landmarks smoothed over time): OUT/<name>_masks/ "
        "(000000.png ...: frame i is input frame i, an unreadable frame gets an empty mask), "
        "OUT/<name>.pose (pose-format: LEFT_HAND_LANDMARKS / RIGHT_HAND_LANDMARKS, 21 points, "
        "confidence 0 where a hand is not seen), OUT/<name>_hands.jsonl (one line per frame: "
        "time, ok, per hand side, track, box, handedness, scores, landmarks), "
        "OUT/<name>_overlay.mp4 and OUT/<name>_clip.json (frames read, bad frames, speed); "
        "with --instances also OUT/<name>_masks_left/ and _masks_right/.",
    )
    c.add_argument("--clip", action="store_true",
                   help="take each folder input as one clip of frames (natural order), not as "
                   "photos")  # fmt: skip
    c.add_argument("--mask-video", action="store_true",
                   help="write a clip's masks as one lossless video (<name>_masks.mkv, FFV1, "
                   "0/255) instead of PNG frames")  # fmt: skip
    c.add_argument("--fps", type=float, metavar="F",
                   help="frame rate of a folder of frames (default 30), or to override a "
                   "video's")  # fmt: skip
    c.add_argument("--no-smooth", dest="smooth", action="store_false",
                   help="write each frame's own landmarks, not smoothed over time "
                   "(identities are still tracked)")  # fmt: skip
    c.add_argument("--smooth-masks", action="store_true",
                   help="blend each hand's mask with its previous one, carried along its "
                   "motion (off: on the benchmark clips it cost hand IoU)")  # fmt: skip


def _add_collection_options(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group(
        "collections",
        "Predict a whole collection: inputs listed lazily (folders recursively; outputs "
        "mirror their sub-folders), images decoded by worker processes, shared between "
        "processes and machines, outputs written atomically, and OUT/manifest.csv with one "
        "row per input (input, status ok|existing|error, mask, overlay, instances, height, "
        "width, hand_share, hands, runtime, ms, error). Bad inputs get an error row; the "
        "exit code is 0 unless none could be read (2). Any option here selects this mode. "
        "Under torchrun or srun give --devices (processes per machine) and --num-nodes as "
        "launched.",
    )
    c.add_argument("--collection", action="store_true",
                   help="collection mode in one process with the default settings")  # fmt: skip
    c.add_argument("--devices", type=int, default=1, metavar="N",
                   help="processes per machine, one per GPU (CPU: the cores are shared "
                   "out); default 1")  # fmt: skip
    c.add_argument("--num-nodes", type=int, default=1, metavar="M",
                   help="machines (default 1)")  # fmt: skip
    c.add_argument("--skip-existing", action="store_true",
                   help="resume: skip inputs whose outputs all exist (an interrupted run "
                   "restarted with this ends as if never interrupted)")  # fmt: skip
    c.add_argument("--list", dest="lists", action="append", metavar="FILE",
                   help="text file with one image path per line (repeatable)")  # fmt: skip
    c.add_argument("--workers", type=int, metavar="N",
                   help="image-decoding worker processes per process (default: the CPU "
                   "cores per process, at most 4; 0 decodes in the process itself)")  # fmt: skip


def _run_predict(args: argparse.Namespace) -> int:
    r = run_predict(
        args.model, args.inputs, args.out, batch_size=args.batch_size, overlay=args.overlay,
        camera=args.camera, show=args.show, max_frames=args.max_frames, device=args.device,
        detector=args.detector, refine=args.refine, detector_mode=args.detector_mode,
        instances=args.instances, collection=args.collection, devices=args.devices,
        num_nodes=args.num_nodes, skip_existing=args.skip_existing, lists=args.lists,
        workers=args.workers, clip=args.clip, mask_video=args.mask_video, fps=args.fps,
        smooth=args.smooth, smooth_masks=args.smooth_masks, **runtime_kwargs(args),
    )  # fmt: skip
    if "collection" in r:
        return _print_collection(r["collection"])
    if r["camera"] is not None:
        c = r["camera"]
        print(f"camera {args.camera}: {c['frames']} frames at {c['frames_per_second'] or 0:.1f} "
              f"frames/s -> {c['output']}")  # fmt: skip
        if not args.inputs:
            return 0
    ok = [rec for rec in r["records"] if rec["ok"]]
    for rec in ok:
        if "frames" in rec:
            print(f"{rec['input']}: {rec['frames']} frames at {rec['fps']:.1f} frames/s -> "
                  f"{rec['output']}")  # fmt: skip
    n_images = sum(1 for rec in ok if "mask" in rec)
    skipped = len(r["records"]) - len(ok)
    if not n_images and len(ok) and not skipped:
        return 0  # clips only: each has its line above
    what = "mask(s) and overlay(s)" if args.overlay else "mask(s)"
    print(
        f"wrote {n_images} {what} to {args.out}"
        + (f"; skipped {skipped} unreadable input(s)" if skipped else "")
    )
    _print_no_hand(ok, r.get("detector_mode"))
    return 0


def _print_no_hand(ok: list[dict], detector_mode: str | None) -> None:
    """Name the photos whose mask is empty; with the detector short of ``thorough``, say
    that it searches harder (hands-wild: 0.820 against 0.803, about 5x the time)."""
    empty = [rec["input"] for rec in ok if "mask" in rec and rec["hand_fraction"] == 0]
    if not empty:
        return
    names = ", ".join(Path(p).name for p in empty[:3]) + (", ..." if len(empty) > 3 else "")
    hint = ""
    if detector_mode in ("fast", "accurate"):
        hint = "; --detector-mode thorough searches harder for hands (about 5x slower)"
    print(f"no hand found in {len(empty)} photo(s) ({names}){hint}")


def _print_collection(c: dict) -> int:
    if c["counts"] is not None:  # rank 0 only
        n = c["counts"]
        print(f"{n.get('ok', 0)} predicted, {n.get('existing', 0)} already done, "
              f"{n.get('error', 0)} unreadable; manifest: {c['manifest']}")  # fmt: skip
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained model to ONNX (dynamic batch, height and width)",
        description="Write a self-describing ONNX file: input 'image' (B, 3, H, W) normalised "
        "float32, output 'logits' (B, C, H, W); classes, normalisation and input size are in "
        "its metadata, so handseg predict/evaluate --model model.onnx work on it. The export "
        "is checked against the PyTorch model on random inputs of several sizes (mask "
        "agreement >= 99.9 %%) before it is written.",
        epilog="Example: handseg export --model runs/r1/model.pt --out model.onnx",
    )
    p.add_argument("--model", required=True, help="model file (RUN/model.pt)")
    p.add_argument("--out", required=True, help="ONNX file to write (.onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--checks", type=int, default=3, metavar="N",
                   help="random inputs for the parity check (default 3)")  # fmt: skip
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the parity check against PyTorch")  # fmt: skip
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    r = export_onnx(args.model, args.out, opset=args.opset, check=args.check,
                    n_checks=args.checks)  # fmt: skip
    if r["checks"]:
        print(
            f"parity with PyTorch on {len(r['checks'])} inputs: max |logit difference| "
            f"{r['max_abs_diff']:.3g}, mask agreement >= {100 * r['min_mask_agreement']:.3f} %"
        )
    print(f"wrote {r['path']} ({r['size_mb']} MB, opset {r['opset']})")
    return 0


def add_fetch_hand_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch-hand-models",
        help="get MediaPipe's hand models for --detector mediapipe (once, from PyPI)",
        description="Download the mediapipe 0.10.14 wheel from the package registry (pip "
        "download --no-deps, about 35 MB), check the SHA-256 of its two hand models "
        "(palm_detection_full, hand_landmark_full; Apache-2.0) and copy them to the cache "
        "folder ($HANDSEG_HAND_MODELS, default ~/.cache/handseg/hand-models). make setup "
        "runs it.",
    )
    p.add_argument("--wheel", help="use this downloaded mediapipe wheel instead of pip")
    p.set_defaults(func=_run_fetch_hand_models)


def _run_fetch_hand_models(args: argparse.Namespace) -> int:
    for path in fetch_hand_models(wheel=args.wheel):
        print(path)
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    d = ServeLimits()
    p = sub.add_parser(
        "serve",
        help="a local web page and HTTP API: drop photos, get masks (and scores) back",
        description="Serve a page (http://HOST:PORT/) where photos dropped or chosen are "
        "segmented with their overlay and mask side by side, scored against dropped "
        "ground-truth masks (hand IoU, BF), downloaded as a zip, or sent live from the "
        "webcam; and the HTTP API behind it: POST /api/segment, POST /api/evaluate, "
        "GET /api/model, GET /healthz (documented at /docs). The model runs as in "
        "handseg predict (same pipeline and runtime choice, the same masks); without "
        "--model, the built-in hand detector + GrabCut refiner, as handseg predict without "
        "--model. Needs the serve extra: pip install 'handseg[serve]'.",
        epilog="Example: handseg serve --model runs/r1/model.pt, then open "
        "http://127.0.0.1:8000/ or: curl -F image=@photo.jpg "
        "http://127.0.0.1:8000/api/segment -o photo_mask.png",
    )
    p.add_argument(
        "--model",
        help="model file (RUN/model.pt, or model.onnx); without it the built-in hand detector "
        "+ GrabCut refiner (the hands extra and handseg fetch-hand-models; no training)",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; another "
                   "address warns that the page has no authentication)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, metavar="MB",
                     help=f"largest request body (default {d.max_upload_mb:g} MB)")  # fmt: skip
    lim.add_argument("--max-megapixels", type=float, default=d.max_megapixels, metavar="MP",
                     help=f"largest image, checked before decoding (default "
                     f"{d.max_megapixels:g})")  # fmt: skip
    lim.add_argument("--workers", type=int, default=d.workers, metavar="N",
                     help=f"requests decoded and segmented at once (default {d.workers})")  # fmt: skip
    lim.add_argument("--queue", type=int, default=d.queue, metavar="N",
                     help=f"requests that may wait; more get 503 busy (default {d.queue})")  # fmt: skip
    add_device_option(p)
    add_runtime_options(p)
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    limits = ServeLimits(
        max_upload_mb=args.max_upload_mb, max_megapixels=args.max_megapixels,
        workers=args.workers, queue=args.queue,
    )  # fmt: skip
    serve(args.model, host=args.host, port=args.port, limits=limits, device=args.device,
          **runtime_kwargs(args))  # fmt: skip
    return 0
