"""Inference backends: one interface over PyTorch and onnxruntime in fp32, bf16 and int8.

Every backend is a callable

    backend(batch) -> logits     batch (B, 3, h, w) float32, normalised
                                 logits (B, C, h, w) float32

built by :func:`make_backend` from a network (a ``torch.nn.Module`` or an exported
:class:`~handseg.export.OnnxModel`) and its metadata. :class:`handseg.predict.Predictor`
runs every image through one.

Paths (``runtime`` x ``precision``):

- ``torch fp32``: eager PyTorch, BatchNorm folded into the convolutions, channels_last.
- ``torch bf16``: the same under ``torch.autocast("cpu", torch.bfloat16)``, only where the
  CPU has native bf16 (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo and oneDNN
  available); elsewhere it warns and runs fp32.
- ``onnx fp32``: onnxruntime, all graph optimisations, sequential execution.
- ``onnx int8``: onnxruntime on a statically quantised (QDQ, per-channel int8 weights,
  uint8 activations) copy of the ONNX graph. The classifier and the final upsampling
  stay fp32 so the hand/background margin is not rounded. Calibration uses a few images
  from the model's own training data when the paths stored in the model still exist,
  else synthetic hands. The export of a ``model.pt`` and the quantised file are cached
  (``$HANDSEG_CACHE_DIR`` or ``~/.cache/handseg``, the 8 most recently used files, keyed
  by content); where quantisation is unavailable it warns and runs ONNX fp32.
- ``scale`` < 1 runs the network at a lower resolution (input downscaled, logits
  upscaled back to (h, w)): about ``1 / scale**2`` less work, at some cost in boundary
  accuracy.

``threads`` sets ``torch.set_num_threads`` / onnxruntime's intra-op threads.

How ``auto`` chooses (CPU): the fastest path whose hand IoU on the arsl-bg11 test split
stays within 0.005 of fp32 eager PyTorch, measured with ``benchmarks/inference_speed.py``
(batch 1, 2 threads, 2-core AMD EPYC with avx512_bf16 and avx512_vnni; the scratch model
trained at 384 x 512, 6 test images; paths timed round-robin while other jobs kept the
load average at 9-11, so absolute times are inflated, the order is what counts):

    path         ms/img @384x512   x smp baseline   hand IoU   vs fp32
    torch fp32   815               0.88             0.9553     +0.0000
    torch bf16   474               1.51             0.9553     +0.0000
    onnx fp32    654               1.10             0.9553     +0.0000
    onnx int8    254               2.83             0.9554     +0.0001

``auto`` takes the first of ``_PREFERENCE`` (onnx int8, torch bf16, onnx fp32, torch fp32)
that the request and the machine allow. A lower ``scale`` is not part of ``auto``: it
costs far more than 0.005 IoU on that model (scale 0.5: onnx int8 83 ms but hand IoU
0.8273, -0.128; 0.75 on an earlier checkpoint: -0.046). On a GPU ``auto`` is
``torch fp32``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from handseg.errors import HandsegError

__all__ = [
    "RUNTIMES",
    "PRECISIONS",
    "Backend",
    "TorchBackend",
    "OrtBackend",
    "make_backend",
    "resolve_path",
    "bf16_support",
    "int8_support",
    "ort_session",
    "quantize_int8",
    "calibration_batches",
    "cache_dir",
]

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")
CACHE_KEEP = 8  # ONNX files kept in the cache (exports and int8 copies, least recently used go)
PRECISIONS = ("auto", "fp32", "bf16", "int8")

# CPU paths, fastest first among those that keep the hand IoU (module docstring): ``auto``
# takes the first one that the request and the machine allow
_PREFERENCE: tuple[tuple[str, str], ...] = (
    ("onnx", "int8"),
    ("torch", "bf16"),
    ("onnx", "fp32"),
    ("torch", "fp32"),
)


# --- capabilities ------------------------------------------------------------------------


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_support() -> tuple[bool, str]:
    """(supported, reason): can PyTorch run bf16 convolutions natively on this CPU?"""
    if not torch.backends.mkldnn.is_available():
        return False, "PyTorch was built without oneDNN (mkldnn)"
    flags = _cpu_flags()
    native = {"avx512_bf16", "amx_bf16"} & flags
    if not native:
        return False, "the CPU has no native bf16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo)"
    return True, f"CPU flags {', '.join(sorted(native))}"


def int8_support() -> tuple[bool, str]:
    """(supported, reason): can onnxruntime quantise and run int8 convolutions here?"""
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        return False, f"onnxruntime.quantization is not importable ({exc})"
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        flags = _cpu_flags()
        if flags and not ({"avx2", "avx512_vnni", "avx_vnni", "avx512bw"} & flags):
            return False, "the CPU lacks AVX2/VNNI, which onnxruntime's int8 kernels need"
    elif machine not in ("arm64", "aarch64"):
        return False, f"no int8 kernels for {machine}"
    return True, "onnxruntime int8 (QDQ)"


# --- backends ----------------------------------------------------------------------------


class Backend:
    """``backend(batch (B, 3, h, w) float32) -> logits (B, C, h, w) float32``."""

    runtime: str = ""
    precision: str = ""
    scale: float = 1.0
    model: nn.Module | None = None  # the PyTorch network, where the backend has one

    @property
    def name(self) -> str:
        s = f"{self.runtime} {self.precision}"
        return s if self.scale == 1.0 else f"{s} @{self.scale:g}"

    def __call__(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d into the Conv2d registered just before it (the
    order the ResNet blocks and the decoder run them in). Works in place; returns module."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for parent in module.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and conv.out_channels == bn.num_features
            ):
                parent._modules[a] = fuse_conv_bn_eval(conv, bn)
                parent._modules[b] = nn.Identity()
    return module


class TorchBackend(Backend):
    """Eager PyTorch, fp32 or bf16 autocast; BatchNorm folded, channels_last on the CPU."""

    runtime = "torch"

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        channels_last: bool = True,
    ):
        self.precision = precision
        self.device = torch.device(device)
        self.model = model.eval()
        net = _fold_batchnorm(copy.deepcopy(model)).to(self.device).eval()
        self.channels_last = channels_last and self.device.type == "cpu"
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self._net = net

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.precision == "bf16":
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    y = self._net(x)
            else:
                y = self._net(x)
            return y.float().contiguous().cpu().numpy()  # (B, C, h, w)


def ort_session(source: str | Path | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU session: all graph optimisations, sequential execution,
    ``threads`` intra-op threads (None: onnxruntime's default, one per physical core)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    src = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


class OrtBackend(Backend):
    """onnxruntime on an exported handseg ONNX file (fp32 or int8)."""

    runtime = "onnx"

    def __init__(
        self,
        path: str | Path,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        model: nn.Module | None = None,
    ):
        from handseg.export import INPUT_NAME

        self.path = Path(path)
        self.precision = precision
        self.model = model
        self._input = INPUT_NAME
        self._sess = ort_session(self.path, threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self._sess.run(None, {self._input: x})[0]


class _Scaled(Backend):
    """Run ``inner`` at ``scale`` times the resolution; logits come back at (h, w)."""

    def __init__(self, inner: Backend, scale: float):
        self.inner, self.scale = inner, float(scale)
        self.runtime, self.precision, self.model = inner.runtime, inner.precision, inner.model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch.nn.functional as F

        b, _, h, w = batch.shape
        sh, sw = max(16, round(h * self.scale)), max(16, round(w * self.scale))
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        # area averaging on the way down (like cv2.INTER_AREA), bilinear on the way up
        x = F.interpolate(x, size=(sh, sw), mode="area" if self.scale < 1 else "bilinear")
        y = torch.from_numpy(self.inner(x.numpy()))
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return y.numpy()  # (B, C, h, w)


# --- ONNX files: export cache and int8 quantisation --------------------------------------


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


def _cached_export(model: nn.Module, meta: dict[str, Any]) -> Path:
    """The fp32 ONNX file of ``model``, exported once into the cache."""
    from handseg.export import export_module

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

    paths = _training_images(meta.get("train_config") or {})
    if paths:
        from handseg.data import read_image

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
        from handseg.synthetic import render_sample

        rng = np.random.default_rng(seed)
        return [prep(render_sample(rng, (h, w))[0]) for _ in range(n)], f"{n} synthetic hands"
    except ImportError:
        rng = np.random.default_rng(seed)
        noise = [rng.normal(0, 1, (1, 3, h, w)).astype(np.float32) for _ in range(n)]
        return noise, f"{n} noise images"


def _training_images(train_config: dict[str, Any]) -> list[Path]:
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
            from handseg.data import list_images

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

    from handseg.export import INPUT_NAME, _atomic_save_proto, set_metadata

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
        _atomic_save_proto(q, out_path)
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


def _cached_int8(source: nn.Module | Path, meta: dict[str, Any]) -> Path:
    """The int8 file of a network (``torch.nn.Module``) or an fp32 ONNX file, quantised
    once into the cache. For a network the intermediate fp32 export is not kept."""
    import tempfile

    from handseg.export import export_module

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


# --- choosing and building ---------------------------------------------------------------


def resolve_path(
    runtime: str = "auto",
    precision: str = "auto",
    *,
    device: str = "cpu",
    onnx_only: bool = False,
) -> tuple[str, str]:
    """(runtime, precision) for a request, before the fallbacks of explicit requests.

    ``auto`` takes the fastest path by measurement (module docstring) that the other
    argument and the machine allow; an explicit precision implies its runtime (bf16 ->
    torch, int8 -> onnx). ``onnx_only``: the model is an ONNX file. Impossible
    combinations raise HandsegError.
    """
    if runtime not in RUNTIMES:
        raise HandsegError(f"--runtime {runtime}: choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise HandsegError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    on_cpu = torch.device(device).type == "cpu"
    if not on_cpu:
        if runtime == "onnx" or onnx_only:
            raise HandsegError(
                f"--runtime onnx runs on the CPU only, not on {device}; use --device cpu "
                "(or a model.pt with --runtime torch)"
            )
        if precision == "int8":
            raise HandsegError("--precision int8 runs on the CPU only; use --device cpu")
        return "torch", "fp32" if precision == "auto" else precision
    if onnx_only and runtime == "torch":
        raise HandsegError(
            "--runtime torch needs the PyTorch weights, an ONNX file has none: pass the "
            "model.pt or use --runtime onnx"
        )
    if runtime == "torch" and precision == "int8":
        raise HandsegError("--precision int8 runs on onnxruntime: use --runtime onnx or auto")
    if (runtime == "onnx" or onnx_only) and precision == "bf16":
        raise HandsegError("--precision bf16 runs on PyTorch: use --runtime torch or auto")
    candidates = [
        (rt, pr)
        for rt, pr in _PREFERENCE
        if runtime in ("auto", rt)
        and precision in ("auto", pr)
        and not (onnx_only and rt == "torch")
        and (precision != "auto" or _supported(pr))  # explicit requests fall back later
    ]
    return candidates[0]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _supported(precision: str) -> bool:
    if precision == "bf16":
        return bf16_support()[0]
    if precision == "int8":
        return int8_support()[0]
    return True


def make_backend(
    model: nn.Module | Any,
    meta: dict[str, Any],
    runtime: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    *,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
    scale: float = 1.0,
) -> Backend:
    """Build the backend for ``model`` (a ``torch.nn.Module`` or an
    :class:`~handseg.export.OnnxModel`).

    Explicit bf16/int8 requests that this machine cannot serve fall back to fp32 with a
    one-line warning; ``auto`` picks the fastest supported path silently (module docstring).
    """
    from handseg.export import OnnxModel

    if not 0.1 <= float(scale) <= 4:
        raise HandsegError(f"--scale {scale}: choose a factor between 0.1 and 4 (e.g. 0.5)")
    if threads is not None and int(threads) < 1:
        raise HandsegError(f"--threads {threads}: give a positive number of threads")
    if threads:
        torch.set_num_threads(int(threads))
    is_onnx = isinstance(model, OnnxModel)
    explicit = precision
    rt, pr = resolve_path(runtime, precision, device=str(device), onnx_only=is_onnx)
    if is_onnx and model.precision == "int8" and pr != "int8":
        if explicit == "fp32":
            log.warning("%s is quantised to int8: running it as int8", model.path)
        pr = "int8"
    if pr == "bf16" and not bf16_support()[0]:
        log.warning("bf16 is not supported here (%s): running fp32 instead", bf16_support()[1])
        pr = "fp32"
    if pr == "int8" and not (is_onnx and model.precision == "int8") and not int8_support()[0]:
        log.warning("int8 is not supported here (%s): running fp32 instead", int8_support()[1])
        pr = "fp32"

    backend: Backend
    if rt == "torch":
        backend = TorchBackend(model, precision=pr, device=device, channels_last=channels_last)
    else:
        torch_model = None if is_onnx else model
        path: Path | None = model.path if is_onnx else None
        if pr == "int8" and not (is_onnx and model.precision == "int8"):
            try:
                path = _cached_int8(model.path if is_onnx else model, meta)
            except Exception as exc:  # the exporter and quantiser raise many types
                level = logging.WARNING if explicit == "int8" else logging.INFO
                log.log(
                    level,
                    "int8 quantisation failed (%s): running fp32 instead",
                    _one_line(exc),
                )
                pr = "fp32"
        if path is None or (pr == "fp32" and not is_onnx):
            try:
                path = _cached_export(model, meta)
            except Exception as exc:  # the exporter raises many types
                if runtime == "onnx":
                    raise HandsegError(
                        "cannot export the network to ONNX for --runtime onnx "
                        f"({_one_line(exc)}); use --runtime torch"
                    ) from None
                log.info("ONNX export failed (%s): running PyTorch", _one_line(exc))
                return make_backend(model, meta, "torch", "auto", threads, device=device,
                                    channels_last=channels_last, scale=scale)  # fmt: skip
        backend = OrtBackend(path, precision=pr, threads=threads, model=torch_model)
    log.debug("inference backend: %s", backend.name)
    return _Scaled(backend, scale) if float(scale) != 1.0 else backend
