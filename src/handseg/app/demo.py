"""``handseg demo``: from nothing to a trained model and a report, in one command.

Generates the built-in synthetic hand data, trains the ``scratch`` preset at a small size,
evaluates the test split, draws overlays of the test photos and writes an HTML report::

    OUT/
      report.html        open this in a browser
      report-files/      its pictures
      run/               the training run (model.pt, metrics.csv, test/, ...)
      overlays/          <name>_overlay.jpg and <name>_mask.png for every test photo
      data/              the synthetic photos (images/) and masks (masks/)

The defaults are sized to finish in about five and a half minutes on two CPU cores; the
measured test-split hand IoU is 0.86 with the default seed (0.76 with seed 1; BENCHMARKS.md,
"make demo").
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from handseg.core.config import resolve_config
from handseg.core.errors import HandsegError
from handseg.data.split import load_split, training_images
from handseg.eval.evaluate import headline, read_metrics
from handseg.infer.media import predict_paths
from handseg.infer.predictor import load_model
from handseg.report.report import write_report
from handseg.synth.hands import make_synthetic
from handseg.train.run import train

DEMO_DEFAULTS: dict[str, Any] = {
    "n": 200,
    "size": (128, 160),
    "epochs": 50,
    "families": ("plain", "gradient", "texture"),
}
"""Synthetic images, their (H, W) size (also the training size), training epochs and the
background families of the photos. The harder families (``clutter``, ``indoor`` and the
skin-coloured distractors of ``skin``) need far more training than a demo's few minutes:
with them the test hand IoU stayed at 0.65-0.74 in every measured variant; without them
it is 0.76-0.86 depending on the seed (BENCHMARKS.md)."""
DEMO_TRAIN_OVERRIDES: dict[str, Any] = {
    "output_stride": 16,
    "batch_size": 4,
    "augment": ("seed",),
    "class_weighting": "none",
    "cache": True,
}
"""Changes to the ``scratch`` preset for the demo's few minutes of CPU time: output stride 16
(the preset's 32 leaves a 4 x 5 feature map at 128 x 160; 16 gave hand IoU 0.816 against
0.759 on a fixed evaluation set, 0.784 against 0.783 with another seed), twice the
optimiser steps per epoch (batch 4), flip/translate only (the preset's scale-rotate and
colour augmentation slow fitting more than they help at 1500 steps), plain cross-entropy
(class weights lowered the hand IoU at this budget) and decoded photos kept in memory."""
_MARKER = ".handseg-demo"
_PARTS = ("data", "run", "overlays", "report-files", "report.html")


def _prepare(out: Path) -> None:
    """Make ``out`` ready: new, empty, or an earlier demo's output (whose parts are cleared so
    that no stale image from a larger earlier demo slips into the new data set)."""
    if out.exists() and not out.is_dir():
        raise HandsegError(f"--out {out} is a file; pass a folder for the demo's output")
    if out.is_dir() and any(out.iterdir()) and not (out / _MARKER).is_file():
        raise HandsegError(
            f"--out {out} already holds files that the demo did not write; pass a new or "
            "empty folder (the demo replaces its own earlier output only)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / _MARKER).write_text("written by handseg demo; safe to delete\n")
    except OSError as exc:
        raise HandsegError(f"cannot write to {out}: {exc.strerror or exc}") from None
    for name in _PARTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def run_demo(
    out: str | Path = "demo-output",
    *,
    n: int = DEMO_DEFAULTS["n"],
    size: tuple[int, int] = DEMO_DEFAULTS["size"],
    epochs: int = DEMO_DEFAULTS["epochs"],
    families: tuple[str, ...] | None = DEMO_DEFAULTS["families"],
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Synthetic data -> ``scratch`` training -> test metrics -> overlays -> HTML report.

    Prints a line per step (and progress bars when ``progress``), then the headline test
    metrics and the report's path.

    Args:
        out: output folder (new, empty, or an earlier demo's, which is replaced).
        n: number of synthetic photos (split 60/20/20 into train/val/test).
        size: (H, W) of the photos and of training; multiples of 16 avoid padding.
        epochs: training epochs.
        families: background families of the synthetic photos (None = all, a quarter of
            them skin-coloured distractors).
        seed: seed of the synthetic data and of the training run.
        device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``mps``.
        progress: show progress bars.

    Returns:
        ``{"out", "data", "run", "report", "overlays": Path, "headline": str,
        "hand_iou": float, "metrics": test metrics.json dict, "time_s": float}``.
    """

    if n < 5:
        raise HandsegError(
            f"--n must be at least 5 so that train, validation and test get images, got {n}"
        )
    if epochs < 1:
        raise HandsegError(f"--epochs must be at least 1, got {epochs}")
    size = (int(size[0]), int(size[1]))
    out = Path(out)
    t0 = time.perf_counter()
    _prepare(out)

    def step(i: int, text: str) -> None:
        print(f"[{i}/5 {time.perf_counter() - t0:5.0f} s] {text}", flush=True)

    data = out / "data"
    step(1, f"generating {n} synthetic hand photos of {size[0]}x{size[1]} pixels in {data}")
    make_synthetic(data, n=n, size=size, seed=seed, progress=progress, families=families)

    run = out / "run"
    step(2, f"training DeepLab v3+ from scratch ({epochs} epochs) into {run}")
    cfg = resolve_config(
        {
            "images": str(data / "images"),
            "masks": str(data / "masks"),
            "out": str(run),
            "preset": "scratch",
            "epochs": epochs,
            "image_size": size,
            "seed": seed,
            "device": device,
        }
        | DEMO_TRAIN_OVERRIDES
    )
    train(cfg, progress=progress)
    metrics_file = run / "test" / "metrics.json"
    if not metrics_file.is_file():  # the split always has a test subset for n >= 5
        raise HandsegError(f"training finished without a test evaluation ({metrics_file} missing)")
    metrics = read_metrics(metrics_file)

    overlays = out / "overlays"
    step(3, f"drawing the predicted hand on the test photos into {overlays}")
    test_images = [image for image, _ in load_split(run / "split.json")["test"]]
    predictor = load_model(run / "model.pt", device=device, calibration=training_images)
    predict_paths(predictor, test_images, overlays, progress=progress)

    step(4, "writing the report")
    report = write_report(run, out / "report.html", device=device, progress=progress)

    elapsed = time.perf_counter() - t0
    line = headline(metrics)
    hand = metrics["classes"].get("hand") or list(metrics["classes"].values())[-1]
    step(5, f"done in {elapsed / 60:.1f} min")
    print(f"test split ({metrics.get('num_images', len(test_images))} images): {line}")
    print(f"report: {report.resolve()}")
    print(f"open it in a browser: {report.resolve().as_uri()}")
    return {
        "out": out,
        "data": data,
        "run": run,
        "report": report,
        "overlays": overlays,
        "headline": line,
        "hand_iou": hand.get("IoU"),
        "metrics": metrics,
        "time_s": round(elapsed, 1),
    }
