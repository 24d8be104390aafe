"""The crop segmenter: MediaPipe's hand-landmark network as an encoder, a light U-Net decoder.

Input: a canonical hand crop (:mod:`handseg.infer.crops`, ``crop_size`` square, RGB in
[0, 1] as the landmark model takes it) and optionally the landmark prior as a fourth
channel given to the decoder. The encoder is :class:`~handseg.model.tflite_net.TFLiteNet`
running the landmark model's graph up to its stride-``2 ** depth`` features (at 224: 112,
56, 28, 14 and 7 pixels with 64, 144, 240, 672 and 1152 channels); the decoder projects
each tap (1x1 conv), and from the coarsest up: upsample x2, concatenate the next finer
tap, 3x3 conv; a last stage at the crop's full resolution also sees the RGB crop itself
(the edges) and the prior. Output: (B, 1, S, S) hand logits.

The architecture (:class:`CropNetConfig`) carries the encoder's program (plain data), so a
model file rebuilds the network without the ``.tflite`` file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from handseg.core.errors import HandsegError
from handseg.model.tflite_net import TFLiteNet, feature_taps

__all__ = ["KIND", "CropNetConfig", "CropSegNet"]

KIND = "crop-segmenter"
"""``model["kind"]`` in a model file holding a :class:`CropSegNet`."""


@dataclass
class CropNetConfig:
    """Architecture arguments of :class:`CropSegNet` (stored in ``model.pt``)."""

    program: dict[str, Any] = field(default_factory=dict)
    """The encoder's TFLite program (:meth:`Program.to_dict`)."""
    crop_size: int = 224
    crop_margin: float = 0.3
    depth: int = 5
    """How many encoder taps the decoder uses (5: down to stride 32)."""
    decoder_channels: tuple[int, ...] = (96, 64, 48, 32, 24)
    """Per tap, coarsest first (only the last ``depth`` are used)."""
    head_channels: int = 16
    prior: bool = False
    """Give the decoder the landmark prior as an extra channel."""
    grow: int = 0
    """At prediction: rounds of segmenting a hand again in a larger crop while its mask runs
    into the crop's border (:func:`handseg.infer.crops.grown_transform`)."""
    encoder: str = "mediapipe-hand-landmark-full"
    kind: str = KIND

    def __post_init__(self) -> None:
        if not 1 <= self.depth <= 5 or len(self.decoder_channels) < self.depth:
            raise HandsegError(
                f"crop segmenter depth must be 1..5 with as many decoder channels, got "
                f"{self.depth} / {self.decoder_channels}"
            )
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoder_channels"] = list(self.decoder_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropNetConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _cbr(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CropSegNet(nn.Module):
    """``net(x)``: (B, 3, S, S) RGB in [0, 1] -- with ``cfg.prior``, (B, 4, S, S): the
    landmark prior as the fourth channel -- -> (B, 1, S, S) hand logits. One input tensor,
    so the runtimes (eager PyTorch, onnxruntime) take it as they take the whole-image
    network."""

    output_stride = 32  # the deepest tap's stride at depth 5 (crop sizes are multiples)

    def __init__(self, cfg: CropNetConfig, encoder: TFLiteNet | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder if encoder is not None else TFLiteNet(cfg.program)
        taps = feature_taps(self.encoder.program)[: cfg.depth]  # finest first
        if len(taps) < cfg.depth:
            raise HandsegError(f"the encoder has {len(taps)} feature scales, not {cfg.depth}")
        self._taps = [t[1] for t in taps]
        self._stop = max(t[0] for t in taps)
        chans = list(reversed(cfg.decoder_channels[-cfg.depth :]))  # finest first
        self.proj = nn.ModuleList(_cbr(t[2], c, 1) for t, c in zip(taps, chans))
        # fuse[i]: upsampled coarser (chans[i + 1]) + tap i (chans[i]) -> chans[i]
        self.fuse = nn.ModuleList(
            _cbr(chans[i + 1] + chans[i], chans[i], 3) for i in range(cfg.depth - 1)
        )
        extra = 3 + int(cfg.prior)
        self.head = nn.Sequential(
            _cbr(chans[0] + extra, cfg.head_channels, 3),
            _cbr(cfg.head_channels, cfg.head_channels, 3),
            nn.Conv2d(cfg.head_channels, 1, 1),
        )

    def features(self, crop: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's taps, finest first."""
        out = self.encoder.run(crop, want=self._taps, stop_after=self._stop)
        return [out[t] for t in self._taps]

    def decode(
        self, feats: list[torch.Tensor], crop: torch.Tensor, prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        xs = [p(f) for p, f in zip(self.proj, feats)]
        x = xs[-1]
        for i in range(len(xs) - 2, -1, -1):
            x = F.interpolate(x, size=xs[i].shape[2:], mode="bilinear", align_corners=False)
            x = self.fuse[i](torch.cat([x, xs[i]], 1))
        x = F.interpolate(x, size=crop.shape[2:], mode="bilinear", align_corners=False)
        extra = [crop] if not self.cfg.prior else [crop, _prior_or_zeros(prior, crop)]
        return self.head(torch.cat([x, *extra], 1))

    @property
    def in_channels(self) -> int:
        """3 (RGB), or 4 with the landmark prior as the fourth channel."""
        return 3 + int(self.cfg.prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, c = self.cfg.crop_size, self.in_channels
        if x.ndim != 4 or x.shape[1] != c or tuple(x.shape[2:]) != (s, s):
            raise HandsegError(
                f"the crop segmenter takes (B, {c}, {s}, {s}) crops, got {tuple(x.shape)}"
            )
        crop, prior = x[:, :3], (x[:, 3:] if self.cfg.prior else None)
        return self.decode(self.features(crop), crop, prior)

    def reset_encoder(self, seed: int = 0) -> None:
        """Random weights of the same shapes (the control without pre-training): He-normal
        filters, zero biases, PReLU slopes 0.25."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.encoder.weights.values():
                if p.ndim == 4:
                    fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                    p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                elif p.ndim == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[1]) ** 0.5)
                else:
                    p.fill_(0.25 if _is_prelu(self.encoder, p) else 0.0)


def _is_prelu(enc: TFLiteNet, param: torch.Tensor) -> bool:
    ids = {int(k) for k, v in enc.weights.items() if v is param}
    return any(op["op"] == "PRELU" and op["inputs"][1] in ids for op in enc.program.ops)


def _prior_or_zeros(prior: torch.Tensor | None, crop: torch.Tensor) -> torch.Tensor:
    if prior is None:
        return crop.new_zeros((crop.shape[0], 1, *crop.shape[2:]))
    return prior
