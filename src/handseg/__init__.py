"""handseg: hand segmentation for Arabic Sign Language photos.

>>> import handseg
>>> model = handseg.load_model("runs/demo/model.pt")
>>> mask = model.predict("photo.jpg")  # (H, W) uint8, 1 = hand, 0 = background
>>> pipeline = handseg.load_segmenter("runs/hands/model.pt")  # the model's own pipeline
>>> mask = pipeline.predict(rgb_array)  # detector + crop segmenter for --preset hands

The package is layered by stage (see ARCHITECTURE.md): ``core`` <- ``data``, ``model`` <-
``synth`` <- ``infer``, ``eval`` <- ``train`` <- ``report`` <- ``app``.
"""

from __future__ import annotations

from handseg.core.constants import __version__
from handseg.infer.pipeline import load_segmenter
from handseg.infer.predictor import Predictor, load_model

__all__ = ["__version__", "Predictor", "load_model", "load_segmenter"]
