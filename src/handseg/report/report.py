"""``handseg report RUN``: one HTML page that explains a training run to a newcomer.

The page (default ``RUN/report.html``) holds a summary of what was trained, the headline
test metrics, the training-progress plot, the data-set and class metric tables, the
normalised confusion matrix, the seed's comparison figure for every test image (worst
first) and an overlay gallery, each with a plain-language explanation. Its pictures are
written beside it in ``<name>-files/`` and linked relatively, so the folder can be moved
or zipped as a whole; with ``embed=True`` they are inlined as ``data:`` URIs instead and
the HTML file stands alone.

A run folder that lacks pieces (no ``test/`` because of ``--no-test``, no ``model.pt``
because training was interrupted) still gets a report; it says what is missing and which
command adds it.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import logging
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from handseg.core.constants import __version__
from handseg.core.errors import HandsegError
from handseg.core.imaging import read_image
from handseg.core.viz import (
    CORRECT_BACKGROUND_COLOR,
    CORRECT_HAND_COLOR,
    FALSE_HAND_COLOR,
    HAND_COLOR,
    IGNORE_COLOR,
    MISSED_HAND_COLOR,
    confusion_figure,
    overlay,
    training_progress_figure,
)
from handseg.data.split import load_split
from handseg.eval.evaluate import compare
from handseg.infer.predictor import load_model
from handseg.model.checkpoint import read_model_file

log = logging.getLogger(__name__)
REPORT_NAME = "report.html"
_MARKER = ".handseg-report"  # marks an assets folder this module may clear and rewrite
_RUN_FILES = ("config.yaml", "model.pt", "metrics.csv", "split.json")
_DATASET_KEYS = ("GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore")
_CLASS_KEYS = ("Accuracy", "IoU", "MeanBFScore")


@dataclass
class _Run:
    """Everything read from a run folder; ``None`` where a piece is missing."""

    path: Path
    config: dict[str, Any] | None = None
    model_meta: dict[str, Any] | None = None
    rows: list[dict[str, str]] | None = None
    split_counts: dict[str, int] | None = None
    test_pairs: list[tuple[Path, Path]] = field(default_factory=list)
    test: dict[str, Any] | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)  # (what, how to add it)


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _read_run(run: Path) -> _Run:
    import json

    import yaml

    r = _Run(run)
    cmd = f"handseg report {run}"
    if (run / "config.yaml").is_file():
        try:
            data = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
            r.config = data if isinstance(data, dict) else None
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            log.warning("cannot read %s: %s", run / "config.yaml", exc)
    if r.config is None:
        r.missing.append(
            ("config.yaml (the training options)", "it is written when training starts")
        )

    if (run / "model.pt").is_file():
        try:
            _, r.model_meta = read_model_file(run / "model.pt")
        except HandsegError as exc:
            r.missing.append(("a readable model.pt", str(exc)))
    else:
        r.missing.append(
            (
                "model.pt (the trained network)",
                f"training did not finish; continue it with `handseg train --resume {run}`, "
                f"then run `{cmd}` again",
            )
        )

    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
            r.rows = list(csv.DictReader(f))
    else:
        r.missing.append(("metrics.csv (the training history)", "it is written after every epoch"))

    if (run / "split.json").is_file():
        try:
            doc = json.loads((run / "split.json").read_text(encoding="utf-8"))
            r.split_counts = {k: len(doc.get(k) or []) for k in ("train", "val", "test")}
            r.test_pairs = load_split(run / "split.json")["test"]
        except (HandsegError, ValueError, AttributeError, TypeError) as exc:
            r.missing.append(("the test images listed in split.json", str(exc)))
    else:
        r.missing.append(
            (
                "split.json (which images went to train / val / test)",
                "it is written when training starts",
            )
        )

    metrics_json = run / "test" / "metrics.json"
    if metrics_json.is_file():
        try:
            r.test = json.loads(metrics_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            r.missing.append((str(metrics_json), f"cannot read it: {exc}"))
    else:
        r.missing.append(
            (
                "test/metrics.json (the test-split evaluation)",
                "the run was trained with --no-test or stopped before the end; add it with "
                f"`handseg evaluate --run {run} --split test --out {run / 'test'}`, then run "
                f"`{cmd}` again",
            )
        )
    return r


def _is_run(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in _RUN_FILES)


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _fmt(v: Any, digits: int = 4) -> str:
    f = _num(v)
    return "n/a" if math.isnan(f) else f"{f:.{digits}f}"


def _pct(v: Any, digits: int = 1) -> str:
    f = _num(v)
    return "n/a" if math.isnan(f) else f"{100 * f:.{digits}f}&nbsp;%"


def _duration(seconds: Any) -> str:
    s = _num(seconds)
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


def _hand_class(result: dict[str, Any]) -> str:
    names = list(result.get("classes", {}))
    return "hand" if "hand" in names else (names[-1] if names else "hand")


def _history(rows: list[dict[str, str]] | None) -> dict[str, Any]:
    """Epochs, iterations, time and last validation values from ``metrics.csv`` rows."""
    if not rows:
        return {}
    epochs = [_num(r.get("epoch")) for r in rows]
    val = [r for r in rows if str(r.get("val_loss", "")).strip()]
    out: dict[str, Any] = {
        "epochs": int(max((e for e in epochs if not math.isnan(e)), default=0)),
        "iterations": int(max((_num(r.get("step")) for r in rows), default=0) or 0),
        "time_s": max((_num(r.get("time_s")) for r in rows), default=math.nan),
    }
    if val:
        losses = [_num(r["val_loss"]) for r in val]
        best = min(range(len(val)), key=lambda i: (math.isnan(losses[i]), losses[i]))
        out |= {
            "best_epoch": int(_num(val[best].get("epoch"))),
            "best_val_loss": losses[best],
            "best_val_acc": _num(val[best].get("val_acc")),
        }
    return out


class _Assets:
    """Pictures of the report: files in ``folder`` linked relatively, or data URIs."""

    def __init__(self, html_path: Path, embed: bool):
        self.embed = embed
        self.html_dir = html_path.parent
        if embed:
            self._tmp = tempfile.TemporaryDirectory(prefix="handseg-report-")
            self.folder = Path(self._tmp.name)
        else:
            self.folder = html_path.parent / f"{html_path.stem}-files"
            if self.folder.is_dir() and (self.folder / _MARKER).is_file():
                shutil.rmtree(self.folder)  # ours: drop pictures of an earlier report
            elif self.folder.exists() and any(self.folder.iterdir()):
                raise HandsegError(
                    f"{self.folder} exists and was not written by handseg report; move it away "
                    "or choose another --out"
                )
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / _MARKER).write_text("pictures of a handseg report; safe to delete\n")

    def path(self, name: str) -> Path:
        p = self.folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def src(self, path: Path) -> str:
        """The value for ``src=``/``href=`` (already attribute-safe)."""
        if self.embed:
            mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
            return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
        rel = path.resolve().relative_to(self.html_dir.resolve()).as_posix()
        return _esc(quote(rel))

    def close(self) -> None:
        if self.embed:
            self._tmp.cleanup()


def _safe_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60] or "image"


def _comparisons(run: _Run, assets: _Assets, device: str, progress: bool) -> list[dict[str, Any]]:
    """The seed's comparison figure and an overlay for every test image; worst first."""
    if not run.test_pairs or run.model_meta is None:
        return []
    from PIL import Image
    from tqdm.auto import tqdm

    # the same exact fp32 network that scored the test split in train()
    predictor = load_model(run.path / "model.pt", device=device, runtime="torch", precision="fp32")
    hand_value = (run.config or {}).get("hand_value")
    records = []
    pairs = run.test_pairs
    for i, (image_path, mask_path) in enumerate(
        tqdm(pairs, desc="report figures", unit="img", disable=not progress)
    ):
        stem = f"{i:03d}-{_safe_name(Path(image_path).stem)}"
        rec = compare(
            predictor, image_path, mask_path, assets.path(f"compare/{stem}.png"),
            split_errors=True, hand_value=hand_value,
        )  # fmt: skip
        pred = rec.pop("pred")
        rec.pop("gt", None)
        rec.pop("comparison", None)
        photo = read_image(image_path)
        h, w = pred.shape
        if photo.shape[:2] != (h, w):
            photo = _resize(photo, (h, w))
        thumb = Image.fromarray(overlay(photo, pred))
        thumb.thumbnail((480, 480))
        rec["overlay"] = assets.path(f"overlay/{stem}.jpg")
        thumb.save(rec["overlay"], quality=85)
        records.append(rec)

    def key(r: dict[str, Any]) -> tuple[int, float, float]:
        iou, bf = _num(r.get("hand_iou")), _num(r.get("bf"))
        return (math.isnan(iou), 0.0 if math.isnan(iou) else iou, 0.0 if math.isnan(bf) else bf)

    return sorted(records, key=key)


def _resize(image, hw: tuple[int, int]):
    import numpy as np
    from PIL import Image

    h, w = hw
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


_CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d8dee4; --bg:#f6f8fa; --card:#fff;
  --accent:#0969da; --good:#1a7f37; --warn:#9a6700; --bad:#cf222e; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:16px/1.6 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:980px; margin:0 auto; padding:2rem 1.25rem 4rem; }
h1 { font-size:1.9rem; line-height:1.25; margin:0 0 .25rem; }
h2 { font-size:1.35rem; margin:0 0 .75rem; }
h3 { font-size:1.05rem; margin:1.25rem 0 .5rem; }
p { margin:.5rem 0; }
a { color:var(--accent); }
code { font:.88em/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
  background:#eff1f3; padding:.1em .35em; border-radius:4px; }
.sub { color:var(--muted); margin:0 0 1.5rem; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:1.25rem 1.5rem; margin:1.25rem 0; box-shadow:0 1px 2px rgba(31,35,40,.04); }
.explain { color:var(--muted); font-size:.95rem; }
nav.toc { font-size:.92rem; }
nav.toc a { margin-right:1rem; white-space:nowrap; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit,minmax(200px,1fr)); gap:1rem;
  margin:1rem 0; }
.tile { border:1px solid var(--line); border-radius:10px; padding:1rem 1.1rem;
  border-top:4px solid var(--accent); background:#fff; }
.tile .label { font-size:.85rem; color:var(--muted); text-transform:uppercase;
  letter-spacing:.04em; }
.tile .value { font-size:2.1rem; font-weight:650; font-variant-numeric:tabular-nums; }
.tile .note { font-size:.88rem; color:var(--muted); }
.tile.good { border-top-color:var(--good); } .tile.warn { border-top-color:var(--warn); }
.tile.bad { border-top-color:var(--bad); }
table { border-collapse:collapse; margin:.75rem 0; font-size:.95rem; }
th, td { padding:.4rem .8rem; border-bottom:1px solid var(--line); text-align:left; }
thead th { border-bottom:2px solid var(--ink); font-weight:600; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; }
td.n { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:.9rem; }
tbody tr:hover { background:#f6f8fa; }
dl.defs dt { font-weight:600; margin-top:.6rem; }
dl.defs dd { margin:.1rem 0 0 1.2rem; color:var(--muted); }
figure { margin:1rem 0; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px;
  background:#fff; }
figcaption { color:var(--muted); font-size:.9rem; margin-top:.3rem; }
.missing { border-left:4px solid var(--warn); background:#fff8c5; }
.missing li { margin:.3rem 0; }
.swatch { display:inline-block; width:.95em; height:.95em; border:1px solid #888;
  vertical-align:-.12em; margin-right:.3em; border-radius:2px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill,minmax(170px,1fr)); gap:.75rem; }
.gallery figure { margin:0; }
.gallery img { width:100%; }
.gallery figcaption { font-size:.8rem; overflow-wrap:anywhere; }
.compare h3 { display:flex; justify-content:space-between; gap:1rem; flex-wrap:wrap; }
.compare h3 span { font-weight:400; color:var(--muted); font-variant-numeric:tabular-nums; }
details summary { cursor:pointer; color:var(--accent); }
pre { background:#f6f8fa; border:1px solid var(--line); border-radius:6px; padding:.75rem;
  overflow:auto; font-size:.85rem; line-height:1.45; }
footer { color:var(--muted); font-size:.85rem; text-align:center; margin-top:2rem; }
"""


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """An HTML table; cells are already HTML; columns from ``numeric_from`` right-aligned."""

    def cls(i: int) -> str:
        return ' class="n"' if i >= numeric_from else ""

    head = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tile(label: str, value: Any, note: str, grade: bool = True) -> str:
    f = _num(value)
    kind = ""
    if grade and not math.isnan(f):
        kind = " good" if f >= 0.9 else (" warn" if f >= 0.75 else " bad")
    return (
        f'<div class="tile{kind}"><div class="label">{label}</div>'
        f'<div class="value">{_fmt(value)}</div><div class="note">{note}</div></div>'
    )


def _summary(run: _Run) -> str:
    cfg = run.config or {}
    meta = run.model_meta or {}
    fit = meta.get("metrics", {}) if isinstance(meta.get("metrics"), dict) else {}
    hist = _history(run.rows)
    parts = [
        "This run trained <b>DeepLab v3+ with a ResNet-18 encoder</b> to label every pixel of "
        "a photo as <i>hand</i> or <i>background</i>."
    ]
    if cfg:
        images = cfg.get("images") or "(folders of the split file)"
        size = cfg.get("image_size") or ["?", "?"]
        data = f"The photos came from <code>{_esc(images)}</code>"
        if run.split_counts:
            c = run.split_counts
            data += (
                f": {sum(c.values())} photo/mask pairs, split at random (seed "
                f"{_esc(cfg.get('seed', '?'))}) into {c['train']} for training, {c['val']} for "
                f"validation (choosing the best epoch) and {c['test']} for the test below, "
                "which the network never saw while training"
            )
        parts.append(data + ".")
        weights = cfg.get("backbone_weights_used", cfg.get("backbone_weights", "unknown"))
        weights_text = {
            "none": "random initialisation (no pretrained weights)",
            "imagenet": "ImageNet-pretrained ResNet-18 weights",
        }.get(str(weights), f"weights from <code>{_esc(weights)}</code>")
        parts.append(
            f"Options: preset <code>{_esc(cfg.get('preset', '?'))}</code> "
            f"({_esc(cfg.get('optimizer', '?'))}, learning rate {_esc(cfg.get('lr', '?'))}, "
            f"{_esc(cfg.get('schedule', '?'))} schedule, batch {_esc(cfg.get('batch_size', '?'))}), "
            f"images resized to {_esc(size[0])}&times;{_esc(size[1])} pixels (height &times; "
            f"width), augmentation {_esc(', '.join(map(str, cfg.get('augment') or ['none'])))}, "
            f"{'median-frequency class weights' if cfg.get('class_weighting') == 'median-frequency' else 'no class weights'}, "
            f"{'cross-entropy + Dice loss' if cfg.get('loss') == 'ce+dice' else 'cross-entropy loss'}, "
            f"encoder started from {weights_text}."
        )
    epochs_run = fit.get("epochs_run", hist.get("epochs"))
    if epochs_run is not None:
        max_epochs = cfg.get("epochs", "?")
        if fit.get("stopped_early"):
            how = (
                f"it stopped early because the validation loss had not improved for "
                f"{_esc(cfg.get('patience', '?'))} epochs"
            )
        elif fit:
            how = "it ran to the last epoch"
        else:
            how = "it has not finished"
        seconds = fit.get("train_time_s", hist.get("time_s"))
        plural = "" if str(max_epochs) == "1" else "s"
        text = (
            f"Training ran {_esc(epochs_run)} of at most {_esc(max_epochs)} epoch{plural} "
            f"({hist.get('iterations', '?')} iterations) in {_duration(seconds)}; {how}."
        )
        if "best_epoch" in hist:
            text += (
                f" The saved model is the one from epoch {hist['best_epoch']}, with the lowest "
                f"validation loss ({_fmt(hist['best_val_loss'])})."
            )
        parts.append(text)
    return "<p>" + " ".join(parts) + "</p>"


def _headline(run: _Run) -> str:
    if run.test is None:
        return ""
    t = run.test
    ds = t.get("dataset", {})
    hand = t.get("classes", {}).get(_hand_class(t), {})
    n = t.get("num_images", len(t.get("images", [])))
    tiles = "".join(
        [
            _tile("Hand IoU", hand.get("IoU"), "overlap of predicted and true hand (1 = perfect)"),
            _tile(
                "Global accuracy", ds.get("GlobalAccuracy"), "share of all pixels labelled right"
            ),
            _tile("Mean BF score", ds.get("MeanBFScore"), "how closely the outlines match"),
        ]
    )
    return (
        f'<section class="card" id="headline"><h2>Headline: the test split ({n} images)</h2>'
        f'<div class="tiles">{tiles}</div>'
        '<p class="explain">Green: 0.9 or better, amber: 0.75&ndash;0.9, red: below. The '
        "hand IoU is the number to watch: the background covers most of each photo, so global "
        "accuracy stays high even when much of the hand is missed.</p></section>"
    )


def _progress_section(run: _Run, assets: _Assets) -> str:
    png = run.path / "training-progress.png"
    target = assets.path("training-progress.png")
    if png.is_file():
        shutil.copyfile(png, target)
    elif run.rows:
        training_progress_figure(run.rows, target)
    else:
        return ""
    weighted = (run.config or {}).get("class_weighting", "median-frequency") != "none"
    loss = "class-weighted cross-entropy" if weighted else "cross-entropy"
    return (
        '<section class="card" id="progress"><h2>Training progress</h2>'
        f'<figure><img src="{assets.src(target)}" alt="training-progress plot"></figure>'
        '<p class="explain">Like MATLAB\'s training-progress window. <b>Top:</b> pixel accuracy '
        "(%) on each training mini-batch (light line: raw, dark line: smoothed) and on the "
        "validation images after each epoch (black dashes). <b>Bottom:</b> the loss the "
        f"network minimises ({loss}: how confident it is in the wrong label, averaged over "
        "pixels). Dotted lines mark the end of each epoch (one pass over "
        "the training images). A healthy run shows both curves falling and levelling off "
        "together; a validation loss that climbs while the training loss keeps falling means "
        "the network starts to memorise its training photos.</p></section>"
    )


_METRIC_DEFS = """
<dl class="defs">
<dt>Accuracy (GlobalAccuracy)</dt><dd>Share of all pixels given the right label. Easy to
score high on: a network that calls everything background is already right on most pixels.</dd>
<dt>MeanAccuracy</dt><dd>For each class, the share of its pixels found (for the hand: how much
of the real hand was marked as hand), then averaged over the two classes.</dd>
<dt>IoU (intersection over union, also called Jaccard)</dt><dd>For one class: pixels that are
that class in both the prediction and the ground truth, divided by pixels that are that class in
either. It punishes missed pixels and false pixels alike; 1 is a perfect match, 0.9 means the
overlap is 90&nbsp;% of the combined area. MeanIoU averages the two classes.</dd>
<dt>WeightedIoU</dt><dd>The class IoUs averaged with weights equal to each class's share of
the pixels, so the large background class dominates it.</dd>
<dt>BF score (boundary F1)</dt><dd>How well the predicted outline follows the true one: the
share of predicted outline pixels that lie within a small distance (0.75&nbsp;% of the image
diagonal) of the true outline, and the share of true outline pixels near the predicted one,
combined as their harmonic mean. Ragged or shifted edges lower it even when IoU barely moves.</dd>
</dl>
<p class="explain"><b>How the numbers are pooled.</b> Accuracy and IoU are computed once from
pixel counts summed over the whole test set (a big image weighs more than a small one); the BF
score is computed per image and then averaged over the images. This is how MATLAB's
<code>evaluateSemanticSegmentation</code> reports them. "n/a" means undefined (for example a


class absent from every image).</p>
"""


def _tables_section(run: _Run) -> str:
    if run.test is None:
        return ""
    t = run.test
    ds = t.get("dataset", {})
    ds_table = _table(list(_DATASET_KEYS), [[_fmt(ds.get(k)) for k in _DATASET_KEYS]], 0)
    rows = [
        [_esc(name)] + [_fmt(m.get(k)) for k in _CLASS_KEYS]
        for name, m in t.get("classes", {}).items()
    ]
    class_table = _table(["Class", *_CLASS_KEYS], rows)
    return (
        '<section class="card" id="metrics"><h2>Metrics on the test split</h2>'
        f"<h3>Data-set metrics</h3>{ds_table}<h3>Class metrics</h3>{class_table}"
        f"<h3>What the metrics mean</h3>{_METRIC_DEFS}</section>"
    )


def _confusion_section(run: _Run, assets: _Assets) -> str:
    if run.test is None:
        return ""
    t = run.test
    names = list(t.get("classes", {}))
    cm = t.get("confusion") or []
    norm = t.get("confusion_normalized") or []
    figure = ""
    png = run.path / "test" / "confusion.png"
    target = assets.path("confusion.png")
    try:
        if png.is_file():
            shutil.copyfile(png, target)
        else:
            confusion_figure(t, names, target)
        figure = (
            f'<figure><img src="{assets.src(target)}" alt="normalised confusion matrix" '
            'style="max-width:460px"></figure>'
        )
    except (OSError, ValueError, KeyError) as exc:
        log.warning("no confusion figure: %s", exc)
    table = ""
    if len(cm) == len(names) == len(norm) and names:
        rows = [
            [f"true {_esc(n)}"]
            + [
                f"{_pct(norm[i][j])} <small>({int(cm[i][j]):,} px)</small>"
                for j in range(len(names))
            ]
            for i, n in enumerate(names)
        ]
        table = _table(["", *(f"predicted {_esc(n)}" for n in names)], rows)
    hand = _hand_class(t)
    return (
        '<section class="card" id="confusion"><h2>Normalised confusion matrix</h2>'
        f"{figure}{table}"
        '<p class="explain">Rows are the true class, columns the predicted class, and each '
        "row is divided by the number of pixels of its true class, so a row adds up to "
        f"100&nbsp;%. The diagonal is what went right: the bottom-right cell is the share of "
        f"real {_esc(hand)} pixels the network found. Off the diagonal are the mistakes: "
        f"<i>true background, predicted {_esc(hand)}</i> is false hand (spill onto the "
        f"background); <i>true {_esc(hand)}, predicted background</i> is missed hand.</p>"
        "</section>"
    )


def _legend() -> str:

    def sw(rgb) -> str:
        return f'<span class="swatch" style="background:rgb{tuple(int(c) for c in rgb)}"></span>'

    return (
        '<p class="explain"><b>How to read each figure.</b> Left: the photo with the '
        f"predicted hand tinted and outlined in amber {sw(HAND_COLOR)}. Right: the prediction "
        "compared with the hand-drawn ground-truth mask, pixel by pixel: "
        f"{sw(CORRECT_HAND_COLOR)}<b>white</b> = hand found, "
        f"{sw(CORRECT_BACKGROUND_COLOR)}<b>black</b> = background correctly left out, "
        f"{sw(FALSE_HAND_COLOR)}<b>green</b> = false hand (marked as hand, but it is "
        f"background), {sw(MISSED_HAND_COLOR)}<b>magenta</b> = missed hand (part of the hand "
        f"marked as background), {sw(IGNORE_COLOR)}<b>grey</b> = not labelled in the mask "
        "(not scored). The seed's MATLAB figure draws both kinds of mistake green. The title "
        "gives the image's hand IoU and BF score (its mean over the two classes). The worst "
        "image comes first: look there to see what the network gets wrong.</p>"
    )


def _comparison_section(run: _Run, records: list[dict[str, Any]], assets: _Assets) -> str:
    if not records:
        return ""
    rows = []
    for i, r in enumerate(records, 1):
        name = _esc(Path(str(r["image"])).name)
        rows.append(
            [
                str(i),
                f'<a href="#img-{i}">{name}</a>',
                _fmt(r.get("hand_iou")),
                _fmt(r.get("bf")),
                _fmt(r.get("accuracy")),
            ]  # fmt: skip
        )
    table = _table(["#", "Image", "Hand IoU", "BF score", "Accuracy"], rows, 2)
    figs = []
    for i, r in enumerate(records, 1):
        name = _esc(Path(str(r["image"])).name)
        mask = _esc(Path(str(r["mask"])).name)
        figs.append(
            f'<div class="compare" id="img-{i}"><h3>{i}. {name} '
            f"<span>hand IoU {_fmt(r.get('hand_iou'))} &middot; BF {_fmt(r.get('bf'))}</span></h3>"
            f'<figure><img loading="lazy" src="{assets.src(Path(r["out"]))}" '
            f'alt="comparison for {name}"><figcaption>photo {name}, ground truth {mask}'
            "</figcaption></figure></div>"
        )
    return (
        '<section class="card" id="images"><h2>Every test image, worst first</h2>'
        f"{_legend()}<h3>Per-image scores</h3>{table}"
        '<p class="explain">Per-image hand IoU and accuracy count only that image\'s pixels; '
        "the set's numbers above pool the pixels of all images, so they are not the mean of "
        "this column.</p>"
        f"{''.join(figs)}</section>"
    )


def _gallery_section(records: list[dict[str, Any]], assets: _Assets) -> str:
    if not records:
        return ""
    items = []
    for i, r in enumerate(records, 1):
        name = _esc(Path(str(r["image"])).name)
        src = assets.src(Path(r["overlay"]))
        items.append(
            f'<figure><a href="{src}"><img loading="lazy" src="{src}" alt="overlay of {name}"></a>'
            f"<figcaption>{i}. {name} &middot; IoU {_fmt(r.get('hand_iou'))}</figcaption></figure>"
        )
    return (
        '<section class="card" id="overlays"><h2>Overlays</h2>'
        '<p class="explain">The predicted hand tinted on each test photo, as <code>handseg '
        "predict</code> draws it on new photos (same order as above; click for a larger "
        f'view).</p><div class="gallery">{"".join(items)}</div></section>'
    )


def _missing_section(run: _Run, notes: list[tuple[str, str]]) -> str:
    items = run.missing + notes
    if not items:
        return ""
    lis = "".join(f"<li><b>{_esc(what)}</b>: {_md_code(_esc(how))}</li>" for what, how in items)
    return (
        '<section class="card missing" id="missing"><h2>Missing from this run</h2>'
        f"<p>The report shows what the run folder holds. Not found:</p><ul>{lis}</ul></section>"
    )


def _md_code(text: str) -> str:
    """`x` -> <code>x</code> in already-escaped text."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _details_section(run: _Run) -> str:
    parts = []
    cfg_file = run.path / "config.yaml"
    if cfg_file.is_file():
        parts.append(
            "<details><summary>All training options (config.yaml)</summary>"
            f"<pre>{_esc(cfg_file.read_text(encoding='utf-8', errors='replace'))}</pre></details>"
        )
    versions = (run.model_meta or {}).get("versions")
    if isinstance(versions, dict) and versions:
        rows = [[_esc(k), _esc(v)] for k, v in versions.items()]
        parts.append(
            "<details><summary>Software versions</summary>"
            f"{_table(['Package', 'Version'], rows, 2)}</details>"
        )
    files = [
        ("config.yaml", "the resolved training options"),
        ("split.json", "which photos went to training, validation and test"),
        ("metrics.csv", "loss and accuracy per iteration and per epoch"),
        ("model.pt", "the trained network: <code>handseg predict --model …/model.pt</code>"),
        ("checkpoints/", "for <code>handseg train --resume</code>"),
        ("test/per-image.csv", "the per-image scores above, as a spreadsheet"),
    ]
    lis = "".join(
        f"<li><code>{_esc(n)}</code> &ndash; {d}</li>"
        for n, d in files
        if (run.path / n.rstrip("/")).exists()
    )
    if lis:
        parts.append(f"<h3>Files in the run folder</h3><ul>{lis}</ul>")
    if not parts:
        return ""
    return f'<section class="card" id="details"><h2>Details</h2>{"".join(parts)}</section>'


def _page(run: _Run, sections: list[str]) -> str:
    name = _esc(run.path.resolve().name)
    toc = [
        ("headline", "Headline"),
        ("progress", "Training"),
        ("metrics", "Metrics"),
        ("confusion", "Confusion matrix"),
        ("images", "Test images"),
        ("overlays", "Overlays"),
        ("missing", "Missing"),
        ("details", "Details"),
    ]
    body = "".join(s for s in sections if s)
    links = "".join(f'<a href="#{a}">{t}</a>' for a, t in toc if f'id="{a}"' in body)
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")

    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>handseg report: {name}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>Hand segmentation report: {name}</h1>"
        f'<p class="sub">Run folder <code>{_esc(run.path.resolve())}</code> &middot; written '
        f"{when} by handseg {_esc(__version__)}</p>"
        f'<nav class="toc card">{links}</nav>{body}'
        "<footer>handseg re-creates a MATLAB DeepLab v3+ hand-segmentation workflow in "
        "Python.</footer></main></body></html>\n"
    )


def write_report(
    run_dir: str | Path,
    out_html: str | Path | None = None,
    *,
    embed: bool = False,
    device: str = "cpu",
    progress: bool = False,
) -> Path:
    """Write the HTML report of a training run.

    Args:
        run_dir: the folder ``handseg train --out`` wrote.
        out_html: the page to write (default ``RUN/report.html``). Its pictures go beside it
            in ``<stem>-files/`` (replaced on every call), linked by relative paths.
        embed: inline the pictures as ``data:`` URIs instead (one self-standing file).
        device: where the model runs to draw the test-image figures.
        progress: show a progress bar while the figures are drawn.

    Returns:
        The path of the HTML file.

    Raises:
        HandsegError: ``run_dir`` is not a training run folder, or the output folder
            cannot be written.
    """
    run_path = Path(run_dir)
    if not run_path.is_dir():
        raise HandsegError(
            f"run folder {run_path} does not exist; pass the folder of a training run"
        )
    if not _is_run(run_path):
        raise HandsegError(
            f"{run_path} is not a training run folder (it has none of {', '.join(_RUN_FILES)}); "
            "pass the folder that `handseg train --out` wrote"
        )
    out = Path(out_html) if out_html is not None else run_path / REPORT_NAME
    if out.is_dir():
        out = out / REPORT_NAME
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HandsegError(f"cannot create {out.parent}: {exc.strerror or exc}") from None

    run = _read_run(run_path)
    assets = _Assets(out, embed)
    notes: list[tuple[str, str]] = []
    try:
        records = _comparisons(run, assets, device, progress)
        if run.model_meta is not None and run.split_counts and not run.split_counts.get("test"):
            notes.append(
                ("test images", "the split has no test subset, so there is nothing to show")
            )
        sections = [
            f'<section class="card" id="summary"><h2>What was trained</h2>{_summary(run)}</section>',
            _headline(run),
            _missing_section(run, notes),
            _progress_section(run, assets),
            _tables_section(run),
            _confusion_section(run, assets),
            _comparison_section(run, records, assets),
            _gallery_section(records, assets),
            _details_section(run),
        ]
        text = _page(run, sections)
    finally:
        assets.close()
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
