"""The model card: everything about a trained network except its weights.

One typed record that ``model.pt`` (:mod:`handseg.model.checkpoint`) and the exported ONNX
file (:mod:`handseg.infer.onnx_file`) are read into and written from, with one set of
defaults. :meth:`ModelCard.to_dict` gives the layout ``model.pt`` has stored since format
version 1 (without the weights), so files written by earlier versions read unchanged::

    {"format": "handseg-model", "format_version": 1,
     "model": ModelConfig dict, "classes": [...],
     "normalization": {"mean": [...], "std": [...]}, "input_size": [H, W],
     "train_config": {...}, "backbone_weights": str, "metrics": {...}, "versions": {...}}

A key missing from a file takes the default below; a key this version does not know is
kept in :attr:`ModelCard.extra` and written back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from handseg.core.constants import CLASS_NAMES, DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD
from handseg.core.errors import HandsegError
from handseg.model.crop_net import KIND as CROP_KIND
from handseg.model.crop_net import CropNetConfig
from handseg.model.network import ModelConfig

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelCard", "plain"]

FORMAT = "handseg-model"
FORMAT_VERSION = 1
# keys of the stored layout that are not card fields: the file's own marker and the weights
_LAYOUT_KEYS = ("format", "format_version", "state_dict")


@dataclass(frozen=True)
class ModelCard:
    """What a trained network is and how to feed it.

    Attributes:
        architecture: the network's arguments (rebuilds it: :func:`build_network`): a
            whole-image :class:`ModelConfig`, or a :class:`CropNetConfig` (``kind:
            crop-segmenter``) for the hand pipeline's crop segmenter.
        classes: class names, index = class value; ``classes[1]`` is the hand.
        mean, std: per-channel (R, G, B) normalisation of images scaled to [0, 1].
        input_size: (H, W) the network was trained at; prediction resizes every input to
            this area (keeping its aspect ratio).
        train_config: the resolved training options of the run that made the network.
        backbone_weights: what initialised the encoder (``imagenet``, ``none`` or a path).
        metrics: results of the run (best validation loss, test-split scores, ...).
        versions: handseg and library versions of the process that wrote the file.
        extra: keys of the stored metadata this version does not know, kept as they are.
    """

    architecture: ModelConfig | CropNetConfig = field(default_factory=ModelConfig)
    classes: tuple[str, ...] = CLASS_NAMES
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    train_config: dict[str, Any] = field(default_factory=dict)
    backbone_weights: str = "none"
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            classes = tuple(str(c) for c in self.classes)
            mean = tuple(float(v) for v in self.mean)
            std = tuple(float(v) for v in self.std)
            input_size = tuple(int(v) for v in self.input_size)
        except (TypeError, ValueError) as exc:
            raise HandsegError(f"the model card is damaged ({exc})") from None
        if len(classes) < 2:
            raise HandsegError(f"the model card names {len(classes)} class(es); it needs two")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise HandsegError(
                f"the model card's normalisation mean {mean} / std {std} is not three "
                "numbers each (std positive)"
            )
        if len(input_size) != 2 or min(input_size) < 1:
            raise HandsegError(f"the model card's input size {input_size} is not (H, W)")
        for name, value in [("classes", classes), ("mean", mean), ("std", std),
                            ("input_size", input_size)]:  # fmt: skip
            object.__setattr__(self, name, value)
        for name in ("train_config", "metrics", "versions", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise HandsegError(f"the model card's {name} is not a mapping")

    def to_dict(self) -> dict[str, Any]:
        """The card in ``model.pt``'s layout (module docstring): plain containers only, so it
        is JSON-serialisable and loads with ``torch.load(weights_only=True)``."""
        out = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.architecture.to_dict(),
            "classes": list(self.classes),
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "input_size": list(self.input_size),
            "train_config": self.train_config,
            "backbone_weights": str(self.backbone_weights),
            "metrics": self.metrics,
            "versions": self.versions,
        }
        return plain(out | {k: v for k, v in self.extra.items() if k not in out})

    @property
    def is_crop_segmenter(self) -> bool:
        """The network segments canonical hand crops (the hand pipeline's ``crops``)."""
        return isinstance(self.architecture, CropNetConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """Read the stored layout back; missing keys take the defaults, unknown keys go to
        :attr:`extra`. Raises :class:`HandsegError` when a value has the wrong type."""
        if not isinstance(d, dict):
            raise HandsegError(f"the model card is a {type(d).__name__}, not a mapping")
        defaults = cls()
        norm = d.get("normalization") or {}
        model = d.get("model")
        if model is not None and not isinstance(model, dict):
            raise HandsegError("the model card's architecture ('model') is not a mapping")
        if not isinstance(norm, dict):
            raise HandsegError("the model card's normalization is not a mapping")
        known = {"model", "classes", "normalization", "input_size", "train_config",
                 "backbone_weights", "metrics", "versions", *_LAYOUT_KEYS}  # fmt: skip
        try:
            if model and model.get("kind") == CROP_KIND:
                architecture = CropNetConfig.from_dict(model)
            else:
                architecture = ModelConfig.from_dict(model) if model else ModelConfig()
        except (TypeError, ValueError, KeyError) as exc:
            raise HandsegError(f"the model card's architecture is damaged ({exc})") from None
        return cls(
            architecture=architecture,
            classes=d.get("classes") or defaults.classes,
            mean=norm.get("mean") or defaults.mean,
            std=norm.get("std") or defaults.std,
            input_size=d.get("input_size") or defaults.input_size,
            train_config=d.get("train_config") or {},
            backbone_weights=str(d.get("backbone_weights") or defaults.backbone_weights),
            metrics=d.get("metrics") or {},
            versions=d.get("versions") or {},
            extra={k: v for k, v in d.items() if k not in known},
        )


def plain(x: Any) -> Any:
    """``x`` with only the types the weights-only unpickler (and JSON) accepts: dicts with
    str keys, lists, str, int, float, bool and None; numpy/torch scalars become numbers,
    anything else its ``str``."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, str):
        return str(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    if hasattr(x, "item"):
        return x.item()
    return str(x)
