"""handseg: hand segmentation for Arabic Sign Language photos.

>>> import handseg
>>> model = handseg.load_model("runs/demo/model.pt")
>>> mask = model.predict("photo.jpg")  # (H, W) uint8, 1 = hand, 0 = background

The package is layered by stage (see ARCHITECTURE.md): ``core`` <- ``data``, ``model`` <-
``synth`` <- ``infer``, ``eval`` <- ``train`` <- ``report`` <- ``app``.
"""

from __future__ import annotations

from handseg.core.constants import __version__
from handseg.infer.predictor import Predictor, load_model

__all__ = ["__version__", "Predictor", "load_model"]
