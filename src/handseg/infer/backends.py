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

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from handseg.core.device import bf16_support, int8_support
from handseg.core.errors import HandsegError
from handseg.infer.onnx_file import INPUT_NAME, OnnxModel, ort_session
from handseg.infer.quantize import cached_export, cached_int8

log = logging.getLogger(__name__)
RUNTIMES = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
# CPU paths, fastest first among those that keep the hand IoU (module docstring): ``auto``
# takes the first one that the request and the machine allow
_PREFERENCE: tuple[tuple[str, str], ...] = (
    ("onnx", "int8"),
    ("torch", "bf16"),
    ("onnx", "fp32"),
    ("torch", "fp32"),
)


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


def one_line(exc: BaseException) -> str:
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
                path = cached_int8(model.path if is_onnx else model, meta)
            except Exception as exc:  # the exporter and quantiser raise many types
                level = logging.WARNING if explicit == "int8" else logging.INFO
                log.log(
                    level,
                    "int8 quantisation failed (%s): running fp32 instead",
                    one_line(exc),
                )
                pr = "fp32"
        if path is None or (pr == "fp32" and not is_onnx):
            try:
                path = cached_export(model, meta)
            except Exception as exc:  # the exporter raises many types
                if runtime == "onnx":
                    raise HandsegError(
                        "cannot export the network to ONNX for --runtime onnx "
                        f"({one_line(exc)}); use --runtime torch"
                    ) from None
                log.info("ONNX export failed (%s): running PyTorch", one_line(exc))
                return make_backend(model, meta, "torch", "auto", threads, device=device,
                                    channels_last=channels_last, scale=scale)  # fmt: skip
        backend = OrtBackend(path, precision=pr, threads=threads, model=torch_model)
    log.debug("inference backend: %s", backend.name)
    return _Scaled(backend, scale) if float(scale) != 1.0 else backend
