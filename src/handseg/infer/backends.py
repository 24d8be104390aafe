"""Inference backends: one interface over PyTorch and onnxruntime in fp32, bf16 and int8.

Every backend is a callable

    backend(batch) -> logits     batch (B, 3, h, w) float32, normalised
                                 logits (B, C, h, w) float32

built by :func:`make_backend` from a network (a ``torch.nn.Module`` or an exported
:class:`~handseg.infer.onnx_file.OnnxModel`) and its model card.
:class:`handseg.infer.predictor.Predictor` runs every image through one. Which path runs
is chosen by :func:`handseg.core.device.choose_inference_path` (with the measurements
behind ``auto``: int8 only on CPUs with VNNI or Arm dot-product instructions, bf16 only
with native bf16, else onnx fp32); this module builds it and logs the choice and its
reason at INFO level when ``auto`` made it (``Backend.reason``).

Paths (``runtime`` x ``precision``):

- ``torch fp32``: eager PyTorch, BatchNorm folded into the convolutions, channels_last.
- ``torch bf16``: the same under ``torch.autocast(..., torch.bfloat16)``, only where the
  device has native bf16; elsewhere it warns and runs fp32.
- ``onnx fp32``: onnxruntime, all graph optimisations, sequential execution.
- ``onnx int8``: onnxruntime on a statically quantised (QDQ, per-channel int8 weights,
  uint8 activations) copy of the ONNX graph. The classifier and the final upsampling
  stay fp32 so the hand/background margin is not rounded. Calibration uses the images the
  caller passes (``calibration``; the command line passes the model's training images).
  ``auto`` takes it only where the CPU has int8 dot-product instructions (VNNI, Arm
  asimddp): without them int8 is slower than fp32. Without calibration images ``auto``
  takes the next fastest path and an explicit int8
  request runs fp32 with a warning: calibrating on whatever comes to hand (synthetic or
  random images, or the first images predicted) would make the masks depend on it. The
  export of a ``model.pt`` and the quantised file are cached (``$HANDSEG_CACHE_DIR`` or
  ``~/.cache/handseg``, the 8 most recently used files, keyed by content and calibration
  set); where quantisation fails it warns and runs ONNX fp32.
- ``scale`` < 1 runs the network at a lower resolution (input downscaled, logits
  upscaled back to (h, w)): about ``1 / scale**2`` less work, at some cost in boundary
  accuracy. It is not part of ``auto``: it costs far more than 0.005 IoU on the measured
  model (scale 0.5: onnx int8 83 ms but hand IoU 0.8273, -0.128; 0.75 on an earlier
  checkpoint: -0.046).

``threads`` sets ``torch.set_num_threads`` / onnxruntime's intra-op threads.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from handseg.core.device import InferencePath, canonical_precision, choose_inference_path
from handseg.core.errors import HandsegError
from handseg.infer.onnx_file import INPUT_NAME, OnnxModel, ort_session
from handseg.infer.quantize import Calibration, CalibrationImage, cached_export, cached_int8
from handseg.model.card import ModelCard

__all__ = ["Backend", "OrtBackend", "TorchBackend", "make_backend", "one_line"]

log = logging.getLogger(__name__)


class Backend:
    """``backend(batch (B, 3, h, w) float32) -> logits (B, C, h, w) float32``."""

    runtime: str = ""
    precision: str = ""
    reason: str = ""  # why this path runs (make_backend)
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
        self.reason = inner.reason

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        b, _, h, w = batch.shape
        sh, sw = max(16, round(h * self.scale)), max(16, round(w * self.scale))
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        # area averaging on the way down (like cv2.INTER_AREA), bilinear on the way up
        x = F.interpolate(x, size=(sh, sw), mode="area" if self.scale < 1 else "bilinear")
        y = torch.from_numpy(self.inner(x.numpy()))
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return y.numpy()  # (B, C, h, w)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def make_backend(
    model: nn.Module | OnnxModel,
    card: ModelCard,
    runtime: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    *,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
    scale: float = 1.0,
    calibration: Calibration | None = None,
) -> Backend:
    """Build the backend for ``model`` (a ``torch.nn.Module`` or an
    :class:`~handseg.infer.onnx_file.OnnxModel`) described by ``card``.

    ``calibration``: images to quantise with when the path is int8 (module docstring).
    Explicit bf16/int8 requests that this machine cannot serve fall back to fp32 with a
    one-line warning; ``auto`` picks the fastest path this CPU can do
    (:func:`handseg.core.device.choose_inference_path`) and says which and why in one INFO
    line (also ``backend.reason``).
    """
    if not 0.1 <= float(scale) <= 4:
        raise HandsegError(f"--scale {scale}: choose a factor between 0.1 and 4 (e.g. 0.5)")
    if threads is not None and int(threads) < 1:
        raise HandsegError(f"--threads {threads}: give a positive number of threads")
    if threads:
        torch.set_num_threads(int(threads))
    onnx_file = model.precision if isinstance(model, OnnxModel) else None
    where = {"device": str(device), "onnx_file": onnx_file}
    chosen = choose_inference_path(runtime, precision, **where, calibrated=calibration is not None)
    images: list[CalibrationImage] = []
    if chosen.precision == "int8" and onnx_file != "int8":  # to be quantised: get the images
        images = list(calibration(card) if callable(calibration) else calibration or [])
        if not images:
            chosen = choose_inference_path(runtime, precision, **where, calibrated=False)
    backend: Backend | None = None
    if chosen.runtime == "onnx":
        backend = _onnx_backend(model, card, chosen.precision, images, threads=threads,
                                runtime=runtime, requested=precision)  # fmt: skip
        if backend is None:  # the network could not be exported: PyTorch it is
            torch_path = choose_inference_path("torch", "auto", device=str(device))
            chosen = InferencePath(
                "torch", torch_path.precision, f"the ONNX export failed; {torch_path.reason}"
            )
    if backend is None:
        backend = TorchBackend(
            model, precision=chosen.precision, device=device, channels_last=channels_last
        )
    backend.reason = chosen.reason
    if backend.precision != chosen.precision:  # int8 quantisation failed (logged)
        backend.reason = "int8 quantisation failed"
    if float(scale) != 1.0:
        backend = _Scaled(backend, scale)
    auto = "auto" in (runtime, canonical_precision(precision))
    log.log(logging.INFO if auto else logging.DEBUG, "runtime %s: %s", backend.name,
            backend.reason)  # fmt: skip
    return backend


def _onnx_backend(
    model: nn.Module | OnnxModel,
    card: ModelCard,
    precision: str,
    images: list[CalibrationImage],
    *,
    threads: int | None,
    runtime: str,
    requested: str,
) -> OrtBackend | None:
    """onnxruntime on ``model`` at ``precision`` (exported and quantised into the cache as
    needed); a failed quantisation runs fp32. None when a PyTorch network cannot be
    exported and ``runtime`` is ``auto`` (for ``onnx`` that raises HandsegError)."""
    is_onnx = isinstance(model, OnnxModel)
    if is_onnx and (model.precision == "int8" or precision == "fp32"):
        return OrtBackend(model.path, precision=precision, threads=threads)
    if precision == "int8":
        try:
            path = cached_int8(model.path if is_onnx else model, card, images)
            return OrtBackend(
                path, precision="int8", threads=threads, model=None if is_onnx else model
            )
        except Exception as exc:  # the exporter and quantiser raise many types
            level = logging.WARNING if requested == "int8" else logging.INFO
            log.log(level, "int8 quantisation failed (%s): running fp32 instead", one_line(exc))
    if is_onnx:
        return OrtBackend(model.path, precision="fp32", threads=threads)
    try:
        path = cached_export(model, card)
    except Exception as exc:  # the exporter raises many types
        if runtime == "onnx":
            raise HandsegError(
                f"cannot export the network to ONNX for --runtime onnx ({one_line(exc)}); "
                "use --runtime torch"
            ) from None
        log.info("ONNX export failed (%s): running PyTorch", one_line(exc))
        return None
    return OrtBackend(path, precision="fp32", threads=threads, model=model)
