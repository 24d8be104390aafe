"""``handseg demo``: from nothing to a trained model and a report, in one command.

Generates the built-in synthetic hand data, trains the ``demo`` preset (``scratch`` changed
for minutes of CPU time at a small size), evaluates the test split, draws overlays of the
test photos and writes an HTML report::

    OUT/
      report.html        open this in a browser
      report-files/      its pictures
      run/               the training run (model.pt, metrics.csv, test/, ...)
      overlays/          <name>_overlay.jpg and <name>_mask.png for every test photo
      data/              the synthetic photos (images/) and masks (masks/)

Measured with the defaults on 2 shared CPU cores: 8.8 min, printing ``test split (40
images): hand IoU 0.8206  GlobalAccuracy 0.9763  MeanIoU 0.8970  MeanBFScore 0.8056``
(``--epochs 50``: 19.0 min, hand IoU 0.8648). The
synthetic data is hard on purpose; the demo shows the whole workflow, it does not aim at a
hand IoU (the test split's hand IoU moves by about 0.1 between seeds: BENCHMARKS.md, "make
demo").
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from handseg.core.config import TrainConfig, resolve_config
from handseg.core.errors import HandsegError
from handseg.core.rundir import RunDir
from handseg.data.split import load_split, training_images
from handseg.eval.evaluate import headline, read_metrics
from handseg.infer.media import predict_paths
from handseg.infer.predictor import load_model
from handseg.report.report import write_report
from handseg.synth.hands import make_synthetic
from handseg.train.run import train

__all__ = ["DEMO_FAMILIES", "DEMO_PHOTOS", "run_demo"]

DEMO_PHOTOS = 200
"""Synthetic photos the demo generates (split 60/20/20 into train/val/test)."""
DEMO_FAMILIES: tuple[str, ...] = ("plain", "gradient", "texture")
"""Background families of the demo's photos. The harder families (``clutter``, ``indoor``
and the skin-coloured distractors of ``skin``) need far more training than a demo's budget:
with them the test hand IoU stayed at 0.65-0.74 in every measured variant; without them it
is 0.76 (seed 1, BENCHMARKS.md) to 0.86 (the default seed). The training options, photo
size and epochs included, are the ``demo`` preset (:data:`handseg.core.config.PRESETS`)."""
_MARKER = ".handseg-demo"
_PARTS = ("data", "run", "overlays", "report-files", "report.html")
_STEPS = 5


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


def demo_config(
    out: Path,
    *,
    size: tuple[int, int] | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "auto",
    **options: Any,
) -> TrainConfig:
    """The ``demo`` preset training on ``out/data`` into ``out/run``; ``size`` and
    ``epochs`` (None: the preset's) and ``options`` (any training option) override it."""
    data = out / "data"
    return resolve_config(
        {
            "images": str(data / "images"),
            "masks": str(data / "masks"),
            "out": str(out / "run"),
            "preset": "demo",
            "image_size": size,
            "epochs": epochs,
            "seed": seed,
            "device": device,
        }
        | options
    )


class _Clock:
    """Prints ``[i/5  t s] text`` lines, t counted from construction."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def step(self, i: int, text: str) -> None:
        print(f"[{i}/{_STEPS} {self.elapsed():5.0f} s] {text}", flush=True)


def _test_metrics(run: RunDir) -> dict[str, Any]:
    """The finished run's test-split metrics."""
    if not run.test_metrics.is_file():  # the split always has a test subset for n >= 5
        raise HandsegError(
            f"training finished without a test evaluation ({run.test_metrics} missing)"
        )
    return read_metrics(run.test_metrics)


def _draw_overlays(run: RunDir, overlays: Path, device: str, progress: bool) -> list[Path]:
    """The run's model on its test photos -> ``overlays``; returns the test photos."""
    test_images = [image for image, _ in load_split(run.split)["test"]]
    predictor = load_model(run.model, device=device, calibration=training_images)
    predict_paths(predictor, test_images, overlays, progress=progress)
    return test_images


def run_demo(
    out: str | Path = "demo-output",
    *,
    n: int = DEMO_PHOTOS,
    size: tuple[int, int] | None = None,
    epochs: int | None = None,
    families: tuple[str, ...] | None = DEMO_FAMILIES,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    train_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Synthetic data -> ``demo`` preset training -> test metrics -> overlays -> HTML report.

    Prints a line per step (and progress bars when ``progress``), then the headline test
    metrics and the report's path.

    Args:
        out: output folder (new, empty, or an earlier demo's, which is replaced).
        n: number of synthetic photos (split 60/20/20 into train/val/test).
        size: (H, W) of the photos and of training (None: the preset's, 128 x 160);
            multiples of 16 avoid padding.
        epochs: training epochs (None: the preset's, 25).
        families: background families of the synthetic photos (None = all, a quarter of
            them skin-coloured distractors).
        seed: seed of the synthetic data and of the training run.
        device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``mps``.
        progress: show progress bars.
        train_options: other training options on top of the preset (benchmarks vary them).

    Returns:
        ``{"out", "data", "run", "report", "overlays": Path, "headline": str,
        "hand_iou": float, "metrics": test metrics.json dict, "time_s": float}``.
    """
    if n < 5:
        raise HandsegError(
            f"-n must be at least 5 so that train, validation and test get images, got {n}"
        )
    if epochs is not None and epochs < 1:
        raise HandsegError(f"--epochs must be at least 1, got {epochs}")
    out = Path(out)
    cfg = demo_config(out, size=size, epochs=epochs, seed=seed, device=device,
                      **(train_options or {}))  # fmt: skip
    clock = _Clock()
    _prepare(out)
    data, run, overlays = out / "data", RunDir(cfg.out), out / "overlays"
    h, w = cfg.image_size
    clock.step(1, f"generating {n} synthetic hand photos of {h}x{w} pixels in {data}")
    make_synthetic(data, n=n, size=(h, w), seed=seed, progress=progress, families=families)
    clock.step(2, f"training DeepLab v3+ from scratch ({cfg.epochs} epochs) into {run}")
    train(cfg, progress=progress)
    metrics = _test_metrics(run)
    clock.step(3, f"drawing the predicted hand on the test photos into {overlays}")
    test_images = _draw_overlays(run, overlays, device, progress)
    clock.step(4, "writing the report")
    report = write_report(run.path, out / "report.html", device=device, progress=progress)
    line, elapsed = _print_summary(clock, metrics, report, len(test_images))
    return {
        "out": out,
        "data": data,
        "run": run.path,
        "report": report,
        "overlays": overlays,
        "headline": line,
        "hand_iou": _hand(metrics).get("IoU"),
        "metrics": metrics,
        "time_s": round(elapsed, 1),
    }


def _hand(metrics: dict[str, Any]) -> dict[str, Any]:
    """The hand class's metrics (the last class when none is called hand)."""
    return metrics["classes"].get("hand") or list(metrics["classes"].values())[-1]


def _print_summary(
    clock: _Clock, metrics: dict[str, Any], report: Path, n_test: int
) -> tuple[str, float]:
    """The last step's lines: time, headline test metrics, the report; returns the headline
    and the elapsed seconds."""
    elapsed = clock.elapsed()
    line = headline(metrics)
    clock.step(5, f"done in {elapsed / 60:.1f} min")
    print(f"test split ({metrics.get('num_images', n_test)} images): {line}")
    print(f"report: {report.resolve()}")
    print(f"open it in a browser: {report.resolve().as_uri()}")
    return line, elapsed
