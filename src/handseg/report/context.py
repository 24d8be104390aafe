"""What the report page says, as plain data for its template: one small function per
section, no HTML (the template ``templates/report.html.j2`` writes the markup and escapes
every value).

Numbers stay floats (NaN where undefined); the template formats them.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

from handseg.core.constants import __version__
from handseg.core.errors import HandsegError
from handseg.core.viz import (
    CORRECT_BACKGROUND_COLOR,
    CORRECT_HAND_COLOR,
    FALSE_HAND_COLOR,
    HAND_COLOR,
    IGNORE_COLOR,
    MISSED_HAND_COLOR,
)
from handseg.report.assets import Assets
from handseg.report.figures import ScoredImage
from handseg.report.run import RunData, number, summarize_history
from handseg.train.model_card import render_model_card

__all__ = [
    "CLASS_KEYS",
    "DATASET_KEYS",
    "Confusion",
    "ImageView",
    "Page",
    "Pictures",
    "Summary",
    "Tile",
    "build_page",
    "code_spans",
    "run_title",
]

DATASET_KEYS = ("GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore")
CLASS_KEYS = ("Accuracy", "IoU", "MeanBFScore")
# folder names that say nothing about the data; the title names the nearest folder above them
GENERIC_FOLDERS = frozenset(
    {"images", "image", "imgs", "img", "photos", "pictures", "rgb", "data", "dataset",
     "datasets", "train", "training", "val", "test"}
)  # fmt: skip
# (section id, its link in the table of contents), in the order of the links
log = logging.getLogger(__name__)

TOC = (
    ("headline", "Headline"),
    ("progress", "Training"),
    ("metrics", "Metrics"),
    ("confusion", "Confusion matrix"),
    ("images", "Test images"),
    ("overlays", "Overlays"),
    ("missing", "Missing"),
    ("model-card", "Model card"),
    ("details", "Details"),
)
# the files of a run the "Details" section names when present; `x` is shown as code
RUN_FILE_NOTES = (
    ("config", "the resolved training options"),
    ("model_card", "the model card shown above: `handseg card RUN` writes it again"),
    ("split", "which photos went to training, validation and test"),
    ("history", "loss and accuracy per iteration and per epoch"),
    ("model", "the trained network: `handseg predict --model …/model.pt`"),
    ("checkpoints", "for `handseg train --resume`"),
    ("per_image", "the per-image scores above, as a spreadsheet"),
)

Spans = list[tuple[str, bool]]  # (text, shown as code)


def code_spans(text: str) -> Spans:
    """Split ``text`` at Markdown-style `code` marks: [("run ", False), ("x", True), ...]."""
    parts = re.split(r"`([^`]+)`", text)
    return [(p, i % 2 == 1) for i, p in enumerate(parts) if p]


@dataclass(frozen=True)
class Pictures:
    """The pictures drawn for the page (None where there is none)."""

    progress: Path | None = None
    confusion: Path | None = None
    images: list[ScoredImage] = field(default_factory=list)


@dataclass(frozen=True)
class Summary:
    """The "What was trained" paragraph: the training options (None without config.yaml), the split's
    sizes, and how training went (None when nothing says how many epochs ran)."""

    options: dict[str, Any] | None
    sizes: dict[str, int] | None
    fit: dict[str, Any] | None


@dataclass(frozen=True)
class Tile:
    """A headline number, coloured by how good it is."""

    label: str
    value: float
    note: str
    grade: str = ""  # "good", "warn", "bad" or "" (ungraded or undefined)


@dataclass(frozen=True)
class Confusion:
    """The confusion-matrix section: its picture and, when the counts are there, its table."""

    hand: str
    picture: str | None  # URL
    names: list[str]
    rows: list[tuple[str, list[tuple[float, int]]]]  # (true class, [(row share, pixels)])


@dataclass(frozen=True)
class ImageView:
    """One test image as the page shows it."""

    number: int  # 1 = worst
    image: str
    mask: str
    hand_iou: float
    bf: float
    accuracy: float
    figure: str  # URLs
    overlay: str


@dataclass(frozen=True)
class Page:
    """Everything the template shows; a section is absent where its field is None/empty."""

    name: str
    run_path: str
    written: str
    version: str
    summary: Summary
    headline: dict[str, Any] | None
    missing: list[tuple[str, Spans]]
    progress: dict[str, str] | None
    metrics: dict[str, Any] | None
    confusion: Confusion | None
    images: list[ImageView]  # shown twice: comparison figures and overlays
    legend: dict[str, tuple[int, ...]]
    details: dict[str, Any] | None
    model_card: Markup | None = None  # MODEL_CARD.md as HTML

    @property
    def toc(self) -> list[tuple[str, str]]:
        """Links to the sections the page has, in :data:`TOC` order."""
        present = {
            "headline": self.headline,
            "progress": self.progress,
            "metrics": self.metrics,
            "confusion": self.confusion,
            "images": self.images,
            "overlays": self.images,
            "missing": self.missing,
            "details": self.details,
            "model-card": self.model_card,
        }
        return [(anchor, title) for anchor, title in TOC if present[anchor]]


def _fit(run: RunData) -> dict[str, Any] | None:
    """How training went, from the model's metrics or else from ``metrics.csv``."""
    cfg = run.config or {}
    fit = run.card.metrics if run.card is not None else {}
    hist = summarize_history(run.history)
    epochs_run = fit.get("epochs_run", hist.epochs)
    if epochs_run is None:
        return None
    ending = "early" if fit.get("stopped_early") else ("last" if fit else "unfinished")
    return {
        "epochs_run": epochs_run,
        "max_epochs": cfg.get("epochs", "?"),
        "iterations": "?" if hist.iterations is None else hist.iterations,
        "duration": _duration(fit.get("train_time_s", hist.time_s)),
        "ending": ending,
        "patience": cfg.get("patience", "?"),
        "best_epoch": hist.best_epoch,
        "best_val_loss": hist.best_val_loss,
    }


def _duration(seconds: Any) -> str:
    """``seconds`` as "42 s", "3 min 07 s" or "2 h 05 min"."""
    s = number(seconds)
    if math.isnan(s):
        return "an unknown time"
    s = round(s)
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The training options the summary names ("?" where the config lacks one)."""
    size = cfg.get("image_size") or ["?", "?"]
    keys = ("seed", "preset", "optimizer", "lr", "schedule", "batch_size")
    return {k: cfg.get(k, "?") for k in keys} | {
        "images": cfg.get("images") or "(folders of the split file)",
        "height": size[0],
        "width": size[1],
        "augment": ", ".join(map(str, cfg.get("augment") or ["none"])),
        "class_weights": cfg.get("class_weighting") == "median-frequency",
        "dice_loss": cfg.get("loss") == "ce+dice",
        "weights": str(cfg.get("backbone_weights_used", cfg.get("backbone_weights", "unknown"))),
    }


def _summary(run: RunData) -> Summary:
    options = _options(run.config) if run.config else None
    return Summary(options=options, sizes=run.split_sizes, fit=_fit(run))


def _hand_class(result: dict[str, Any]) -> str:
    names = list(result.get("classes", {}))
    return "hand" if "hand" in names else (names[-1] if names else "hand")


def _tile(label: str, value: Any, note: str) -> Tile:
    f = number(value)
    grade = "" if math.isnan(f) else ("good" if f >= 0.9 else ("warn" if f >= 0.75 else "bad"))
    return Tile(label, f, note, grade)


def _headline(test: dict[str, Any] | None) -> dict[str, Any] | None:
    if test is None:
        return None
    ds = test.get("dataset", {})
    hand = test.get("classes", {}).get(_hand_class(test), {})
    return {
        "num_images": test.get("num_images", len(test.get("images", []))),
        "tiles": [
            _tile("Hand IoU", hand.get("IoU"), "overlap of predicted and true hand (1 = perfect)"),
            _tile(
                "Global accuracy", ds.get("GlobalAccuracy"), "share of all pixels labelled right"
            ),
            _tile("Mean BF score", ds.get("MeanBFScore"), "how closely the outlines match"),
        ],
    }


def _progress(run: RunData, picture: Path | None, assets: Assets) -> dict[str, str] | None:
    if picture is None:
        return None
    weighted = (run.config or {}).get("class_weighting", "median-frequency") != "none"
    return {
        "picture": assets.url(picture),
        "loss": "class-weighted cross-entropy" if weighted else "cross-entropy",
    }


def _metrics(test: dict[str, Any] | None) -> dict[str, Any] | None:
    if test is None:
        return None
    ds = test.get("dataset", {})
    return {
        "dataset_keys": list(DATASET_KEYS),
        "dataset": [number(ds.get(k)) for k in DATASET_KEYS],
        "class_keys": list(CLASS_KEYS),
        "classes": [
            (name, [number(m.get(k)) for k in CLASS_KEYS])
            for name, m in test.get("classes", {}).items()
        ],
    }


def _confusion(
    test: dict[str, Any] | None, picture: Path | None, assets: Assets
) -> Confusion | None:
    if test is None:
        return None
    names = list(test.get("classes", {}))
    cm = test.get("confusion") or []
    norm = test.get("confusion_normalized") or []
    rows = []
    if len(cm) == len(names) == len(norm) and names:
        rows = [
            (n, [(number(norm[i][j]), int(cm[i][j])) for j in range(len(names))])
            for i, n in enumerate(names)
        ]
    url = assets.url(picture) if picture is not None else None
    return Confusion(_hand_class(test), url, names, rows)


def _images(images: list[ScoredImage], assets: Assets) -> list[ImageView]:
    return [
        ImageView(
            number=i,
            image=s.image,
            mask=s.mask,
            hand_iou=s.hand_iou,
            bf=s.bf,
            accuracy=s.accuracy,
            figure=assets.url(s.figure),
            overlay=assets.url(s.overlay),
        )
        for i, s in enumerate(images, 1)
    ]


def _details(run: RunData) -> dict[str, Any] | None:
    rd = run.dir
    config_text = None
    if rd.config.is_file():
        config_text = rd.config.read_text(encoding="utf-8", errors="replace")
    versions = run.card.versions if run.card is not None else {}
    per_image = rd.test / "per-image.csv"  # written by handseg.eval.evaluate
    files = []
    for attr, note in RUN_FILE_NOTES:
        path = per_image if attr == "per_image" else getattr(rd, attr)
        if path.exists():
            shown = path.relative_to(rd.path).as_posix() + ("/" if path.is_dir() else "")
            files.append((shown, code_spans(note)))
    if config_text is None and not versions and not files:
        return None
    return {"config_text": config_text, "versions": versions, "files": files}


def _data_name(images: Any) -> str | None:
    """The name of the photos' folder, or of the nearest folder above it whose name is not
    generic (``demo-output/data/images`` -> ``demo-output``); None when there is none."""
    if not images:
        return None
    path = Path(str(images))
    for folder in (path, *path.parents):
        if folder.name and folder.name.lower() not in GENERIC_FOLDERS:
            return folder.name
    return None


def run_title(run: RunData) -> str:
    """What the page calls the run: the data folder and the preset from its ``config.yaml``
    (``arsl-bg11, preset robust``), plus the run folder's name unless it is the default
    ``run``; just the run folder's name when the config says neither."""
    cfg = run.config or {}
    folder = run.dir.path.resolve().name
    parts = [_data_name(cfg.get("images"))]
    if cfg.get("preset"):
        parts.append(f"preset {cfg['preset']}")
    named = ", ".join(p for p in parts if p)
    if not named:
        return folder
    return named if folder == "run" else f"{named} ({folder})"


def _missing(run: RunData, notes: list[tuple[str, str]]) -> list[tuple[str, Spans]]:
    return [(what, code_spans(how)) for what, how in run.missing + notes]


def build_page(
    run: RunData, pictures: Pictures, notes: list[tuple[str, str]], assets: Assets
) -> Page:
    """The template's context for the report of ``run``; ``notes``: (what, why) lines added
    to the "Missing" section."""
    return Page(
        name=run_title(run),
        run_path=str(run.dir.path.resolve()),
        written=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        version=__version__,
        summary=_summary(run),
        headline=_headline(run.test),
        missing=_missing(run, notes),
        progress=_progress(run, pictures.progress, assets),
        metrics=_metrics(run.test),
        confusion=_confusion(run.test, pictures.confusion, assets),
        images=_images(pictures.images, assets),
        legend={
            "hand": HAND_COLOR,
            "correct_hand": CORRECT_HAND_COLOR,
            "correct_background": CORRECT_BACKGROUND_COLOR,
            "false_hand": FALSE_HAND_COLOR,
            "missed_hand": MISSED_HAND_COLOR,
            "ignore": IGNORE_COLOR,
        },
        details=_details(run),
        model_card=_model_card(run),
    )


def _model_card(run: RunData) -> Markup | None:
    """``MODEL_CARD.md`` as HTML; rendered from the run when the file is missing (a run
    trained before handseg wrote cards), None when there is no model."""
    rd = run.dir
    try:
        text = rd.model_card.read_text(encoding="utf-8") if rd.model_card.is_file() else None
        if text is None and rd.model.is_file():
            text = render_model_card(rd)
    except (OSError, HandsegError) as exc:
        log.warning("no model card in the report: %s", exc)
        return None
    if text is None:
        return None
    md = MarkdownIt("commonmark", {"html": False}).enable("table")  # no raw HTML from files
    return Markup(md.render(text))
