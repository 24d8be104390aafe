"""Prediction on files: images, folders, globs and videos (the ``handseg predict`` command).

:func:`expand_inputs` turns files, folders and globs into a list of paths,
:func:`predict_paths` writes a mask and an overlay per image, :func:`predict_video` writes
an overlay video from any ``cv2.VideoCapture`` source (a file or a camera index), and
:func:`predict_inputs` does it for a command line's inputs: photos through
:func:`predict_paths`, videos (and folders of frames with ``clip``) through
:func:`handseg.infer.clips.predict_clip` (per-frame masks, hands tracked, .pose).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from handseg.core.constants import IMAGE_EXTS, VIDEO_EXTS
from handseg.core.errors import HandsegError
from handseg.core.imaging import natural_key, read_image
from handseg.core.io import atomic_save_image, atomic_write_json
from handseg.core.outputs import clip_files, hands_file, instance_file, mask_file, overlay_file
from handseg.core.viz import overlay, save_mask_png
from handseg.infer.clip_io import VideoSink, open_capture
from handseg.infer.clips import predict_clip
from handseg.infer.predictor import Predictor

__all__ = ["expand_inputs", "has_glob", "is_video", "predict_inputs", "predict_paths",
           "predict_video"]  # fmt: skip

log = logging.getLogger(__name__)


def is_video(path: str | Path) -> bool:
    """True when ``path`` has a video extension (:data:`VIDEO_EXTS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTS


def has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _media_in(paths: Iterable[Path], where: str) -> list[Path]:
    """The images and videos among ``paths`` in natural order; others skipped with a warning."""

    keep, skipped = [], []
    for p in paths:
        if p.name.startswith(".") or not p.is_file():
            continue
        ext = p.suffix.lower()
        (keep if ext in IMAGE_EXTS or ext in VIDEO_EXTS else skipped).append(p)
    if skipped:
        names = ", ".join(p.name for p in sorted(skipped, key=lambda p: natural_key(p.name))[:5])
        more = f", ... ({len(skipped)} in all)" if len(skipped) > 5 else ""
        log.warning("skipping %d non-image file(s) in %s: %s%s", len(skipped), where, names, more)
    return sorted(keep, key=lambda p: natural_key(str(p)))


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as exc:  # e.g. no read permission
        raise HandsegError(
            f"cannot list folder {folder}: {exc.strerror or exc}; check its permissions"
        ) from None


def _glob(pattern: str) -> list[Path]:
    """Matches of a glob pattern. ``**`` does not descend into symbolic links to folders
    (``glob.glob`` does, and a folder holding two links to itself then never finishes)."""
    parts = Path(pattern).parts
    k = next((i for i, part in enumerate(parts) if has_glob(part)), len(parts))
    root = Path(*parts[:k]) if k else Path(".")
    try:
        return sorted(root.glob(str(Path(*parts[k:]))))
    except (OSError, ValueError) as exc:
        log.warning("cannot expand %s: %s", pattern, exc)
        return []


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Turn command-line inputs into image and video files, in the order given.

    Each input is a file (kept whatever its extension, so a misnamed image still gets a
    try), a folder (its images and videos, not recursive, in natural sort order), or a glob
    pattern such as ``photos/*.jpg`` or ``data/**/*.png`` (for when the shell did not expand
    it; matches in natural order). Non-images inside folders and glob matches are skipped
    with one warning; an input that matches nothing gets a warning. Files listed twice are
    kept once.

    Raises:
        HandsegError: nothing usable was found.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for raw in inputs:
        p = Path(raw)
        if p.is_file():
            add(p)
        elif p.is_dir():
            found = _media_in(_listdir(p), str(p))
            if not found:
                log.warning("no images or videos in folder %s", p)
            for f in found:
                add(f)
        elif has_glob(str(raw)):
            matches = _glob(str(raw))
            files = _media_in([m for m in matches if m.is_file()], f"matches of {raw!r}")
            for d in (m for m in matches if m.is_dir()):
                files += _media_in(_listdir(d), str(d))
            if not files:
                log.warning("no images or videos match %s", raw)
            for f in files:
                add(f)
        else:
            log.warning("skipping %s: no such file or folder", raw)
    if not out:
        raise HandsegError(
            f"no images or videos found in {', '.join(map(str, inputs)) or 'the inputs'}; "
            "pass image or video files, folders or glob patterns"
        )
    return out


class _Names:
    """Output stems that never repeat within one run: ``a``, ``a-1``, ``a-2`` ..."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, stem: str) -> str:
        name, k = stem, 0
        while name.lower() in self.used:
            k += 1
            name = f"{stem}-{k}"
        self.used.add(name.lower())
        return name


def _write_overlay(image: np.ndarray, mask: np.ndarray, path: Path) -> None:

    atomic_save_image(overlay(image, mask), path, quality=90)


def write_instances(result: Any, out: Path, stem: str) -> Path:
    """``<stem>_hand<i>.png`` (0/255) per hand and ``<stem>_hands.json``: for each hand its
    box (x0, y0, x1, y1 px), handedness (the person's left/right), scores, 21 landmarks
    and mask file; ``[]`` when no hand was found."""
    hands = []
    for i, (hand, mask) in enumerate(zip(result.hands, result.instances)):
        path = save_mask_png(mask, instance_file(out, stem, i))
        hands.append({"index": i, "mask": path.name, **hand.to_json()})
    doc = {"image_size": list(result.mask.shape), "hands": hands}
    return atomic_write_json(hands_file(out, stem), doc)


def predict_paths(
    predictor: Predictor,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    batch_size: int = 4,
    overlay: bool = True,
    progress: bool = True,
    instances: bool = False,
) -> list[dict[str, Any]]:
    """Predict every image file and write ``<stem>_mask.png`` (0/255) and
    ``<stem>_overlay.jpg`` into ``out_dir``, both at the image's own resolution.
    ``instances`` (a predictor with the hand detector only) also writes one
    ``<stem>_hand<i>.png`` per hand and ``<stem>_hands.json`` (:func:`write_instances`).

    Two inputs with the same stem get ``<stem>-1``, ``<stem>-2`` ... instead of overwriting
    each other (logged). An unreadable file gets a one-line warning and is skipped.

    Returns:
        One record per input, in input order: ``{"input": Path, "ok": bool, "mask": Path,
        "overlay": Path | None, "size": (H, W), "hand_fraction": float}`` for successes,
        ``{"input": Path, "ok": False, "error": str}`` for failures.
    """
    if instances and not hasattr(predictor, "last"):
        raise HandsegError("--instances needs the hand detector: add --detector mediapipe")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = _Names()
    records: dict[int, dict[str, Any]] = {}
    pending: deque[tuple[int, Path, np.ndarray]] = deque()  # read, awaiting their mask

    def readable() -> Iterator[np.ndarray]:
        for i, p in enumerate(map(Path, paths)):
            try:
                image = read_image(p)
            except HandsegError as exc:
                log.warning("skipped: %s", exc)
                records[i] = {"input": p, "ok": False, "error": str(exc)}
                bar.update(1)
                continue
            pending.append((i, p, image))
            yield image

    with (
        logging_redirect_tqdm(),  # warnings print above the bar, not through it
        tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar,
    ):
        # predict_many consumes at most one batch ahead, so `pending` stays short and its
        # head is always the image whose mask comes out next.
        for mask in predictor.predict_many(readable(), batch_size=batch_size):
            i, p, image = pending.popleft()
            stem = names.take(p.stem)
            if stem != p.stem:
                log.info("%s: another input is also called %s; writing %s_*", p, p.stem, stem)
            mask_path = save_mask_png(mask, mask_file(out, stem))
            overlay_path = None
            if overlay:
                overlay_path = overlay_file(out, stem)
                _write_overlay(image, mask, overlay_path)
            records[i] = {
                "input": p,
                "ok": True,
                "mask": mask_path,
                "overlay": overlay_path,
                "size": tuple(mask.shape),
                "hand_fraction": float(mask.mean()),
            }
            if instances:
                records[i]["hands"] = write_instances(predictor.last, out, stem)
            bar.update(1)
    return [records[i] for i in sorted(records)]


def predict_video(
    predictor: Predictor,
    source: str | Path | int,
    out_path: str | Path | None,
    *,
    progress: bool = True,
    show: bool = False,
    batch_size: int = 1,
    max_frames: int | None = None,
) -> dict[str, Any]:
    """Overlay the predicted hand on every frame of a video and write it as MP4 (mp4v).

    Args:
        predictor: the model.
        source: a video file, or a camera index (int) as ``cv2.VideoCapture`` takes it.
        out_path: the ``.mp4`` to write at the source's frame rate (30 fps when the source
            does not say), or None to write nothing (e.g. camera preview with ``show``).
        show: also display each overlaid frame in a window; ``q`` or Esc stops.
        batch_size: frames per network call (1 keeps latency lowest for a camera).
        max_frames: stop after this many frames.

    Returns:
        ``{"input", "output", "frames", "fps" (frames processed per second, reading and
        writing included), "source_fps", "size": (H, W)}``.

    Raises:
        HandsegError: the source cannot be opened or yields no frame, or the output
        cannot be written.
    """
    name = f"camera {source}" if isinstance(source, int) else str(source)
    cap = open_capture(source, name)
    fps, total = _frame_rate(cap), _frame_count(cap, max_frames)
    frames: deque[np.ndarray] = deque()  # RGB frames awaiting their mask
    sink = VideoSink(out_path, fps, show)
    written = 0
    start = time.perf_counter()
    try:
        bar = tqdm(total=total or None, desc=Path(name).name, unit="frame", disable=not progress)
        with bar:
            reader = _read_frames(cap, frames, max_frames, stop=lambda: sink.stopped)
            for mask in predictor.predict_many(reader, batch_size=batch_size):
                frame = frames.popleft()
                sink.put(cv2.cvtColor(overlay(frame, mask), cv2.COLOR_RGB2BGR))
                written += 1
                bar.update(1)
    finally:
        cap.release()
        sink.close()
    elapsed = time.perf_counter() - start
    if written == 0:
        raise HandsegError(f"could not read any frame from {name}; check the file or camera")
    return {
        "input": source,
        "output": Path(out_path) if out_path is not None else None,
        "frames": written,
        "fps": written / elapsed if elapsed > 0 else float("inf"),
        "source_fps": fps,
        "size": sink.size,
    }


def _frame_rate(cap: cv2.VideoCapture) -> float:
    """The source's frame rate, 30 fps where it does not say (or says nonsense)."""
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 0 < fps < 1000 else 30.0


def _frame_count(cap: cv2.VideoCapture, max_frames: int | None) -> int:
    """Frames to expect (0: unknown, e.g. a camera), capped at ``max_frames``."""
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if max_frames is not None:
        total = min(total, max_frames) if total > 0 else max_frames
    return total


def _read_frames(
    cap: cv2.VideoCapture,
    frames: deque[np.ndarray],
    max_frames: int | None,
    stop: Callable[[], bool],
) -> Iterator[np.ndarray]:
    """RGB frames until the source ends, ``max_frames`` are read or ``stop()``; each is
    also appended to ``frames`` (the caller pops it when its mask comes out)."""
    n = 0
    while not stop() and (max_frames is None or n < max_frames):
        ok, bgr = cap.read()
        if not ok:
            return
        n += 1
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        frames.append(rgb)
        yield rgb


def predict_inputs(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    batch_size: int = 4,
    overlay: bool = True,
    progress: bool = True,
    instances: bool = False,
    clip: bool = False,
    **clip_options: Any,
) -> list[dict[str, Any]]:
    """``handseg predict``: expand ``inputs`` (:func:`expand_inputs`), write masks and
    overlays for the images (:func:`predict_paths`) and the per-frame outputs of every
    video (:func:`handseg.infer.clips.predict_clip`, hands tracked). With ``clip`` each
    folder input is one clip of frames instead of a folder of photos. ``clip_options``
    (``mask_video``, ``fps``, ``smooth``, ``max_frames``) go to ``predict_clip``. A clip
    that fails gets a warning and is skipped.

    Returns:
        The image records, then one record per clip: ``{"input", "ok", "output" (its
        summary file), "frames", "fps" (frames per second end to end), "summary"}`` or
        ``{"input", "ok": False, "error"}``.
    """
    folders = [Path(i) for i in inputs if clip and Path(i).is_dir()]
    rest = [i for i in inputs if not (clip and Path(i).is_dir())]
    paths = expand_inputs(rest) if rest else []
    images = [p for p in paths if not is_video(p)]
    clips = [p for p in paths if is_video(p)] + folders
    records = (
        predict_paths(
            predictor,
            images,
            out_dir,
            batch_size=batch_size,
            overlay=overlay,
            progress=progress,
            instances=instances,
        )
        if images
        else []
    )
    names = _Names()
    for c in clips:
        stem = names.take(c.stem if c.is_file() else c.name)
        try:
            info = predict_clip(predictor, c, out_dir, stem, instances=instances,
                                overlay=overlay, progress=progress, **clip_options)  # fmt: skip
        except HandsegError as exc:
            log.warning("skipped: %s", exc)
            records.append({"input": c, "ok": False, "error": str(exc)})
            continue
        if not info["ok"]:
            log.warning("skipped: %s", info["error"])
            records.append({"input": c, "ok": False, "error": info["error"]})
            continue
        records.append({"input": c, "ok": True, "output": clip_files(Path(out_dir), stem).summary,
                        "frames": info["frames"], "fps": info["frames_per_second"] or 0.0,
                        "summary": info})  # fmt: skip
    return records
