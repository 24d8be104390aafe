"""The ``model.pt`` file: a self-describing, weights-only checkpoint.

It holds plain containers and tensors only, so it loads with
``torch.load(weights_only=True)``: reading a model file never runs code from it.

    {"format": "handseg-model", "format_version": 1,
     "model": ModelConfig dict, "state_dict": {...}, "classes": [...],
     "normalization": {"mean": [...], "std": [...]}, "input_size": [H, W],
     "train_config": {...}, "backbone_weights": str, "metrics": {...}, "versions": {...}}
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from handseg.core.constants import __version__
from handseg.core.errors import HandsegError
from handseg.core.io import atomic_torch_save as save
from handseg.model.network import HandSegNet, ModelConfig

FORMAT = "handseg-model"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    import lightning
    import segmentation_models_pytorch as smp
    import torchvision

    return {
        "handseg": str(__version__),
        "torch": str(torch.__version__),  # a TorchVersion object, not a plain str
        "torchvision": str(torchvision.__version__),
        "segmentation_models_pytorch": str(smp.__version__),
        "lightning": str(lightning.__version__),
    }


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``:
    an interruption leaves either the old file or the new one, never half a file; a full
    disk raises :class:`HandsegError` naming ``path`` (see :mod:`handseg.io_safety`)."""

    return save(obj, path)


def save_model_file(
    path: str | Path,
    model: HandSegNet,
    *,
    classes: tuple[str, ...] | list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    input_size: tuple[int, int],
    train_config: dict[str, Any] | None = None,
    backbone_weights: str = "none",
    metrics: dict[str, Any] | None = None,
) -> Path:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    obj = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": _plain(model.cfg.to_dict()),
        "state_dict": state,
        "classes": _plain(list(classes)),
        "normalization": {"mean": _plain(list(mean)), "std": _plain(list(std))},
        "input_size": _plain(list(input_size)),
        "train_config": _plain(train_config or {}),
        "backbone_weights": str(backbone_weights),
        "metrics": _plain(metrics or {}),
        "versions": versions(),
    }
    return atomic_torch_save(obj, path)


def _plain(x: Any) -> Any:
    """Keep only types the weights-only unpickler accepts."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
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


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def read_model_file(path: str | Path) -> tuple[HandSegNet, dict[str, Any]]:
    """Load ``model.pt`` -> (model in eval mode on the CPU, metadata without the weights)."""
    path = Path(path)
    if path.is_dir() and (path / "model.pt").is_file():
        path = path / "model.pt"
    if not path.is_file():
        raise HandsegError(f"model file {path} does not exist (pass RUN/model.pt)")
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
        raise HandsegError(
            f"{path} has model format version {version}, this handseg reads version "
            f"{FORMAT_VERSION}; retrain or use the handseg version that wrote it "
            f"({obj.get('versions', {}).get('handseg', 'unknown')})"
        )
    try:
        model = HandSegNet(ModelConfig.from_dict(obj["model"]))
        model.load_state_dict(obj["state_dict"], strict=True)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise HandsegError(
            f"{path}: the weights do not fit the stored architecture ({_first_line(exc)})"
        ) from None
    model.eval()
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return model, meta
