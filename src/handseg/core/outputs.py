"""The files ``handseg predict`` writes for one input, named in one place.

For an input ``<stem>``: ``<stem>_mask.png`` (0/255), ``<stem>_overlay.jpg`` (``.mp4`` for
a video or a camera), and with ``--instances`` ``<stem>_hand<i>.png`` per hand and
``<stem>_hands.json``; a collection adds ``manifest.csv``. Prediction writes them
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
    "MANIFEST",
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
_INSTANCE = re.compile(r"^(?P<base>.+)_hand(?P<i>\d+)$", re.IGNORECASE)


def mask_file(out: Path, stem: str) -> Path:
    return out / f"{stem}{MASK}.png"


def overlay_file(out: Path, stem: str, *, video: bool = False) -> Path:
    return out / f"{stem}{OVERLAY}{'.mp4' if video else '.jpg'}"


def instance_file(out: Path, stem: str, i: int) -> Path:
    return out / f"{stem}_hand{i}.png"


def hands_file(out: Path, stem: str) -> Path:
    return out / f"{stem}{HANDS}.json"


def is_side_file(path: Path) -> bool:
    """A non-image file predict writes beside its masks (the hands JSON, the manifest)."""
    name = path.name.lower()
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
