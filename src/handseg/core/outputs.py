"""The files ``handseg predict`` writes for one input, named in one place.

For an input ``<stem>``: ``<stem>_mask.png`` (0/255), ``<stem>_overlay.jpg`` (``.mp4`` for
a video or a camera), and with ``--instances`` ``<stem>_hand<i>.png`` per hand and
``<stem>_hands.json``; a collection adds ``manifest.csv``. A clip (a video, or a folder of
frames with ``--clip``) gets per-frame outputs (:class:`ClipFiles`): ``<stem>_masks/``
(``000000.png`` ...) or ``<stem>_masks.mkv`` (lossless FFV1), per hand
``<stem>_masks_left`` / ``<stem>_masks_right`` (same two forms), ``<stem>.pose``,
``<stem>_hands.jsonl``, ``<stem>_overlay.mp4`` and ``<stem>_clip.json`` (written last: a
clip whose summary exists is complete). Prediction writes them
(:mod:`handseg.infer.media`, :mod:`handseg.infer.collection`); scoring and conversion
recognise them in a folder (:func:`split_predict_folder`), so that a predict output folder
can be passed straight to ``handseg evaluate --pred-masks`` and ``handseg convert``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CLIP_SIDES",
    "MANIFEST",
    "ClipFiles",
    "clip_files",
    "frame_file",
    "PredictFolder",
    "hands_file",
    "instance_file",
    "is_side_file",
    "mask_file",
    "overlay_file",
    "split_predict_folder",
]

MASK, OVERLAY, HANDS = "_mask", "_overlay", "_hands"
MANIFEST = "manifest.csv"
CLIP_SIDES = ("left", "right")
MASKS, POSE, FRAMES_JSONL, CLIP_SUMMARY, MASK_VIDEO = (
    "_masks",
    ".pose",
    "_hands.jsonl",
    "_clip.json",
    ".mkv",
)
_INSTANCE = re.compile(r"^(?P<base>.+)_hand(?P<i>\d+)$", re.IGNORECASE)


def mask_file(out: Path, stem: str) -> Path:
    return out / f"{stem}{MASK}.png"


def overlay_file(out: Path, stem: str, *, video: bool = False) -> Path:
    return out / f"{stem}{OVERLAY}{'.mp4' if video else '.jpg'}"


def instance_file(out: Path, stem: str, i: int) -> Path:
    return out / f"{stem}_hand{i}.png"


def hands_file(out: Path, stem: str) -> Path:
    return out / f"{stem}{HANDS}.json"


def frame_file(folder: Path, i: int) -> Path:
    """Frame ``i`` (from 0) of a folder of per-frame masks."""
    return folder / f"{i:06d}.png"


@dataclass(frozen=True)
class ClipFiles:
    """The outputs of one clip. ``masks`` and ``hands[side]`` are folders of
    :func:`frame_file` PNGs, or ``.mkv`` files with ``mask_video``."""

    masks: Path
    hands: dict[str, Path]
    pose: Path
    frames: Path  # JSON Lines, one line per frame
    overlay: Path
    summary: Path

    def all(self, *, overlay: bool, instances: bool) -> list[Path]:
        """The outputs a finished clip has (the summary last)."""
        paths = [self.masks, self.frames, self.pose]
        paths += list(self.hands.values()) if instances else []
        return paths + ([self.overlay] if overlay else []) + [self.summary]


def clip_files(out: Path, stem: str, *, mask_video: bool = False) -> ClipFiles:
    def masks(suffix: str) -> Path:
        return out / (f"{stem}{suffix}{MASK_VIDEO}" if mask_video else f"{stem}{suffix}")

    return ClipFiles(
        masks=masks(MASKS),
        hands={side: masks(f"{MASKS}_{side}") for side in CLIP_SIDES},
        pose=out / f"{stem}{POSE}",
        frames=out / f"{stem}{FRAMES_JSONL}",
        overlay=overlay_file(out, stem, video=True),
        summary=out / f"{stem}{CLIP_SUMMARY}",
    )


def is_side_file(path: Path) -> bool:
    """A non-image file predict writes beside its masks (the hands JSON, the manifest, a
    clip's pose, frames and summary files)."""
    name = path.name.lower()
    if name.endswith((POSE, FRAMES_JSONL, CLIP_SUMMARY)):
        return True
    return name == MANIFEST or (name.endswith(".json") and path.stem.lower().endswith(HANDS))


@dataclass
class PredictFolder:
    """A folder's image files sorted into predict's outputs."""

    masks: list[Path]  # every image that is not an overlay or a per-hand mask
    overlays: list[Path] = field(default_factory=list)
    instances: dict[str, list[Path]] = field(default_factory=dict)  # mask stem -> hands, by i

    def hands_of(self, mask: Path) -> list[Path]:
        return self.instances.get(mask.stem.lower(), [])


def split_predict_folder(paths: Iterable[Path]) -> PredictFolder:
    """Sort image files into masks, overlays and per-hand masks. An overlay or a per-hand
    mask counts as one only beside its ``<stem>_mask`` file, so a user's own
    ``x_overlay.png`` or ``x_hand1.png`` without it stays a mask."""
    paths = list(paths)
    stems = {p.stem.lower() for p in paths}
    found = PredictFolder(masks=[])
    for p in paths:
        s = p.stem.lower()
        hand = _INSTANCE.match(s)
        if s.endswith(OVERLAY) and s[: -len(OVERLAY)] + MASK in stems:
            found.overlays.append(p)
        elif hand and hand["base"] + MASK in stems:
            found.instances.setdefault(hand["base"] + MASK, []).append(p)
        else:
            found.masks.append(p)
    for hands in found.instances.values():
        hands.sort(key=lambda p: int(_INSTANCE.match(p.stem)["i"]))
    return found
