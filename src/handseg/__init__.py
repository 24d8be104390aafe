"""handseg: hand segmentation for Arabic Sign Language photos.

>>> import handseg
>>> model = handseg.load_model("runs/demo/model.pt")
>>> mask = model.predict("photo.jpg")  # (H, W) uint8, 1 = hand, 0 = background
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]

if TYPE_CHECKING:
    from handseg.predict import Predictor


def load_model(path: Any, **kwargs: Any) -> Predictor:
    """Load a trained ``model.pt``; see :func:`handseg.predict.load_model`."""
    from handseg.predict import load_model as _load

    return _load(path, **kwargs)
