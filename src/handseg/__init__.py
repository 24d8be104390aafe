"""handseg: hand segmentation for Arabic Sign Language photos."""

__version__ = "0.1.0"
