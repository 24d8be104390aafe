"""MediaPipe's hand models: where they live and how to get them from PyPI.

The detector stage runs two TFLite files that Google ships inside the ``mediapipe`` 0.10.14
wheel (Apache-2.0): ``palm_detection_full.tflite`` and ``hand_landmark_full.tflite``.
handseg does not install mediapipe itself (it pulls jax, jaxlib and a second OpenCV, and
pins protobuf < 5, which holds onnx back); :func:`fetch_hand_models` downloads that wheel
from the package registry with ``pip download --no-deps``, checks both files' SHA-256
and copies them into :func:`hand_models_dir`. The interpreter is ``ai-edge-litert``
(the ``hands`` extra: ``pip install 'handseg[hands]'``).

Lookup order for the files: ``$HANDSEG_HAND_MODELS``, then the user cache
(``$XDG_CACHE_HOME/handseg/hand-models``, default ``~/.cache/handseg/hand-models``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from handseg.core.errors import HandsegError
from handseg.core.io import atomic_write

__all__ = [
    "LANDMARK_MODEL",
    "MEDIAPIPE_VERSION",
    "PALM_MODEL",
    "fetch_hand_models",
    "find_hand_models",
    "hand_models_dir",
]

MEDIAPIPE_VERSION = "0.10.14"
PALM_MODEL = "palm_detection_full.tflite"
LANDMARK_MODEL = "hand_landmark_full.tflite"
_WHEEL_PATHS = {
    PALM_MODEL: "mediapipe/modules/palm_detection/palm_detection_full.tflite",
    LANDMARK_MODEL: "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
}
SHA256 = {
    PALM_MODEL: "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    LANDMARK_MODEL: "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
}
FETCH_HINT = "run `handseg fetch-hand-models` (downloads the mediapipe wheel from PyPI once)"


def hand_models_dir() -> Path:
    """Where the two model files are kept (``$HANDSEG_HAND_MODELS`` or the user cache)."""
    if os.environ.get("HANDSEG_HAND_MODELS"):
        return Path(os.environ["HANDSEG_HAND_MODELS"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "handseg" / "hand-models"


def find_hand_models() -> tuple[Path, Path]:
    """Paths of (palm model, landmark model); a one-line error saying how to get them."""
    d = hand_models_dir()
    palm, landmark = d / PALM_MODEL, d / LANDMARK_MODEL
    if not (palm.is_file() and landmark.is_file()):
        raise HandsegError(f"MediaPipe hand models not found in {d}: {FETCH_HINT}")
    return palm, landmark


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _extract(wheel: Path, dest: Path) -> list[Path]:
    out = []
    with zipfile.ZipFile(wheel) as z:
        for name, member in _WHEEL_PATHS.items():
            data = z.read(member)
            if _sha256(data) != SHA256[name]:
                raise HandsegError(f"{wheel.name}: {member} has an unexpected SHA-256")
            with atomic_write(dest / name, "wb") as f:
                f.write(data)
            out.append(dest / name)
    return out


def fetch_hand_models(
    dest: str | Path | None = None, *, wheel: str | Path | None = None
) -> list[Path]:
    """Put the two model files into ``dest`` (default :func:`hand_models_dir`).

    Does nothing when both files are already there with the right SHA-256. Otherwise takes
    them from ``wheel`` (a downloaded mediapipe wheel) or downloads one with
    ``pip download mediapipe==0.10.14 --no-deps`` (any platform's wheel holds the same
    files, so a fixed platform tag is asked for).
    """
    dest = Path(dest) if dest is not None else hand_models_dir()
    dest.mkdir(parents=True, exist_ok=True)
    have = [dest / n for n in SHA256]
    if all(p.is_file() and _sha256(p.read_bytes()) == SHA256[p.name] for p in have):
        return have
    if wheel is not None:
        return _extract(Path(wheel), dest)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "--python-version", "3.11",
            "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
            "-d", tmp, f"mediapipe=={MEDIAPIPE_VERSION}",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise HandsegError(f"cannot download mediapipe=={MEDIAPIPE_VERSION}: {last}")
        return _extract(wheels[0], dest)
