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
from handseg.infer.crops import crop_transform, grown_transform, paste_back, prior, warp_crop
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
        grow: int | None = None,
    ) -> None:
        """``net``: the :class:`~handseg.model.crop_net.CropSegNet` of a model file, or its
        ONNX export; it runs through the same runtime choice as the whole-image network
        (:func:`handseg.infer.backends.make_backend`: eager PyTorch or onnxruntime).
        ``grow``: rounds of the larger second crop (:meth:`probabilities`); None = the
        model's own (``CropNetConfig.grow``)."""
        arch = card.architecture
        if not isinstance(arch, CropNetConfig):
            raise HandsegError("the model is not a crop segmenter (train it with --preset hands)")
        self.card, self.arch = card, arch
        self.size, self.margin = arch.crop_size, arch.crop_margin
        self.backend = make_backend(net, card, runtime, precision, threads)
        self.runtime = self.backend.name
        self.grow = arch.grow if grow is None else int(grow)

    def _run(self, rgb: np.ndarray, hands: Sequence[Hand], maps: list[np.ndarray]) -> np.ndarray:
        """(N, S, S) hand probabilities of the crops of ``hands`` under ``maps``."""
        crops = np.stack([warp_crop(rgb, m, self.size) for m in maps])  # (N, S, S, 3)
        x = crops.transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # (N, 3, S, S)
        if self.arch.prior:  # the landmark prior as a fourth channel
            priors = np.stack([prior(h, m, self.size) for h, m in zip(hands, maps)])
            x = np.concatenate([x, priors[:, None]], 1)
        logits = self.backend(x)[:, 0]  # (N, S, S)
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))

    def probabilities(self, rgb: np.ndarray, hands: Sequence[Hand]) -> list[np.ndarray]:
        """One (H, W) float32 hand probability map per hand (0 outside its crop). With
        ``grow``, a hand whose mask runs into its crop's border is segmented again in a
        larger crop around the landmarks and that mask (a forearm up to the sleeve, a hand
        close to the camera whose landmarks cover only the fingers), up to ``grow`` times."""
        if not hands:
            return []
        maps = [crop_transform(h.landmarks, self.size, self.margin) for h in hands]
        probs = list(self._run(rgb, hands, maps))
        todo = list(range(len(hands)))
        for _ in range(self.grow):
            again = [(i, grown_transform(maps[i], probs[i] > 0.5, self.margin)) for i in todo]
            again = [(i, m) for i, m in again if m is not None]
            if not again:
                break
            second = self._run(rgb, [hands[i] for i, _ in again], [m for _, m in again])
            for (i, m), p in zip(again, second):
                maps[i], probs[i] = m, p
            todo = [i for i, _ in again]
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
