"""core.constants."""

from __future__ import annotations

IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INPUT_SIZE: tuple[int, int] = (720, 960)
"""(H, W) the network trains at unless told otherwise, and the input size a model card
assumes when its file names none (one default for training, prediction, export and int8
calibration)."""
IGNORE_INDEX = 255
"""Mask value for undefined pixels (e.g. filled in by a translation); no loss, no metric."""
CLASS_NAMES = ("background", "hand")
SUBSETS = ("train", "val", "test")
__version__ = "0.1.0"
FAMILIES: tuple[str, ...] = ("plain", "gradient", "texture", "clutter", "indoor", "skin")
"""Names of the built-in background generators, from easy to hard."""
VIDEO_EXTS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm")
"""Inputs with these extensions are read frame by frame with OpenCV."""

# The hand-aware pipeline (handseg.infer.pipeline): a model records which one it predicts with.
DETECTORS: tuple[str, ...] = ("none", "mediapipe")
"""``none``: the whole-image network; ``mediapipe``: find hands first, segment them."""
REFINERS: tuple[str, ...] = ("crops", "grabcut", "color", "landmarks", "network")
"""How detected hands become masks (see :mod:`handseg.infer.pipeline`)."""
DETECTOR_MODES: tuple[str, ...] = ("accurate", "fast", "thorough")
"""Detector settings: ``accurate`` (tiles, second pass; photos), ``fast`` (real time),
``thorough`` (accurate + a window search for a missed second hand; offline collections)."""
SKIN_CR: tuple[int, int] = (133, 173)
"""Inclusive Cr range of skin (OpenCV full-range YCrCb, 0..255)."""
SKIN_CB: tuple[int, int] = (77, 127)
"""Inclusive Cb range of skin."""
MAX_MEGAPIXELS = 50.0
"""The pixel budget of one image, mask or annotation (millions of pixels): every reader
checks the size a file declares against it before decoding or allocating anything.
``$HANDSEG_MAX_MEGAPIXELS`` (set by ``--max-megapixels``) raises or lowers it
(:func:`handseg.core.errors.check_pixels`)."""
MAX_MEGAPIXELS_ENV = "HANDSEG_MAX_MEGAPIXELS"
