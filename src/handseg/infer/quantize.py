"""infer.quantize."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from handseg.core.imaging import list_images, read_image
from handseg.infer.export import export_module
from handseg.infer.onnx_file import INPUT_NAME, save_proto, set_metadata
from handseg.synth.hands import render_sample

log = logging.getLogger(__name__)


CACHE_KEEP = 8  # ONNX files kept in the cache (exports and int8 copies, least recently used go)


def cache_dir() -> Path:
    """Where exported and quantised ONNX files are cached: ``$HANDSEG_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/handseg`` or ``~/.cache/handseg``."""
    env = os.environ.get("HANDSEG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "handseg"


def _model_key(model: nn.Module, meta: dict[str, Any]) -> str:
    """A content hash of the weights, architecture and preprocessing."""
    h = hashlib.sha256()
    cfg = getattr(model, "cfg", None)
    h.update(json.dumps(cfg.to_dict() if cfg is not None else {}, sort_keys=True).encode())
    h.update(json.dumps([meta.get("normalization"), meta.get("input_size")]).encode())
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


def cached_export(model: nn.Module, meta: dict[str, Any]) -> Path:
    """The fp32 ONNX file of ``model``, exported once into the cache."""

    path = cache_dir() / f"{_model_key(model, meta)}.fp32.onnx"
    if path.is_file():
        os.utime(path)  # most recently used: kept by _prune_cache
    else:
        log.info("exporting the network to ONNX (once; cached as %s)", path)
        export_module(model, meta, path)
        _prune_cache()
    return path


def _prune_cache(keep: int = CACHE_KEEP) -> None:
    """Delete all but the ``keep`` most recently used ONNX files of the cache."""
    files = sorted(cache_dir().glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


def calibration_batches(
    meta: dict[str, Any], n: int = 6, *, max_area: int = 384 * 512, seed: int = 0
) -> tuple[list[np.ndarray], str]:
    """Calibration inputs for int8 quantisation -> ([(1, 3, h, w) float32, ...], source).

    Images come from the model's training split (``train_config``: ``out/split.json``'s
    "train" entries, else the ``images`` folder) when those files exist, else from
    handseg's synthetic hands. They are resized to the model's input size (capped at
    ``max_area`` pixels, same aspect) and normalised as the Predictor does.
    """
    import cv2

    th, tw = (int(v) for v in meta.get("input_size", (384, 512)))
    s = min(1.0, (max_area / (th * tw)) ** 0.5)
    h, w = max(32, round(th * s)), max(32, round(tw * s))
    norm = meta.get("normalization", {})
    mean = np.asarray(norm.get("mean", (0.485, 0.456, 0.406)), np.float32)
    std = np.asarray(norm.get("std", (0.229, 0.224, 0.225)), np.float32)

    def prep(img: np.ndarray) -> np.ndarray:  # (H, W, 3) uint8 -> (1, 3, h, w)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        x = (img.astype(np.float32) / 255.0 - mean) / std
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

    paths = training_images(meta.get("train_config") or {})
    if paths:
        out = []
        for p in paths[: 4 * n]:
            try:
                out.append(prep(read_image(p)))
            except Exception:  # unreadable file: try the next
                continue
            if len(out) == n:
                break
        if out:
            return out, f"{len(out)} training images"
    try:
        rng = np.random.default_rng(seed)
        return [prep(render_sample(rng, (h, w))[0]) for _ in range(n)], f"{n} synthetic hands"
    except ImportError:
        rng = np.random.default_rng(seed)
        noise = [rng.normal(0, 1, (1, 3, h, w)).astype(np.float32) for _ in range(n)]
        return noise, f"{n} noise images"


def training_images(train_config: dict[str, Any]) -> list[Path]:
    """Training photos named by a model's stored training options (those that exist)."""
    split = None
    if train_config.get("split"):
        split = Path(str(train_config["split"]))
    elif train_config.get("out"):
        split = Path(str(train_config["out"])) / "split.json"
    try:
        if split is not None and split.is_file():
            doc = json.loads(split.read_text())
            base = Path(doc.get("images_dir") or "")
            paths = [Path(e["image"]) for e in doc.get("train", [])]
            paths = [p if p.is_absolute() else base / p for p in paths]
            return [p for p in paths if p.is_file()]
        if train_config.get("images") and Path(str(train_config["images"])).is_dir():
            return list_images(train_config["images"])
    except Exception:  # stale or foreign paths: calibrate on synthetic data instead
        return []
    return []


def _exclude_tail(proto: Any) -> list[str]:
    """Names of the last Conv (the classifier) and every node after it: kept in fp32."""
    nodes = list(proto.graph.node)
    last = max((i for i, nd in enumerate(nodes) if nd.op_type == "Conv"), default=len(nodes))
    return [nd.name for nd in nodes[last:] if nd.name]


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    meta: dict[str, Any],
    *,
    calibration: list[np.ndarray] | None = None,
    fp32_tail: bool = True,
) -> Path:
    """Statically quantise an exported handseg ONNX file to int8 QDQ (atomic write).

    Weights int8 per channel, activations uint8 (MinMax calibration over ``calibration``
    batches, default :func:`calibration_batches`); with ``fp32_tail`` the classifier and
    the final upsampling stay fp32. The handseg metadata is copied with
    ``handseg.precision = "int8"``.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if calibration is None:
        calibration, source = calibration_batches(meta)
        log.info("int8 calibration on %s", source)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    src = onnx.load(str(fp32_path))
    exclude = _exclude_tail(src) if fp32_tail else []
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
        set_metadata(q, meta, "int8")
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


def cached_int8(source: nn.Module | Path, meta: dict[str, Any]) -> Path:
    """The int8 file of a network (``torch.nn.Module``) or an fp32 ONNX file, quantised
    once into the cache. For a network the intermediate fp32 export is not kept."""
    import tempfile

    is_file = isinstance(source, Path)
    key = _file_key(source) if is_file else _model_key(source, meta)
    path = cache_dir() / f"{key}.int8.onnx"
    if path.is_file():
        os.utime(path)  # most recently used: kept by _prune_cache
        return path
    log.info("quantising the network to int8 (once; cached as %s)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_file:
        quantize_int8(source, path, meta)
    else:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            fp32 = export_module(source, meta, Path(tmp) / "fp32.onnx")
            quantize_int8(fp32, path, meta)
    _prune_cache()
    return path
