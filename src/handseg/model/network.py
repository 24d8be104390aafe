"""DeepLab v3+ on ResNet-18 in the layout of MATLAB's ``deeplabv3plusLayers``.

The encoder is segmentation_models_pytorch's ResNet-18 (torchvision's ResNet with the last
stage dilated for output stride 16); the decoder is the MATLAB wiring:

    encoder (stride 16, 512 ch) -> ASPP: 1x1 + 3x3 @ 6/12/18, 256 ch each, BN + ReLU
    -> concat (1024) -> 1x1 conv 256 -> upsample x4
    -> concat with 1x1 projection (48 ch) of the stride-4 features (end of layer1)
    -> 3x3 conv 256 -> 3x3 conv 256 -> 1x1 classifier -> upsample x4 to the input size

Remaining differences from MATLAB are listed in the README ("Network").
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from handseg.core.errors import HandsegError

log = logging.getLogger(__name__)
OUTPUT_STRIDE = 16  # MATLAB's (and the default); ModelConfig.output_stride may be 8, 16 or 32
OUTPUT_STRIDES = (8, 16, 32)


@dataclass
class ModelConfig:
    """Architecture arguments: everything needed to rebuild the network from a checkpoint."""

    encoder_name: str = "resnet18"
    num_classes: int = 2
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    aspp_channels: int = 256
    lowlevel_channels: int = 48
    decoder_channels: int = 256
    output_stride: int = OUTPUT_STRIDE

    def __post_init__(self) -> None:
        if self.output_stride not in OUTPUT_STRIDES:
            raise HandsegError(
                f"output stride must be one of {OUTPUT_STRIDES}, got {self.output_stride}"
            )
        if self.decoder_channels < 8:
            raise HandsegError(f"decoder channels must be at least 8, got {self.decoder_channels}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["aspp_rates"] = list(self.aspp_rates)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "aspp_rates" in known:
            known["aspp_rates"] = tuple(known["aspp_rates"])
        return cls(**known)


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _ASPP(nn.Module):
    """MATLAB's ASPP: a 1x1 branch and three dilated 3x3 branches, no pooling, no dropout."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(cin, cout, 1)] + [_conv_bn_relu(cin, cout, 3, r) for r in rates]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)  # (B, 4*cout, h, w)


class _Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, high_ch: int, low_ch: int):
        super().__init__()
        n_branches = 1 + len(cfg.aspp_rates)
        self.aspp = _ASPP(high_ch, cfg.aspp_channels, cfg.aspp_rates)
        self.project = _conv_bn_relu(n_branches * cfg.aspp_channels, cfg.decoder_channels, 1)
        self.lowlevel = _conv_bn_relu(low_ch, cfg.lowlevel_channels, 1)
        self.fuse = nn.Sequential(
            _conv_bn_relu(cfg.decoder_channels + cfg.lowlevel_channels, cfg.decoder_channels, 3),
            _conv_bn_relu(cfg.decoder_channels, cfg.decoder_channels, 3),
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.project(self.aspp(high))  # (B, 256, H/16, W/16)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([x, self.lowlevel(low)], dim=1)  # (B, 256 + 48, H/4, W/4)
        return self.fuse(x)


class HandSegNet(nn.Module):
    """DeepLab v3+ (ResNet-18) that accepts any input size.

    ``forward(x)``: x (B, 3, H, W) normalised float -> logits (B, num_classes, H, W).
    H and W need not be multiples of 16: the input is zero-padded (bottom/right) to the next
    multiple inside the model and the logits are cropped back.
    """

    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        import segmentation_models_pytorch as smp

        self.cfg = cfg or ModelConfig()
        self.encoder = smp.encoders.get_encoder(
            self.cfg.encoder_name,
            in_channels=3,
            depth=5,
            weights=None,
            output_stride=self.cfg.output_stride,
        )
        chans = self.encoder.out_channels  # (3, 64, 64, 128, 256, 512) for resnet18
        self.decoder = _Decoder(self.cfg, high_ch=chans[-1], low_ch=chans[2])
        self.classifier = nn.Conv2d(self.cfg.decoder_channels, self.cfg.num_classes, 1)

    def new_layers(self) -> list[nn.Module]:
        """Layers that are not part of the (possibly pretrained) backbone: they learn 10x faster."""
        return [self.decoder, self.classifier]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        stride = self.cfg.output_stride
        ph = (-h) % stride
        pw = (-w) % stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        feats = self.encoder(x)  # strides 1, 2, 4, 8, 16, 16
        y = self.classifier(self.decoder(feats[2], feats[-1]))  # (B, C, H'/4, W'/4)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :h, :w]


def build_model(cfg: ModelConfig | None = None) -> HandSegNet:
    return HandSegNet(cfg)


def model_config(
    num_classes: int = 2, output_stride: int = OUTPUT_STRIDE, decoder_channels: int = 256
) -> ModelConfig:
    """The architecture for the training options ``output_stride`` and ``decoder_channels``
    (the ASPP branches and the decoder convolutions get ``decoder_channels`` each).

    The ASPP rates 6/12/18 belong to stride 16; they scale with the stride, as in the
    DeepLab papers (12/24/36 at stride 8, 3/6/9 at stride 32), so that each branch keeps
    its field of view in pixels of the photo.
    """
    cfg = ModelConfig(  # validates the stride and the width
        num_classes=num_classes,
        aspp_channels=decoder_channels,
        decoder_channels=decoder_channels,
        output_stride=output_stride,
    )
    cfg.aspp_rates = tuple(r * OUTPUT_STRIDE // output_stride for r in cfg.aspp_rates)
    return cfg


def _imagenet_weights_info() -> tuple[str, Path]:
    from torchvision.models import ResNet18_Weights

    url = ResNet18_Weights.IMAGENET1K_V1.url
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return url, cache


def _download(url: str, dest: Path, timeout: float) -> None:
    """Download to ``dest`` atomically; fail fast when the host cannot be reached."""
    parsed = urllib.parse.urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout).close()
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (fixed https URL)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
            with os.fdopen(fd, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
        os.replace(tmp, dest)
    except OSError as exc:
        raise OSError(f"cannot download {url}: {exc}") from exc


def _imagenet_state_dict(timeout: float = 5.0) -> dict[str, torch.Tensor]:
    url, cache = _imagenet_weights_info()
    if not cache.exists():
        try:
            _download(url, cache, timeout)
        except OSError as exc:
            raise HandsegError(
                f"ImageNet ResNet-18 weights are not in the local cache ({cache}) and could not "
                f"be downloaded ({exc.__cause__ or exc}). Copy the file resnet18-f37072fd.pth "
                f"there, or pass --backbone-weights /path/to/resnet18.pth, or use "
                f"--backbone-weights none (random initialisation, --preset scratch)."
            ) from None
    return torch.load(cache, map_location="cpu", weights_only=True)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise HandsegError(
            f"--backbone-weights {path}: no such file (use auto, imagenet, none or a path)"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HandsegError(
            f"cannot read backbone weights {path}: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise HandsegError(f"{path} is not a state dict (a mapping of names to tensors)")
    return sd


def load_backbone_weights(model: HandSegNet, state_dict: dict[str, torch.Tensor], source: str):
    """Load a torchvision ResNet-18 state dict (``fc.*`` dropped) or an encoder state dict
    (optionally prefixed ``encoder.``) strictly into ``model.encoder``."""
    sd = {k.removeprefix("encoder."): v for k, v in state_dict.items() if not k.startswith("fc.")}
    own = model.encoder.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {wrong[0]})")
        raise HandsegError(
            f"backbone weights {source} do not fit a ResNet-18 encoder: {'; '.join(parts)}. "
            "Expected a torchvision resnet18 state dict or an encoder state dict."
        )
    model.encoder.load_state_dict(sd, strict=True)


def resolve_backbone_weights(model: HandSegNet, spec: str, *, timeout: float = 5.0) -> str:
    """Apply ``--backbone-weights`` (auto | imagenet | none | PATH) and return what was used:
    ``"imagenet"``, ``"none"`` or the file path. ``auto`` falls back to random initialisation
    with a loud warning when the ImageNet weights cannot be had."""
    if spec == "none":
        return "none"
    if spec in ("imagenet", "auto"):
        try:
            sd = _imagenet_state_dict(timeout=timeout)
        except HandsegError as exc:
            if spec == "imagenet":
                raise
            log.warning(
                "!!! ImageNet weights unavailable: training the backbone from RANDOM "
                "initialisation. The 'seed' preset assumes ImageNet weights; prefer "
                "--preset scratch. (%s)",
                exc,
            )
            return "none"
        load_backbone_weights(model, sd, "imagenet")
        return "imagenet"
    path = Path(spec).expanduser()
    load_backbone_weights(model, _read_state_dict(path), str(path))
    return str(path)


def model_summary(model: nn.Module) -> dict:
    n = sum(p.numel() for p in model.parameters())
    return {"parameters": n}
