"""int8 quantisation of the exported network, and the cache of exported and quantised files.

Calibration images are always passed in by the caller (``calibration``: HxWx3 uint8 arrays
or image paths); inference never looks for training data itself. The command line passes
the model's training images (:func:`handseg.data.split.training_images`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch import nn

from handseg.core.errors import HandsegError
from handseg.core.imaging import normalize, read_image
from handseg.infer.export import export_module
from handseg.infer.onnx_file import INPUT_NAME, save_proto, set_metadata
from handseg.model.card import ModelCard

__all__ = [
    "CACHE_KEEP",
    "Calibration",
    "CalibrationImage",
    "cache_dir",
    "cached_export",
    "cached_int8",
    "calibration_batches",
    "prune_cache",
    "quantize_int8",
]

log = logging.getLogger(__name__)

CACHE_KEEP = 8  # ONNX files kept in the cache (exports and int8 copies, least recently used go)
CALIBRATION_AREA = 384 * 512  # calibration images are resized to at most this many pixels
CalibrationImage = np.ndarray | str | Path
"""One calibration image: an (H, W, 3) uint8 RGB array or the path of an image file."""
Calibration = Sequence[CalibrationImage] | Callable[[ModelCard], Sequence[CalibrationImage]]
"""What a caller passes as ``calibration``: the images, or a function of the model card that
returns them (called only when an int8 copy is to be built), e.g.
:func:`handseg.data.split.training_images`."""


def cache_dir() -> Path:
    """Where exported and quantised ONNX files are cached: ``$HANDSEG_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/handseg`` or ``~/.cache/handseg``."""
    env = os.environ.get("HANDSEG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "handseg"


def _model_key(model: nn.Module, card: ModelCard) -> str:
    """A content hash of the weights, architecture and preprocessing."""
    h = hashlib.sha256()
    cfg = getattr(model, "cfg", None)
    h.update(json.dumps(cfg.to_dict() if cfg is not None else {}, sort_keys=True).encode())
    norm = {"mean": list(card.mean), "std": list(card.std)}
    h.update(json.dumps([norm, list(card.input_size)]).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def _file_key(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()[:20]


def _calibration_key(images: Sequence[CalibrationImage]) -> str:
    """A hash of the calibration set: array contents, or file paths with size and mtime
    (files are not read for the key)."""
    h = hashlib.sha256()
    for image in images:
        if isinstance(image, np.ndarray):
            h.update(repr((image.shape, str(image.dtype))).encode())
            h.update(np.ascontiguousarray(image).tobytes())
        else:
            p = Path(image)
            st = p.stat() if p.is_file() else None
            h.update(repr((str(p), st and st.st_size, st and st.st_mtime_ns)).encode())
    return h.hexdigest()[:12]


def cached_export(model: nn.Module, card: ModelCard) -> Path:
    """The fp32 ONNX file of ``model``, exported once into the cache."""
    path = cache_dir() / f"{_model_key(model, card)}.fp32.onnx"
    if path.is_file():
        os.utime(path)  # most recently used: kept by prune_cache
    else:
        log.info("exporting the network to ONNX (once; cached as %s)", path)
        export_module(model, card, path)
        prune_cache()
    return path


def prune_cache(keep: int = CACHE_KEEP) -> None:
    """Delete all but the ``keep`` most recently used ONNX files of the cache."""
    files = sorted(cache_dir().glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


def calibration_batches(
    images: Sequence[CalibrationImage],
    card: ModelCard,
    *,
    n: int = 6,
    max_area: int = CALIBRATION_AREA,
) -> list[np.ndarray]:
    """Calibration inputs for int8 quantisation: [(1, 3, h, w) float32, ...].

    The first ``n`` readable ``images`` (arrays, or paths read here; unreadable files are
    skipped) are resized to the model's input size, capped at ``max_area`` pixels at the
    same aspect, and normalised as the Predictor does. Raises :class:`HandsegError` when
    none is usable.
    """
    th, tw = card.input_size
    s = min(1.0, (max_area / (th * tw)) ** 0.5)
    h, w = max(32, round(th * s)), max(32, round(tw * s))
    out: list[np.ndarray] = []
    for image in images:
        try:
            arr = image if isinstance(image, np.ndarray) else read_image(image)
        except HandsegError as exc:  # an unreadable file: try the next
            log.debug("calibration: skipping %s", exc)
            continue
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise HandsegError(
                f"calibration images must be HxWx3 uint8 RGB arrays, got {arr.dtype} {arr.shape}"
            )
        arr = cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA)
        out.append(normalize(arr, card.mean, card.std)[None])  # (1, 3, h, w)
        if len(out) == n:
            break
    if not out:
        raise HandsegError("int8 calibration: none of the calibration images could be read")
    return out


def _exclude_tail(proto: Any) -> list[str]:
    """Names of the last Conv (the classifier) and every node after it: kept in fp32."""
    nodes = list(proto.graph.node)
    last = max((i for i, nd in enumerate(nodes) if nd.op_type == "Conv"), default=len(nodes))
    return [nd.name for nd in nodes[last:] if nd.name]


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    card: ModelCard,
    calibration: Sequence[CalibrationImage],
    *,
    fp32_tail: bool = True,
) -> Path:
    """Statically quantise an exported handseg ONNX file to int8 QDQ (atomic write).

    Weights int8 per channel, activations uint8 (MinMax calibration over
    :func:`calibration_batches` of ``calibration``); with ``fp32_tail`` the classifier and
    the final upsampling stay fp32. The card is written with ``handseg.precision = "int8"``.
    """
    import onnx  # heavy, optional: only where a file is quantised
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batches = calibration_batches(calibration, card)
    log.info("int8 calibration on %d image(s)", len(batches))

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    exclude = _exclude_tail(onnx.load(str(fp32_path))) if fp32_tail else []
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp, _quiet_root_logger():
        tmp_q = Path(tmp) / "q.onnx"
        quantize_static(
            str(fp32_path),
            str(tmp_q),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            extra_options={"CalibTensorRangeSymmetric": False},
        )
        q = onnx.load(str(tmp_q))
        set_metadata(q, card, "int8")
        save_proto(q, out_path)
    return out_path


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantiser logs advice through the root logger (``logging.warning``): mute it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def cached_int8(
    source: nn.Module | Path, card: ModelCard, calibration: Sequence[CalibrationImage]
) -> Path:
    """The int8 file of a network (``torch.nn.Module``) or an fp32 ONNX file, quantised
    once per calibration set into the cache. For a network the intermediate fp32 export
    is not kept."""
    is_file = isinstance(source, Path)
    key = _file_key(source) if is_file else _model_key(source, card)
    path = cache_dir() / f"{key}-{_calibration_key(calibration)}.int8.onnx"
    if path.is_file():
        os.utime(path)  # most recently used: kept by prune_cache
        return path
    log.info("quantising the network to int8 (once; cached as %s)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_file:
        quantize_int8(source, path, card, calibration)
    else:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            fp32 = export_module(source, card, Path(tmp) / "fp32.onnx")
            quantize_int8(fp32, path, card, calibration)
    prune_cache()
    return path
