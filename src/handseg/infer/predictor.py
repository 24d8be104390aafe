"""Any-size inference: the :class:`Predictor` and ``handseg.load_model``.

Pre-processing is stored with the model (input size, normalisation), never copied here:
an input of any size is resized to the area the network was trained at (keeping its aspect
ratio), normalised, run through the network (which pads to a multiple of its output stride
itself), and the hand-vs-background logit margin is resized back to the requested output
size and thresholded. For two classes that equals the argmax of bilinearly upsampled logits.

Folder and video prediction (the ``handseg predict`` command) live in
:mod:`handseg.infer.media`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from handseg.core.device import resolve_device
from handseg.core.errors import HandsegError
from handseg.core.imaging import normalize, read_image
from handseg.infer.backends import make_backend
from handseg.infer.onnx_file import OnnxModel, read_onnx_file
from handseg.infer.quantize import Calibration
from handseg.model.card import ModelCard
from handseg.model.checkpoint import read_model_file

__all__ = ["ImageLike", "Predictor", "load_model"]

log = logging.getLogger(__name__)
ImageLike = str | Path | np.ndarray | Any  # path, HxWx3 uint8 array or PIL image


def _as_rgb_array(image: ImageLike) -> np.ndarray:
    """Path / PIL image / array -> (H, W, 3) uint8 RGB."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        arr = image
    elif isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
    else:
        raise HandsegError(
            f"cannot predict on a {type(image).__name__}: pass a path, a PIL image or an "
            "HxWx3 uint8 array"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise HandsegError(f"expected an HxWx3 image array, got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if min(arr.shape[:2]) < 1:
        raise HandsegError(f"empty image of shape {arr.shape}")
    return np.ascontiguousarray(arr)


class Predictor:
    """Runs a trained handseg network on images of any size.

    ``predict(image)`` -> (H, W) uint8 mask, 1 = hand, 0 = background, at the input's size
    (or ``out_size=(h, w)``).
    """

    def __init__(
        self,
        model: torch.nn.Module | OnnxModel,
        card: ModelCard,
        *,
        device: str = "cpu",
        channels_last: bool = True,
        threads: int | None = None,
        runtime: str = "auto",
        precision: str = "auto",
        scale: float = 1.0,
        calibration: Calibration | None = None,
    ):
        """``model``: a ``torch.nn.Module`` or an exported
        :class:`~handseg.infer.onnx_file.OnnxModel`; ``card``: its model card.
        ``runtime`` (auto | torch | onnx), ``precision`` (auto | fp32 | bf16 | int8),
        ``threads`` and ``scale`` (network resolution factor) pick the inference path;
        ``calibration`` gives the images an int8 path is calibrated on (without them int8
        is not used); see :mod:`handseg.infer.backends`."""
        self.card = card
        if device == "auto" and not isinstance(model, torch.nn.Module):
            device = "cpu"  # an ONNX file runs on onnxruntime's CPU provider
        self.device = torch.device(resolve_device(device))
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        # the one place the network runs (PyTorch or onnxruntime, fp32 / bf16 / int8)
        self.backend = make_backend(
            model, card, runtime, precision, threads,
            device=self.device, channels_last=channels_last, scale=scale,
            calibration=calibration,
        )  # fmt: skip
        self.model = self.backend.model  # the PyTorch network; None for an ONNX file

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index = class value (from the model card)."""
        return self.card.classes

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the network was trained at (from the model card)."""
        return self.card.input_size

    # -- sizes ------------------------------------------------------------------------------
    def working_size(self, h: int, w: int) -> tuple[int, int]:
        """The size an (h, w) input is resized to: the training area at the input's aspect."""
        th, tw = self.input_size
        s = math.sqrt((th * tw) / (h * w))
        return max(16, round(h * s)), max(16, round(w * s))

    def _preprocess(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, h, w) float32 normalised at the working size."""
        h, w = image.shape[:2]
        wh, ww = self.working_size(h, w)
        if (wh, ww) != (h, w):
            interp = cv2.INTER_AREA if wh * ww < h * w else cv2.INTER_LINEAR
            image = cv2.resize(image, (ww, wh), interpolation=interp)
        return normalize(image, self.card.mean, self.card.std)

    # -- network ----------------------------------------------------------------------------
    def _logits(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, h, w) float32 -> (B, C, h, w) float32 logits."""
        return self.backend(batch)

    @staticmethod
    def _to_mask(logits: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """(C, h, w) logits -> (H, W) uint8 class map at ``out_hw``."""
        h, w = out_hw
        if logits.shape[0] == 2:
            margin = logits[1] - logits[0]  # bilinear resize commutes with this difference
            if margin.shape != (h, w):
                margin = cv2.resize(margin, (w, h), interpolation=cv2.INTER_LINEAR)
            return (margin > 0).astype(np.uint8)
        stack = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in logits])
        return stack.argmax(0).astype(np.uint8)

    # -- public -----------------------------------------------------------------------------
    def predict(self, image: ImageLike, *, out_size: tuple[int, int] | None = None) -> np.ndarray:
        """One image (path, PIL image or HxWx3 uint8 array) -> (H, W) uint8 mask in {0, 1}."""
        arr = _as_rgb_array(image)
        x = self._preprocess(arr)[None]
        return self._to_mask(self._logits(x)[0], out_size or arr.shape[:2])

    def predict_many(
        self, images: Iterable[ImageLike], *, batch_size: int = 4
    ) -> Iterator[np.ndarray]:
        """Masks for a stream of images, batching consecutive images of equal working size."""
        pending: list[tuple[np.ndarray, tuple[int, int]]] = []

        def flush() -> Iterator[np.ndarray]:
            if not pending:
                return
            logits = self._logits(np.stack([p[0] for p in pending]))
            for lg, (_, hw) in zip(logits, pending):
                yield self._to_mask(lg, hw)
            pending.clear()

        for image in images:
            arr = _as_rgb_array(image)
            x = self._preprocess(arr)
            if pending and (pending[0][0].shape != x.shape or len(pending) >= batch_size):
                yield from flush()
            pending.append((x, arr.shape[:2]))
        yield from flush()


def load_model(
    path: str | Path,
    *,
    device: str = "cpu",
    calibration: Calibration | None = None,
    **kwargs: Any,
) -> Predictor:
    """Load ``RUN/model.pt`` (or ``RUN``, or a ``model.onnx`` from ``handseg export``) and
    return a :class:`Predictor`; ``kwargs`` go to it (runtime, precision, threads, scale).

    ``calibration``: images for int8 (HxWx3 uint8 arrays or paths), or a function of the
    model card that returns them, e.g. the model's training images::

        from handseg.data.split import training_images
        load_model(path, calibration=training_images)

    Without it int8 is not used (``auto`` takes the next fastest path).

    >>> model = handseg.load_model("runs/demo/model.pt")
    >>> mask = model.predict("photo.jpg")   # (H, W) uint8, 1 = hand
    """
    if Path(path).suffix.lower() == ".onnx":  # an export from 'handseg export'
        model, card = read_onnx_file(path)
    else:
        model, card = read_model_file(path)
        if card.is_crop_segmenter:
            raise HandsegError(
                f"{path} is a crop segmenter (trained with --preset hands): it runs inside the "
                "hand pipeline, load it with handseg.load_segmenter or handseg predict --model"
            )
    return Predictor(model, card, device=device, calibration=calibration, **kwargs)
