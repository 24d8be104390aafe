"""The crop segmenter at prediction time: one canonical crop per detected hand, a mask each.

For every hand the detector found: the canonical crop (:func:`handseg.infer.crops.crop_transform`
at the model's crop size and margin, exactly as in training), the network's hand
probability on it, pasted back onto the photo with the inverse map
(:func:`handseg.infer.crops.paste_back`). All of a photo's crops run as one batch. The
mask is where some hand's pasted probability is above 0.5; each of its pixels belongs to
the hand with the highest probability there (the per-hand masks never overlap, and their
union is the mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from handseg.core.errors import HandsegError
from handseg.infer.backends import make_backend
from handseg.infer.crops import crop_transform, paste_back, prior, warp_crop
from handseg.infer.detect import Hand
from handseg.infer.onnx_file import OnnxModel
from handseg.model.card import ModelCard
from handseg.model.crop_net import CropNetConfig

__all__ = ["CropSegmenter"]


class CropSegmenter:
    """``segmenter(rgb, hands)`` -> (mask (H, W) uint8, one (H, W) uint8 mask per hand)."""

    def __init__(
        self,
        net: torch.nn.Module | OnnxModel,
        card: ModelCard,
        *,
        runtime: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
    ) -> None:
        """``net``: the :class:`~handseg.model.crop_net.CropSegNet` of a model file, or its
        ONNX export; it runs through the same runtime choice as the whole-image network
        (:func:`handseg.infer.backends.make_backend`: eager PyTorch or onnxruntime)."""
        arch = card.architecture
        if not isinstance(arch, CropNetConfig):
            raise HandsegError("the model is not a crop segmenter (train it with --preset hands)")
        self.card, self.arch = card, arch
        self.size, self.margin = arch.crop_size, arch.crop_margin
        self.backend = make_backend(net, card, runtime, precision, threads)
        self.runtime = self.backend.name

    def probabilities(self, rgb: np.ndarray, hands: Sequence[Hand]) -> list[np.ndarray]:
        """One (H, W) float32 hand probability map per hand (0 outside its crop)."""
        if not hands:
            return []
        maps = [crop_transform(h.landmarks, self.size, self.margin) for h in hands]
        crops = np.stack([warp_crop(rgb, m, self.size) for m in maps])  # (N, S, S, 3)
        x = crops.transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # (N, 3, S, S)
        if self.arch.prior:  # the landmark prior as a fourth channel
            priors = np.stack([prior(h, m, self.size) for h, m in zip(hands, maps)])
            x = np.concatenate([x, priors[:, None]], 1)
        logits = self.backend(x)[:, 0]  # (N, S, S)
        probs = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))
        return [paste_back(pr, m, rgb.shape[:2]) for pr, m in zip(probs, maps)]

    def __call__(
        self, rgb: np.ndarray, hands: Sequence[Hand]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        h, w = rgb.shape[:2]
        probs = self.probabilities(rgb, hands)
        if not probs:
            return np.zeros((h, w), np.uint8), []
        stack = np.stack(probs)  # (N, H, W)
        mask = (stack.max(0) > 0.5).astype(np.uint8)
        owner = stack.argmax(0)
        return mask, [(mask & (owner == i)).astype(np.uint8) for i in range(len(probs))]
