"""The ``model.pt`` file: a self-describing, weights-only checkpoint.

It holds plain containers and tensors only, so it loads with
``torch.load(weights_only=True)``: reading a model file never runs code from it. The
layout is the :class:`~handseg.model.card.ModelCard`'s (see :mod:`handseg.model.card`)
plus the weights::

    {"format": "handseg-model", "format_version": 1, "model": {...}, "state_dict": {...},
     "classes": [...], "normalization": {...}, "input_size": [H, W], "train_config": {...},
     "backbone_weights": str, "metrics": {...}, "versions": {...}}
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from handseg.core.constants import __version__
from handseg.core.errors import HandsegError
from handseg.core.io import atomic_torch_save
from handseg.model.card import FORMAT, FORMAT_VERSION, ModelCard
from handseg.model.crop_net import CropNetConfig, CropSegNet
from handseg.model.network import HandSegNet, ModelConfig

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "build_network",
    "read_model_card",
    "read_model_file",
    "save_model_file",
    "versions",
]


def build_network(architecture: ModelConfig | CropNetConfig) -> HandSegNet | CropSegNet:
    """The (untrained) network a model card's architecture describes."""
    if isinstance(architecture, CropNetConfig):
        return CropSegNet(architecture)
    return HandSegNet(architecture)


def versions() -> dict[str, str]:
    """handseg's and its main libraries' versions in this process."""
    import lightning  # heavy: imported only when a model file is written
    import segmentation_models_pytorch as smp
    import torchvision

    return {
        "handseg": str(__version__),
        "torch": str(torch.__version__),  # a TorchVersion object, not a plain str
        "torchvision": str(torchvision.__version__),
        "segmentation_models_pytorch": str(smp.__version__),
        "lightning": str(lightning.__version__),
    }


def save_model_file(
    path: str | Path,
    model: HandSegNet | CropSegNet,
    card: ModelCard | None = None,
    **fields: Any,
) -> Path:
    """Write ``model.pt`` (atomically: an interruption leaves the old file or the new one).

    Args:
        path: the file to write.
        model: the network; its weights (moved to the CPU) and its architecture
            (``model.cfg``) are stored.
        card: the model's card (default: :class:`ModelCard`'s defaults).
        fields: card fields to set on top of ``card`` (``classes``, ``mean``, ``std``,
            ``input_size``, ``train_config``, ``backbone_weights``, ``metrics``).

    The card's ``versions`` are this process's (:func:`versions`).
    """
    card = dataclasses.replace(
        card or ModelCard(), **fields, architecture=model.cfg, versions=versions()
    )
    layout = card.to_dict()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    head = ("format", "format_version", "model")
    obj = {k: layout[k] for k in head} | {"state_dict": state}
    obj |= {k: v for k, v in layout.items() if k not in head}
    return atomic_torch_save(obj, path)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def read_model_file(path: str | Path) -> tuple[HandSegNet | CropSegNet, ModelCard]:
    """Load ``model.pt`` (or a run folder holding one) -> (network in eval mode on the CPU,
    its card). Anything that is not a handseg model file raises :class:`HandsegError`."""
    path = Path(path)
    if path.is_dir() and (path / "model.pt").is_file():
        path = path / "model.pt"
    if not path.is_file():
        raise HandsegError(f"model file {path} does not exist (pass RUN/model.pt)")
    obj = _load_checked(path)
    try:
        card = ModelCard.from_dict(obj)
    except HandsegError as exc:
        raise HandsegError(f"{path}: {exc}") from None
    try:
        model = build_network(card.architecture)
        model.load_state_dict(obj["state_dict"], strict=True)
    except (KeyError, RuntimeError, TypeError, ValueError, HandsegError) as exc:
        raise HandsegError(
            f"{path}: the weights do not fit the stored architecture ({_first_line(exc)})"
        ) from None
    return model.eval(), card


def read_model_card(path: str | Path) -> ModelCard:
    """Only the card of ``model.pt`` (or a run folder holding one): no network is built."""
    path = Path(path)
    if path.is_dir() and (path / "model.pt").is_file():
        path = path / "model.pt"
    if not path.is_file():
        raise HandsegError(f"model file {path} does not exist (pass RUN/model.pt)")
    try:
        return ModelCard.from_dict(_load_checked(path))
    except HandsegError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise HandsegError(f"{path}: {exc}") from None


def _load_checked(path: Path) -> dict[str, Any]:
    """The unpickled file (weights only), after checking its format marker and version."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise HandsegError(
            f"{path} was refused: it holds Python objects that would run code when loaded, so it "
            f"is not a handseg model file ({_first_line(exc)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise HandsegError(
            f"{path} is not a handseg model file (cannot read it: {_first_line(exc)})"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise HandsegError(
            f"{path} is not a handseg model file (no 'format: {FORMAT}' marker); "
            "pass the model.pt written by 'handseg train'"
        )
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        written_by = obj.get("versions", {}).get("handseg", "unknown")
        raise HandsegError(
            f"{path} has model format version {version}, this handseg reads version "
            f"{FORMAT_VERSION}; retrain or use the handseg version that wrote it ({written_by})"
        )
    if not isinstance(obj.get("model"), dict):
        raise HandsegError(
            f"{path}: the weights do not fit the stored architecture (no 'model' entry)"
        )
    return obj
