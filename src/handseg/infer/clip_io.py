"""Reading clips frame by frame and writing per-frame outputs.

A *clip* is a video file, a camera, or a folder of frames taken in natural sort order.
:func:`open_clip` gives a :class:`ClipSource` whose frames keep their input index: a frame
that cannot be decoded comes out as a :class:`Frame` without an image and with the reason,
so frame ``i`` of every output is frame ``i`` of the input. A truncated video ends where
its data ends (the frames its header promised but that are not there are counted in
:meth:`ClipSource.summary`, not invented). In a folder of numbered frames a number the
numbering skips is a dropped frame, recorded as a bad frame in its place.

Writers: :class:`MaskFrames` (a folder of ``000000.png`` ... or one lossless FFV1 ``.mkv``;
:func:`read_mask_frames` reads both back), :func:`write_pose` (a ``.pose`` file of the
``pose-format`` package: a hand component per side, frames at the clip's rate, confidence 0
where a hand is not seen).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from handseg.core.constants import IMAGE_EXTS
from handseg.core.errors import HandsegError, check_pixels
from handseg.core.imaging import natural_key, read_image, read_mask
from handseg.core.io import atomic_write
from handseg.core.outputs import MASK_VIDEO, frame_file
from handseg.infer.detect import BONES

__all__ = [
    "HAND_POINTS",
    "ClipSource",
    "Frame",
    "MaskFrames",
    "VideoSink",
    "open_capture",
    "open_clip",
    "pose_header",
    "read_mask_frames",
    "write_pose",
]

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0
"""The frame rate of a folder of frames (unless given) and of a video that does not say."""
MAX_BAD_RUN = 5
"""Consecutive undecodable video frames after which the video is taken to end there."""
HAND_POINTS = (
    "WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP",
    "INDEX_FINGER_MCP", "INDEX_FINGER_PIP", "INDEX_FINGER_DIP", "INDEX_FINGER_TIP",
    "MIDDLE_FINGER_MCP", "MIDDLE_FINGER_PIP", "MIDDLE_FINGER_DIP", "MIDDLE_FINGER_TIP",
    "RING_FINGER_MCP", "RING_FINGER_PIP", "RING_FINGER_DIP", "RING_FINGER_TIP",
    "PINKY_MCP", "PINKY_PIP", "PINKY_DIP", "PINKY_TIP",
)  # fmt: skip
"""MediaPipe's hand landmark names, as pose-format's holistic hands use them."""


@dataclass
class Frame:
    """Frame ``index`` of a clip: its (H, W, 3) uint8 RGB image, or None and ``error``."""

    index: int
    image: np.ndarray | None
    time: float | None = None  # seconds from the clip's start, where the source says
    error: str = ""


class ClipSource:
    """The frames of one clip, in order (:func:`open_clip`). After iterating,
    :meth:`summary` says what was read: frames, bad frames, truncation, frame rate."""

    def __init__(self, name: str, fps: float, declared: int | None) -> None:
        self.name, self.fps, self.declared = name, fps, declared
        self.size: tuple[int, int] | None = None  # (H, W) of the first good frame
        self.count = 0
        self.bad: list[int] = []
        self.times: list[float] = []

    def __iter__(self) -> Iterator[Frame]:
        for frame in self._frames():
            if frame.image is not None:
                if self.size is None:
                    self.size = frame.image.shape[:2]
                elif frame.image.shape[:2] != self.size:
                    h, w = frame.image.shape[:2]
                    sh, sw = self.size
                    frame = Frame(frame.index, None, frame.time,
                                  f"frame is {w} x {h}, the clip {sw} x {sh}")  # fmt: skip
            if frame.image is None:
                self.bad.append(frame.index)
            if frame.time is not None:
                self.times.append(frame.time)
            self.count += 1
            yield frame

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def variable_rate(self) -> bool:
        """True when the frames' times step unevenly (by more than a quarter frame)."""
        if len(self.times) < 3:
            return False
        steps = np.diff(self.times)
        return bool(np.abs(steps - 1.0 / self.fps).max() > 0.25 / self.fps)

    def summary(self) -> dict[str, Any]:
        truncated = self.declared is not None and 0 < self.count < self.declared
        return {
            "frames": self.count,
            "fps": round(self.fps, 4),
            "size": list(self.size) if self.size else None,
            "bad_frames": self.bad,
            "declared_frames": self.declared,
            "truncated": truncated,
            "variable_frame_rate": self.variable_rate(),
        }


class _VideoSource(ClipSource):
    def __init__(self, cap: cv2.VideoCapture, name: str, max_frames: int | None) -> None:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        super().__init__(name, fps if 0 < fps < 1000 else DEFAULT_FPS, declared or None)
        self.cap, self.max_frames = cap, max_frames
        self.stop = False  # set by a viewer window

    def _frames(self) -> Iterator[Frame]:
        i, pending = 0, 0  # pending: failed reads not yet known to be mid-clip
        while not self.stop and (self.max_frames is None or i < self.max_frames):
            ok, bgr = self.cap.read()
            if not ok:
                more = self.declared is not None and i + pending < self.declared
                pending += 1
                if not more or pending > MAX_BAD_RUN:
                    return  # the end, or the data ends here (truncated)
                continue
            for _ in range(pending):  # reads that failed between two good frames
                yield Frame(i, None, None, "cannot decode this frame")
                i += 1
            pending = 0
            ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
            yield Frame(i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ms / 1000 if ms >= 0 else None)
            i += 1

    def close(self) -> None:
        self.cap.release()


_NUMBERED = re.compile(r"(.*?)(\d+)")
"""A frame file's stem: a prefix and its frame number."""


def numbered_slots(files: Sequence[Path]) -> list[Path | None]:
    """The frames of a folder in order, with None where its numbering skips a number
    (``f_0001.png``, ``f_0003.png`` -> [f_0001, None, f_0003]: frame 2 was dropped). Only
    when every name is one prefix + a number, the numbers rise, and at most as many are
    missing as there are files (else numbers are not frame indices: the files as they are)."""
    parts = [_NUMBERED.fullmatch(p.stem) for p in files]
    if not files or not all(parts) or len({(m[1], p.suffix) for m, p in zip(parts, files)}) > 1:
        return list(files)
    numbers = [int(m[2]) for m in parts]
    if any(b <= a for a, b in zip(numbers, numbers[1:])):
        return list(files)
    span = numbers[-1] - numbers[0] + 1
    if span - len(files) > len(files):
        return list(files)
    slots: list[Path | None] = [None] * span
    for n, path in zip(numbers, files):
        slots[n - numbers[0]] = path
    return slots


class _FolderSource(ClipSource):
    def __init__(self, files: Sequence[Path], name: str, fps: float, max_frames: int | None):
        slots = numbered_slots(files)
        files = slots[:max_frames] if max_frames is not None else slots
        super().__init__(name, fps, len(files))
        self.files = files

    def _frames(self) -> Iterator[Frame]:
        for i, path in enumerate(self.files):
            if path is None:
                yield Frame(i, None, i / self.fps, "dropped: the folder's numbering skips it")
                continue
            try:
                image = read_image(path)
            except HandsegError as exc:
                yield Frame(i, None, i / self.fps, str(exc))
                continue
            yield Frame(i, image, i / self.fps)


def open_clip(
    source: str | Path | int, *, fps: float | None = None, max_frames: int | None = None
) -> ClipSource:
    """A video file, a camera index or a folder of frames (images in natural order) as a
    :class:`ClipSource`. ``fps``: the frame rate of a folder (default 30) or one that
    overrides a video's.

    Raises:
        HandsegError: the source does not exist or cannot be opened (one line).
    """
    name = f"camera {source}" if isinstance(source, int) else str(source)
    if not isinstance(source, int) and Path(source).is_dir():
        files = sorted(
            (p for p in Path(source).iterdir()
             if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")),
            key=lambda p: natural_key(p.name),
        )  # fmt: skip
        return _FolderSource(files, name, fps or DEFAULT_FPS, max_frames)
    if not isinstance(source, int) and not Path(source).is_file():
        raise HandsegError(f"clip {source} does not exist; check the path")
    cap = open_capture(source, name)
    src = _VideoSource(cap, name, max_frames)
    if fps:
        src.fps = fps
    return src


def open_capture(source: str | Path | int, name: str) -> cv2.VideoCapture:
    """An opened ``cv2.VideoCapture`` on a video file or camera index whose frames fit the
    pixel budget; one-line :class:`HandsegError` otherwise (FFmpeg's own messages, such as
    "moov atom not found", silenced: ``OPENCV_FFMPEG_LOGLEVEL=24`` shows them again)."""
    if not isinstance(source, int) and not Path(source).is_file():
        raise HandsegError(f"{name} does not exist; check the path")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cap = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not cap.isOpened():
        raise HandsegError(
            f"cannot open camera {source}: no such camera, or it is in use by another program "
            "(try another index, e.g. --camera 1)"
            if isinstance(source, int)
            else f"cannot open {name} with OpenCV: the file is corrupt, empty, not a video, or "
            "uses a codec this OpenCV build cannot decode; convert it to MP4 (H.264) and retry"
        )
    w, h = (int(cap.get(p) or 0) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
    try:
        check_pixels(w, h, f"a frame of {name}")  # the size the stream declares
    except HandsegError:
        cap.release()
        raise
    return cap


class MaskFrames:
    """Per-frame 0/1 masks written as ``folder/000000.png`` ... (0/255), or with
    ``video`` as one lossless FFV1 ``.mkv`` (grey, 0/255) at ``fps``."""

    def __init__(self, path: Path, fps: float, *, video: bool) -> None:
        self.path, self.fps, self.video = Path(path), fps, video
        self.writer: cv2.VideoWriter | None = None
        self.count = 0
        if not video:
            self.path.mkdir(parents=True, exist_ok=True)

    def put(self, mask: np.ndarray) -> None:
        img = (mask > 0).astype(np.uint8) * 255
        if not self.video:
            # 1-bit PNG (read back as 0/255 by OpenCV, PIL and handseg): 4.5x faster to
            # write than 8-bit at compression 1 (0.6 against 2.9 ms at 640 x 480), a third the size
            ok = cv2.imwrite(str(frame_file(self.path, self.count)), img,
                             [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 1])  # fmt: skip
            if not ok:
                raise HandsegError(f"cannot write {frame_file(self.path, self.count)}")
        else:
            if self.writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                h, w = img.shape
                fourcc = cv2.VideoWriter_fourcc(*"FFV1")
                self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (w, h), False)
                if not self.writer.isOpened():
                    raise HandsegError(
                        f"cannot write {self.path}: this OpenCV has no FFV1 encoder; leave out "
                        "--mask-video to write PNG frames"
                    )
            self.writer.write(img)
        self.count += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def read_mask_frames(path: str | Path, *, hand_value: Any = None) -> Iterator[np.ndarray | None]:
    """The (H, W) uint8 0/1 masks of a mask clip: a folder of mask images (natural order,
    read as ``handseg evaluate`` reads masks; None in the place of a number its numbering
    skips, as :func:`numbered_slots` reads frame folders) or a mask video (hand = bright,
    >= 128)."""
    path = Path(path)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS),
                       key=lambda p: natural_key(p.name))  # fmt: skip
        for p in numbered_slots(files):
            yield None if p is None else read_mask(p, hand_value=hand_value)
        return
    if not path.is_file():
        raise HandsegError(f"mask clip {path} does not exist; pass a folder of masks or a video")
    if path.suffix.lower() != MASK_VIDEO:
        log.debug("reading masks from %s (a lossy codec blurs mask edges)", path)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise HandsegError(f"cannot open mask clip {path} with OpenCV")
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            grey = img.max(2) if img.ndim == 3 else img
            yield (grey >= 128).astype(np.uint8)
    finally:
        cap.release()


def pose_header(width: int, height: int, sides: Sequence[str]) -> Any:
    """A pose-format header with one 21-point hand component per side
    (``LEFT_HAND_LANDMARKS``, ``RIGHT_HAND_LANDMARKS``: pose-format's holistic names),
    points X, Y (pixels), Z (pixels, relative to the wrist) and C (confidence)."""
    from pose_format.pose_header import PoseHeader, PoseHeaderComponent, PoseHeaderDimensions
    from pose_format.utils.openpose import hand_colors

    components = [
        PoseHeaderComponent(
            name=f"{side.upper()}_HAND_LANDMARKS",
            points=list(HAND_POINTS),
            limbs=[tuple(b) for b in BONES],
            colors=hand_colors,
            point_format="XYZC",
        )  # fmt: skip
        for side in sides
    ]
    return PoseHeader(0.2, PoseHeaderDimensions(width, height, depth=0), components)


def write_pose(
    path: Path, data: np.ndarray, confidence: np.ndarray, fps: float, size: tuple[int, int],
    sides: Sequence[str],
) -> Path:  # fmt: skip
    """Write ``data`` (T, 1, 21 * len(sides), 3) float32 and ``confidence`` (T, 1, ...)
    as a ``.pose`` file (atomically); needs the ``pose-format`` package (the hands extra)."""
    try:
        from pose_format import Pose
        from pose_format.numpy.pose_body import NumPyPoseBody
    except ImportError:
        raise HandsegError(
            "writing .pose files needs pose-format: pip install 'handseg[hands]'"
        ) from None
    h, w = size
    body = NumPyPoseBody(fps=fps, data=data.astype(np.float32),
                         confidence=confidence.astype(np.float32))  # fmt: skip
    pose = Pose(pose_header(w, h, sides), body)
    with atomic_write(path, "wb") as f:
        pose.write(f)
    return path


class VideoSink:
    """Where overlaid frames go: an MP4 file (opened at the first frame's size) and/or a
    window (``q`` or Esc sets :attr:`stopped`)."""

    WINDOW = "handseg (q to stop)"

    def __init__(self, out_path: str | Path | None, fps: float, show: bool) -> None:
        self.out_path, self.fps, self.show = out_path, fps, show
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None  # (H, W) of the first frame
        self.stopped = False

    def put(self, bgr: np.ndarray) -> None:
        if self.size is None:
            self.size = bgr.shape[:2]
            self._open_writer()
        if self.writer is not None:
            self.writer.write(bgr)
        if self.show:
            self._display(bgr)

    def _open_writer(self) -> None:
        if self.out_path is None:
            return
        Path(self.out_path).parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        h, w = self.size
        self.writer = cv2.VideoWriter(str(self.out_path), fourcc, self.fps, (w, h))
        if not self.writer.isOpened():
            raise HandsegError(
                f"cannot write video {self.out_path}: OpenCV has no mp4v encoder or the "
                "folder is not writable"
            )

    def _display(self, bgr: np.ndarray) -> None:
        try:
            cv2.imshow(self.WINDOW, bgr)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            raise HandsegError(
                "this OpenCV build cannot open windows (opencv-python-headless); drop --show "
                "and open the written video, or pip install opencv-python"
            ) from None
        if key in (ord("q"), 27):
            self.stopped = True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if self.show:
            cv2.destroyAllWindows()
