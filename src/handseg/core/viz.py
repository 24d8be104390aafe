"""Figures: prediction overlays, the seed's comparison figure, confusion matrix, training
progress and class frequencies.

Images are (H, W, 3) uint8 RGB arrays. Label masks are (H, W) arrays with hand where the
value is 1 (a bool mask, or a 0/255 mask without any 1, works too); ground-truth pixels
equal to 255 in a 0/1 mask are undefined ("ignore"). Figures are drawn on
``matplotlib.figure.Figure`` objects with the Agg canvas, never through pyplot's global
state, so nothing here depends on a display or on the caller's matplotlib backend.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handseg.core.io import atomic_save_figure, atomic_save_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure


HAND_COLOR = (255, 200, 0)
"""Overlay tint for predicted hand: amber, stands out on skin and on grey, blue or green
backgrounds, and differs from every colour of the comparison image."""
CORRECT_HAND_COLOR = (255, 255, 255)
CORRECT_BACKGROUND_COLOR = (0, 0, 0)
MISMATCH_COLOR = (0, 255, 0)
FALSE_HAND_COLOR = (0, 255, 0)
MISSED_HAND_COLOR = (255, 0, 255)
IGNORE_COLOR = (128, 128, 128)
# MATLAB training-progress colours: blue accuracy, orange loss, black validation.
_ACC_COLOR = "#0072BD"
_LOSS_COLOR = "#D95319"
_VAL_COLOR = "#222222"


def _hand(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool hand pixels of a 0/1, bool or 0/255 label mask."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {m.shape}")
    if m.dtype == np.bool_:
        return m
    hand = m == 1
    if not hand.any() and np.all((m == 0) | (m == 255)):
        hand = m == 255  # a 0/255 mask as written by save_mask_png
    return hand


def _rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 copy of a gray, RGB or RGBA image (uint8, or float in [0, 1])."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {a.shape}")
    return np.array(a, dtype=np.uint8, order="C", copy=True)


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    color: Sequence[int] = HAND_COLOR,
    alpha: float = 0.45,
    *,
    contour: bool = True,
) -> np.ndarray:
    """Tint the hand pixels of ``mask`` on ``image`` and outline them.

    Args:
        image: (H, W), (H, W, 3) or (H, W, 4) photo, uint8 (or float in [0, 1]).
        mask: (H, W) labels, hand where 1 (bool or 0/255 also accepted).
        color: RGB tint of the hand.
        alpha: tint opacity in [0, 1].
        contour: also draw the hand's outline in ``color`` at full opacity, about
            1 px per 400 px of the longer side.

    Returns:
        (H, W, 3) uint8.
    """
    import cv2

    out = _rgb(image)
    hand = _hand(mask)
    if hand.shape != out.shape[:2]:
        raise ValueError(f"mask shape {hand.shape} differs from image shape {out.shape[:2]}")
    tint = np.asarray(color, dtype=np.float64)
    # blocks of ~1 M pixels: float64 copies of a whole 100-MP photo would need ~7 GB
    step = max(1, (1 << 20) // out.shape[1])
    for r in range(0, out.shape[0], step):
        rows, rows_hand = out[r : r + step], hand[r : r + step]  # views into out / hand
        blended = rows[rows_hand].astype(np.float64) * (1.0 - alpha) + tint * alpha
        rows[rows_hand] = np.clip(blended, 0, 255).round().astype(np.uint8)
    if contour and hand.any():
        t = max(1, round(max(hand.shape) / 400))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * t + 1, 2 * t + 1))
        m = hand.astype(np.uint8)
        # default erode border: the image edge is not drawn as an outline
        edge = (m > cv2.erode(m, kernel)).astype(bool)
        out[edge] = np.asarray(color, dtype=np.uint8)
    return out


def comparison_image(pred: np.ndarray, gt: np.ndarray, *, split_errors: bool = False) -> np.ndarray:
    """The seed's comparison of a prediction with its ground truth.

    Hand found correctly: white; background correct: black; mismatch: green. With
    ``split_errors``: false hand (predicted hand, true background) green, missed hand
    (predicted background, true hand) magenta. Undefined ground truth (255): grey.

    Args:
        pred: (H, W) predicted labels, hand where 1.
        gt: (H, W) true labels: 0, 1, or 255 (ignore); a 0/255 mask without any 1 is
            read as 255 = hand.

    Returns:
        (H, W, 3) uint8.
    """
    p = _hand(pred)
    g_arr = np.asarray(gt)
    if p.shape != g_arr.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth {g_arr.shape}")
    g = _hand(g_arr)
    if g_arr.dtype == np.bool_ or not (g_arr == 1).any() and g.any():
        ignore = np.zeros(g.shape, dtype=bool)
    else:
        ignore = (g_arr != 0) & (g_arr != 1)
    out = np.zeros((*p.shape, 3), dtype=np.uint8)
    out[p & g] = CORRECT_HAND_COLOR
    out[~p & ~g] = CORRECT_BACKGROUND_COLOR
    if split_errors:
        out[p & ~g] = FALSE_HAND_COLOR
        out[~p & g] = MISSED_HAND_COLOR
    else:
        out[p != g] = MISMATCH_COLOR
    out[ignore] = IGNORE_COLOR
    return out


def save_mask_png(mask: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a mask as an 8-bit PNG, hand 255 and background 0; creates parent folders.

    Args:
        mask: (H, W) labels, hand where 1 (bool or 0/255 also accepted).
    """
    from PIL import Image

    return atomic_save_image(Image.fromarray(_hand(mask).astype(np.uint8) * 255, mode="L"), path)


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_path: str | os.PathLike[str], dpi: float) -> Path:

    return atomic_save_figure(fig, out_path, dpi=dpi, facecolor="white")


def resize_photo(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 photo resized bilinearly (PIL) to ``hw`` = (h, w), as the figures
    draw it next to a mask of that size."""
    from PIL import Image

    h, w = hw
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def _two_panel_figure(left: np.ndarray, right: np.ndarray, titles: Sequence[str]) -> Figure:
    """A figure with two image panels side by side, room above for a title and below for
    a legend; the panel height follows the images' aspect (within 2.5 to 9 inches)."""
    h, w = right.shape[:2]
    panel_w = 6.0
    panel_h = min(max(panel_w * h / w, 2.5), 9.0)  # imshow keeps the aspect inside
    fig = _new_figure(2 * panel_w + 0.6, panel_h + 1.5)
    fig.subplots_adjust(
        left=0.02,
        right=0.98,
        top=1 - 0.8 / (panel_h + 1.5),
        bottom=0.65 / (panel_h + 1.5),
        wspace=0.05,
    )
    axes = fig.subplots(1, 2)
    for ax, img, sub in zip(axes, (left, right), titles):
        ax.imshow(img, interpolation="antialiased")
        ax.set_title(sub, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _scores_heading(title: str, iou: float | None, bf: float | None) -> str:
    """``title`` followed by "IoU 0.9734  BF 0.9512" for the scores given ("" if none)."""
    scores = [
        f"{name} {'n/a' if math.isnan(v) else f'{v:.4f}'}"
        for name, v in (("IoU", iou), ("BF", bf))
        if v is not None
    ]
    return "   ".join(s for s in (title, "  ".join(scores)) if s)


def _comparison_legend(fig: Figure, comp: np.ndarray, split_errors: bool) -> None:
    """One row of colour patches below the panels, naming every colour of the figure."""
    from matplotlib.patches import Patch

    def patch(color: Sequence[int], label: str) -> Patch:
        return Patch(facecolor=np.asarray(color) / 255, edgecolor="0.3", label=label)

    handles = [
        patch(HAND_COLOR, "predicted hand (left)"),
        patch(CORRECT_HAND_COLOR, "hand found"),
        patch(CORRECT_BACKGROUND_COLOR, "background correct"),
    ]
    if split_errors:
        handles += [patch(FALSE_HAND_COLOR, "false hand"), patch(MISSED_HAND_COLOR, "missed hand")]
    else:
        handles.append(patch(MISMATCH_COLOR, "mismatch"))
    if np.any(np.all(comp == IGNORE_COLOR, axis=2)):
        handles.append(patch(IGNORE_COLOR, "not labelled"))
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=len(handles),
        frameon=False,
        fontsize=10,
        handlelength=1.4,
        columnspacing=1.5,
    )


def comparison_figure(
    image: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    out_path: str | os.PathLike[str],
    *,
    title: str = "",
    iou: float | None = None,
    bf: float | None = None,
    split_errors: bool = False,
    dpi: float = 100,
) -> Path:
    """Save the seed's test figure as PNG.

    Left: the photo with the predicted hand overlaid; right: :func:`comparison_image`.
    The title carries ``title`` and, when given, "IoU 0.9734  BF 0.9512". A legend
    explains the colours.

    Args:
        image: (H, W, 3) photo (any size: resized to the masks' size if it differs).
        pred: (H, W) predicted labels, hand where 1.
        gt: (H, W) true labels (255 = ignore).
        out_path: PNG to write (parent folders are created).

    Returns:
        ``out_path`` as a Path.
    """
    comp = comparison_image(pred, gt, split_errors=split_errors)
    photo = _rgb(image)
    if photo.shape[:2] != comp.shape[:2]:
        photo = resize_photo(photo, comp.shape[:2])
    left = overlay(photo, _hand(pred))
    fig = _two_panel_figure(
        left, comp, ("Prediction overlaid on the photo", "Prediction vs. ground truth")
    )
    heading = _scores_heading(title, iou, bf)
    if heading:
        fig.suptitle(heading, fontsize=13, fontweight="bold")
    _comparison_legend(fig, comp, split_errors)
    return _save(fig, out_path, dpi)


def confusion_figure(
    result_or_cm: Mapping[str, Any] | np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str] | None,
    out_path: str | os.PathLike[str],
    *,
    normalized: bool = True,
    dpi: float = 100,
) -> Path:
    """Save a heatmap of the confusion matrix with percent and count in every cell.

    Args:
        result_or_cm: a :meth:`SegmentationMetrics.compute` result (its ``"confusion"``)
            or a (C, C) count matrix, rows = true class.
        class_names: C names; None takes them from the result, else "class i".
        normalized: colour and percentages by row (share of each true class);
            otherwise colour by count and show percentages of all pixels.
    """
    from matplotlib.colors import Normalize

    if isinstance(result_or_cm, Mapping):
        cm = np.asarray(result_or_cm["confusion"], dtype=np.float64)
        if class_names is None:
            class_names = result_or_cm.get("class_names")
    else:
        cm = np.asarray(result_or_cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {cm.shape}")
    c = cm.shape[0]
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for a {c}x{c} confusion matrix")
    with np.errstate(invalid="ignore", divide="ignore"):
        share = cm / cm.sum(axis=1, keepdims=True) if normalized else cm / cm.sum()
    values = share if normalized else cm

    size = 1.6 * c + 2.2
    fig = _new_figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    shown = np.nan_to_num(values)
    norm = Normalize(vmin=0.0, vmax=1.0 if normalized else max(float(shown.max()), 1.0))
    im = ax.imshow(shown, cmap="Blues", norm=norm)
    for i in range(c):
        for j in range(c):
            pct = "n/a" if math.isnan(share[i, j]) else f"{100 * share[i, j]:.2f}%"
            dark = norm(shown[i, j]) > 0.55
            ax.text(
                j,
                i,
                f"{pct}\n({int(cm[i, j]):,} px)",
                ha="center",
                va="center",
                fontsize=11,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(c), names)
    ax.set_yticks(range(c), names, rotation=90, va="center")
    ax.set_xlabel("Predicted class", fontsize=11)
    ax.set_ylabel("True class", fontsize=11)
    ax.set_title(
        "Confusion matrix" + (" (row-normalised)" if normalized else " (pixels)"), fontsize=12
    )
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if normalized:
        cbar.set_label("share of the true class")
    fig.tight_layout()
    return _save(fig, out_path, dpi)


def _read_rows(rows: Sequence[Mapping[str, Any]] | str | os.PathLike[str]) -> list[dict]:
    if isinstance(rows, str | os.PathLike):
        with open(rows, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return [dict(r) for r in rows]


def _num(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        v = v.strip()
        if not v:
            return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _smooth(y: np.ndarray) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard draws it); NaNs skipped."""
    # span grows with the run so the line stays readable: ~3 points for 100, 40 for 1000
    span = min(max(len(y) / 25, 3.0), 100.0)
    weight = 1 - 2 / (span + 1)
    out = np.full_like(y, np.nan)
    acc, norm = 0.0, 0.0
    for i, v in enumerate(y):
        if math.isnan(v):
            continue
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


_HISTORY_COLUMNS = ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc")


def _history_columns(data: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """``metrics.csv`` rows as one float column per quantity (NaN where a cell is empty)."""
    return {k: np.array([_num(r.get(k)) for r in data], dtype=np.float64) for k in _HISTORY_COLUMNS}


def _iterations(step: np.ndarray, is_train: np.ndarray) -> np.ndarray:
    """The iteration of every row: ``step`` where given; else training rows count 1, 2, ...
    and a validation row takes the iteration of the row before it."""
    step = step.copy()
    last = 0.0
    count = 0
    for i in range(len(step)):  # fill missing iterations in row order
        if is_train[i]:
            count += 1
        if math.isnan(step[i]):
            step[i] = float(count) if is_train[i] else last
        last = step[i]
    return step


def _plot_history_panel(
    ax: Any,
    col: dict[str, np.ndarray],
    step: np.ndarray,
    is_train: np.ndarray,
    kind: str,
    style: tuple[str, str, float],
) -> None:
    """One panel (``kind`` "acc" or "loss"): raw and smoothed training line, validation
    dashes with markers, or "no data"."""
    color, label, factor = style
    tr = is_train & ~np.isnan(col[f"train_{kind}"])
    y = col[f"train_{kind}"][tr] * factor
    x = step[tr]
    if y.size:
        ax.plot(x, y, color=color, alpha=0.3, lw=1, label="Training")
        ax.plot(x, _smooth(y), color=color, lw=2, label="Training (smoothed)")
    va = ~np.isnan(col[f"val_{kind}"])
    if va.any():
        ax.plot(
            step[va],
            col[f"val_{kind}"][va] * factor,
            "--o",
            color=_VAL_COLOR,
            lw=1.2,
            ms=5,
            mfc="white",
            mew=1.5,
            label="Validation",
        )
    ax.set_ylabel(label)
    ax.grid(True, color="0.9")
    if y.size or va.any():
        ax.legend(loc="best", fontsize=9, framealpha=0.9)
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")


def _epoch_ends(
    epochs: np.ndarray, step: np.ndarray, is_train: np.ndarray
) -> list[tuple[int, float]]:
    """(epoch, its last iteration) for each epoch that has training rows, in order."""
    ends = []
    for e in np.unique(epochs[is_train & ~np.isnan(epochs)]):
        ends.append((int(e), float(np.nanmax(step[is_train & (epochs == e)]))))
    return ends


def _mark_epochs(axes: Sequence[Any], ends: list[tuple[int, float]]) -> None:
    """Dotted lines where epochs end; epoch numbers above the top panel (up to 40 epochs)
    and the figure's title."""
    ax_top = axes[0]
    for _, x_end in ends[:-1]:  # the last epoch ends at the right edge anyway
        for ax in axes:
            ax.axvline(x_end, color="0.75", ls=":", lw=0.8, zorder=0)
    if not 0 < len(ends) <= 40:
        ax_top.set_title("Training progress", fontsize=12)
        return
    trans = ax_top.get_xaxis_transform()
    prev = 0.0
    for e, x_end in ends:
        ax_top.text(
            (prev + x_end) / 2,
            1.01,
            f"{e}",
            transform=trans,
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.4",
        )
        prev = x_end
    ax_top.text(
        0, 1.01, "epoch ", transform=ax_top.transAxes, ha="right", va="bottom", fontsize=8,
        color="0.4",
    )  # fmt: skip
    ax_top.set_title("Training progress", fontsize=12, pad=16)


def training_progress_figure(
    rows: Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    dpi: float = 100,
) -> Path:
    """Save a MATLAB-style training-progress figure: accuracy (%) above, loss below.

    Training values are drawn per iteration (light raw line, dark smoothed line);
    validation values as a black dashed line with a marker at the iteration where each
    validation ran. Dotted vertical lines mark where each epoch ended.

    Args:
        rows: ``metrics.csv`` rows (dicts) or the path to it. Columns: ``epoch``,
            ``step`` (global iteration, 1-based), ``train_loss``, ``train_acc``,
            ``val_loss``, ``val_acc``; empty or missing cells are skipped. Without
            ``step``, training rows are numbered 1, 2, ... and a validation row takes the
            iteration of the training row before it. Accuracies in [0, 1] are shown
            as percent.
    """
    col = _history_columns(_read_rows(rows))
    is_train = ~np.isnan(col["train_loss"]) | ~np.isnan(col["train_acc"])
    step = _iterations(col["step"], is_train)

    accs = np.concatenate([col["train_acc"], col["val_acc"]])
    finite = accs[~np.isnan(accs)]
    scale = 100.0 if finite.size and finite.max() <= 1.0 else 1.0

    # one panel per quantity that has data (accuracy above loss); loss alone if neither
    style = {
        "acc": (_ACC_COLOR, "Accuracy (%)" if scale == 100.0 else "Accuracy", scale),
        "loss": (_LOSS_COLOR, "Loss", 1.0),
    }
    kinds = [
        k for k in style if (~np.isnan(col[f"train_{k}"]) | ~np.isnan(col[f"val_{k}"])).any()
    ] or ["loss"]
    fig = _new_figure(10, 1.0 + 3.0 * len(kinds))
    axes = list(fig.subplots(len(kinds), 1, sharex=True, squeeze=False)[:, 0])
    for ax, kind in zip(axes, kinds):
        _plot_history_panel(ax, col, step, is_train, kind, style[kind])
    if "acc" in kinds and scale == 100.0:  # no room above 100 % wasted
        ax = axes[kinds.index("acc")]
        ax.set_ylim(top=min(ax.get_ylim()[1], 101.0))
    _mark_epochs(axes, _epoch_ends(col["epoch"], step, is_train))
    axes[-1].set_xlabel("Iteration")
    fig.tight_layout()
    return _save(fig, out_path, dpi)


def class_frequency_figure(
    names: Sequence[str],
    frequencies: Sequence[float],
    out_path: str | os.PathLike[str],
    *,
    dpi: float = 100,
) -> Path:
    """Save a bar chart of class frequencies (shares in [0, 1] are shown as percent)."""
    f = np.asarray(frequencies, dtype=np.float64)
    if len(names) != f.size:
        raise ValueError(f"{len(names)} names for {f.size} frequencies")
    percent = bool(f.size and np.nanmax(f) <= 1.0)
    y = f * 100 if percent else f
    fig = _new_figure(max(4.0, 1.3 * f.size + 2), 4)
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(range(f.size), y, color=[_ACC_COLOR, _LOSS_COLOR] * f.size, width=0.6)
    ax.bar_label(bars, labels=[f"{v:.2f}%" if percent else f"{v:.4g}" for v in y], padding=3)
    ax.set_xticks(range(f.size), list(names))
    ax.set_ylabel("share of pixels (%)" if percent else "frequency")
    ax.set_title("Class frequency")
    ax.set_ylim(0, (np.nanmax(y) if y.size else 1) * 1.15 or 1)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _save(fig, out_path, dpi)
