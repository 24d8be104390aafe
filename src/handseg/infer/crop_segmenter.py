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
from handseg.infer.crops import crop_transform, paste_back, prior, warp_crop
from handseg.infer.detect import Hand
from handseg.model.card import ModelCard
from handseg.model.crop_net import CropSegNet

__all__ = ["CropSegmenter"]


class CropSegmenter:
    """``segmenter(rgb, hands)`` -> (mask (H, W) uint8, one (H, W) uint8 mask per hand)."""

    def __init__(self, net: CropSegNet, card: ModelCard, *, threads: int | None = None) -> None:
        if not isinstance(net, CropSegNet):
            raise HandsegError("the model is not a crop segmenter (train it with --preset hands)")
        if threads:
            torch.set_num_threads(int(threads))
        self.net, self.card = net.eval(), card
        self.size, self.margin = net.cfg.crop_size, net.cfg.crop_margin
        self.runtime = "torch fp32"

    def probabilities(self, rgb: np.ndarray, hands: Sequence[Hand]) -> list[np.ndarray]:
        """One (H, W) float32 hand probability map per hand (0 outside its crop)."""
        if not hands:
            return []
        maps = [crop_transform(h.landmarks, self.size, self.margin) for h in hands]
        crops = np.stack([warp_crop(rgb, m, self.size) for m in maps])  # (N, S, S, 3)
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0)
        p = None
        if self.net.cfg.prior:
            priors = np.stack([prior(h, m, self.size) for h, m in zip(hands, maps)])
            p = torch.from_numpy(priors)[:, None]
        with torch.inference_mode():
            probs = torch.sigmoid(self.net(x, p))[:, 0].numpy()  # (N, S, S)
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
