"""Clips: per-frame masks, per-hand masks and hand landmarks, with hands tracked.

:class:`ClipSegmenter` is the per-frame work on a clip: the hand tracker
(:class:`handseg.infer.tracking.HandTracker`: identities, gaps, smoothed landmarks), the
pipeline's refiner on the tracked hands (:meth:`handseg.infer.pipeline.HandPipeline.segment_hands`)
and, with ``smooth_masks``, the mask smoother (:class:`handseg.infer.tracking.MaskSmoother`). A whole-image network
(no detector) runs frame by frame.

:func:`predict_clip` runs it over a clip (:func:`handseg.infer.clip_io.open_clip`) and writes
the files of :func:`handseg.core.outputs.clip_files`:

- ``<stem>_masks/000000.png`` ... (0/255; or ``<stem>_masks.mkv``, lossless FFV1, with
  ``mask_video``): frame ``i`` is input frame ``i``; a frame that could not be read gets an
  empty mask;
- with ``instances``: ``<stem>_masks_left`` / ``<stem>_masks_right``, the same per hand;
- ``<stem>.pose`` (pose-format: ``LEFT_HAND_LANDMARKS`` and ``RIGHT_HAND_LANDMARKS``, 21
  points x, y, z in pixels, confidence the hand's presence score, 0 where it is not seen;
  one frame per input frame at the clip's rate);
- ``<stem>_hands.jsonl``: one line per frame ``{"frame", "time", "ok", "error", "hands":
  [{"side", "track", "box", "handedness", "handedness_score", "score", "presence",
  "landmarks"}]}``;
- ``<stem>_overlay.mp4`` (unless ``overlay`` is off) and last ``<stem>_clip.json``: what was
  read (frames, bad frames, truncation, variable frame rate), the frames per side and the
  speed.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from handseg.core.io import atomic_write, atomic_write_json
from handseg.core.outputs import CLIP_SIDES, ClipFiles, clip_files
from handseg.core.viz import overlay as overlay_image
from handseg.infer.clip_io import (
    ClipSource,
    Frame,
    MaskFrames,
    VideoSink,
    open_clip,
    write_pose,
)
from handseg.infer.detect import DETECTOR_MODES
from handseg.infer.tracking import HandTracker, MaskSmoother, TrackedHand

__all__ = ["ClipResult", "ClipSegmenter", "predict_clip"]

log = logging.getLogger(__name__)


@dataclass
class ClipResult:
    """One frame's answer: the (H, W) uint8 0/1 mask, the tracked hands (left first) and
    one mask per side seen."""

    mask: np.ndarray
    hands: list[TrackedHand] = field(default_factory=list)
    instances: dict[str, np.ndarray] = field(default_factory=dict)


class ClipSegmenter:
    """Frames of one clip -> :class:`ClipResult`, in order (state carries over frames).

    ``predictor``: what ``handseg predict`` loaded (:func:`handseg.infer.pipeline.load_segmenter`):
    a hand-detector pipeline runs with its video settings (fast detection, the colour
    refiner unless the model brings its own) and the tracker; a whole-image network runs
    on each frame. ``smooth`` False turns the landmark smoothing of the outputs off;
    ``smooth_masks`` blends each hand's mask with its previous one carried along its
    motion (:class:`handseg.infer.tracking.MaskSmoother`; off by default: on the benchmark
    clips it cost hand IoU, 0.819 -> 0.812, BENCHMARKS.md). Identities are always tracked."""

    def __init__(self, predictor: Any, *, fps: float = 30.0, smooth: bool = True,
                 smooth_masks: bool = False,
                 tracker_options: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.predictor = predictor
        self.pipeline = None
        if hasattr(predictor, "for_video"):
            self.pipeline = predictor.for_video().pipeline
            self.tracker = HandTracker(
                self.pipeline.detector, fps=fps, options=DETECTOR_MODES[self.pipeline.mode],
                smooth=smooth, **(tracker_options or {}),
            )  # fmt: skip
            self.smoother = MaskSmoother() if smooth_masks else None

    @property
    def detects_hands(self) -> bool:
        return self.pipeline is not None

    def __call__(self, rgb: np.ndarray) -> ClipResult:
        if self.pipeline is None:
            return ClipResult(self.predictor.predict(rgb))
        hands = self.tracker(rgb)
        # the refiner gets this frame's own landmarks (smoothed ones lag a moving hand and
        # misplace its mask: hand IoU 0.86 -> 0.85-0.80 measured); the outputs get smoothed ones
        result = self.pipeline.segment_hands(rgb, [t.raw for t in hands])
        if self.smoother is not None:
            mask, instances = self.smoother(hands, result.instances, rgb.shape[:2])
        else:
            mask = result.mask
            instances = {t.side: m for t, m in zip(hands, result.instances)}
        return ClipResult(mask, hands, instances)


class _ClipWriter:
    """The outputs of one clip, frame by frame (opened at the first frame's size)."""

    def __init__(self, files: ClipFiles, fps: float, *, mask_video: bool, instances: bool,
                 overlay: bool, pose: bool, show: bool = False) -> None:  # fmt: skip
        self.files, self.fps = files, fps
        files.summary.parent.mkdir(parents=True, exist_ok=True)
        files.summary.unlink(missing_ok=True)  # the clip is complete only when it is back
        self.masks = MaskFrames(files.masks, fps, video=mask_video)
        self.hands = (
            {s: MaskFrames(p, fps, video=mask_video) for s, p in files.hands.items()}
            if instances
            else {}
        )
        self.overlay = VideoSink(files.overlay if overlay else None, fps, show) if (
            overlay or show) else None  # fmt: skip
        self.pose = pose
        self.stack = ExitStack()  # the .jsonl, committed when the clip ends
        self.jsonl = self.stack.enter_context(atomic_write(files.frames, "w", encoding="utf-8"))
        self.data: list[np.ndarray] = []  # per frame (1, 42, 3)
        self.conf: list[np.ndarray] = []  # per frame (1, 42)
        self.size: tuple[int, int] | None = None
        self.seen = dict.fromkeys(CLIP_SIDES, 0)
        self.share, self.with_hands = 0.0, 0  # sum of hand shares; frames with a hand

    def put(self, frame: Frame, result: ClipResult | None, size: tuple[int, int]) -> None:
        h, w = size
        mask = result.mask if result is not None else np.zeros((h, w), np.uint8)
        self.masks.put(mask)
        for side, sink in self.hands.items():
            got = result.instances.get(side) if result is not None else None
            sink.put(got if got is not None else np.zeros((h, w), np.uint8))
        if self.overlay is not None:
            image = frame.image if frame.image is not None else np.zeros((h, w, 3), np.uint8)
            self.overlay.put(cv2.cvtColor(overlay_image(image, mask), cv2.COLOR_RGB2BGR))
        hands = result.hands if result is not None else []
        self.share += float(mask.mean())
        self.with_hands += bool(hands)
        data = np.zeros((1, 21 * len(CLIP_SIDES), 3), np.float32)
        conf = np.zeros((1, 21 * len(CLIP_SIDES)), np.float32)
        for t in hands:
            k = CLIP_SIDES.index(t.side)
            data[0, 21 * k : 21 * (k + 1)] = t.hand.landmarks
            conf[0, 21 * k : 21 * (k + 1)] = max(t.hand.presence, 1e-3)
            self.seen[t.side] += 1
        self.data.append(data)
        self.conf.append(conf)
        line = {"frame": frame.index, "time": None if frame.time is None else round(frame.time, 4),
                "ok": frame.image is not None, "error": frame.error,
                "hands": [t.to_json() for t in hands]}  # fmt: skip
        self.jsonl.write(json.dumps(line) + "\n")

    def close(self, source: ClipSource, *, ok: bool) -> None:
        """Finish the files (the .pose only for a clip that ran to its end)."""
        for sink in (self.masks, *self.hands.values()):
            sink.close()
        if self.overlay is not None:
            self.overlay.close()
        self.stack.close()
        if ok and self.pose and source.size is not None:
            write_pose(self.files.pose, np.stack(self.data), np.stack(self.conf), source.fps,
                       source.size, CLIP_SIDES)  # fmt: skip


def predict_clip(
    predictor: Any,
    source: str | Path | int,
    out_dir: str | Path,
    stem: str,
    *,
    mask_video: bool = False,
    instances: bool = False,
    overlay: bool = True,
    fps: float | None = None,
    max_frames: int | None = None,
    progress: bool = True,
    smooth: bool = True,
    smooth_masks: bool = False,
    show: bool = False,
) -> dict[str, Any]:
    """Segment every frame of a clip and write its outputs (module docstring) under
    ``out_dir`` named after ``stem``. ``show`` also shows the overlaid frames in a window
    (``q`` or Esc stops: the outputs then hold the frames so far).

    Returns the summary written to ``<stem>_clip.json`` (plus ``"ok"``); a clip of which
    no frame could be read returns ``ok`` False and an ``error`` (its summary is written
    too, so that a collection does not retry it).

    Raises:
        HandsegError: the clip cannot be opened, or an output cannot be written.
    """
    src = open_clip(source, fps=fps, max_frames=max_frames)
    files = clip_files(Path(out_dir), stem, mask_video=mask_video)
    seg = ClipSegmenter(predictor, fps=src.fps, smooth=smooth, smooth_masks=smooth_masks)
    writer = _ClipWriter(files, src.fps, mask_video=mask_video, instances=instances,
                         overlay=overlay, pose=seg.detects_hands, show=show)  # fmt: skip
    start, good, ok = time.perf_counter(), 0, False
    total = src.declared or None
    try:
        with (
            logging_redirect_tqdm(),
            tqdm(
                total=total, desc=Path(str(source)).name, unit="frame", disable=not progress
            ) as bar,  # fmt: skip
        ):
            for frame in src:
                result = None
                if frame.image is not None:
                    result = seg(frame.image)
                    good += 1
                if src.size is not None:
                    writer.put(frame, result, src.size)
                bar.update(1)
                if writer.overlay is not None and writer.overlay.stopped:
                    break
        ok = True
    finally:
        src.close()
        writer.close(src, ok=ok)
    elapsed = time.perf_counter() - start
    summary = {"input": str(source), **src.summary(), "good_frames": good,
               "hands_seen": writer.seen, "frames_with_hands": writer.with_hands,
               "hand_share": writer.share / src.count if src.count else 0.0,
               "outputs": _outputs(files, writer),
               "seconds": round(elapsed, 3),
               "frames_per_second": round(src.count / elapsed, 2) if elapsed > 0 else None}  # fmt: skip
    _warn(src, summary)
    atomic_write_json(files.summary, summary)
    if not good:
        return summary | {"ok": False, "error": f"no frame of {source} could be read"}
    return summary | {"ok": True}


def _outputs(files: ClipFiles, writer: _ClipWriter) -> dict[str, Any]:
    out: dict[str, Any] = {"masks": files.masks.name, "frames": files.frames.name}
    if writer.pose and files.pose.is_file():
        out["pose"] = files.pose.name
    if writer.hands:
        out["hands"] = {s: p.name for s, p in files.hands.items()}
    if writer.overlay is not None and writer.overlay.out_path is not None:
        out["overlay"] = files.overlay.name
    return out


def _warn(src: ClipSource, summary: dict[str, Any]) -> None:
    """One console line for what went wrong with the input, if anything did."""
    problems = []
    if summary["bad_frames"]:
        bad = summary["bad_frames"]
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        problems.append(f"{len(bad)} unreadable frame(s) ({shown}; empty masks, recorded)")
    if summary["truncated"]:
        problems.append(f"it ends after {src.count} of the {src.declared} frames its header "
                        "declares (truncated?)")  # fmt: skip
    if summary["variable_frame_rate"]:
        problems.append("variable frame rate (each frame's time is in the .jsonl)")
    if not summary["frames"]:
        problems.append("no frames")
    if problems:
        log.warning("%s: %s", src.name, "; ".join(problems))
