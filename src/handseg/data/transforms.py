"""Paired augmentations on numpy arrays: one random draw moves image and mask together.

Every transform takes ``image`` (H, W, 3) uint8 and ``mask`` (H, W) uint8 and returns new
arrays of the same kind. Geometric transforms resample the mask with nearest neighbour
only; pixels that come from outside the frame get image value 0 and mask value
``IGNORE_INDEX`` (excluded from loss and metrics, like MATLAB's ``<undefined>``).
Photometric transforms change the image only.

Randomness comes from the ``rng`` argument (an ``np.random.Generator``) when given, else
from one draw of torch's global RNG per call, so Lightning's ``seed_everything`` and its
per-worker seeding make a run reproducible.

The seed workflow augments with a random horizontal flip and a random x/y translation of
+-10 pixels (``"seed"``, the default). Further augmentations are available by name through
:data:`AUGMENTATIONS` / :func:`build_transform`, and other modules can add their own with
:func:`register_augmentation` (e.g. ``"background"`` compositing).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from handseg.core.constants import IGNORE_INDEX
from handseg.core.errors import HandsegError

Array = np.ndarray


def _resolve_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """The given generator, or a fresh one seeded from torch's global RNG (one draw)."""
    if rng is not None:
        return rng
    import torch

    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


class PairedTransform:
    """Base class: ``t(image, mask, rng=None) -> (image, mask)``.

    Subclasses implement :meth:`apply` with a resolved generator; ``__call__`` resolves it
    once so a :class:`Compose` shares one generator across its steps.
    """

    def __call__(
        self, image: Array, mask: Array, rng: np.random.Generator | None = None
    ) -> tuple[Array, Array]:
        return self.apply(image, mask, _resolve_rng(rng))

    def apply(self, image: Array, mask: Array, rng: np.random.Generator) -> tuple[Array, Array]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(PairedTransform):
    """Apply transforms in order with one shared generator."""

    def __init__(self, transforms: Sequence[PairedTransform]) -> None:
        self.transforms = list(transforms)

    def apply(self, image: Array, mask: Array, rng: np.random.Generator) -> tuple[Array, Array]:
        for t in self.transforms:
            image, mask = t.apply(image, mask, rng)
        return image, mask


class RandomHorizontalFlip(PairedTransform):
    """Mirror image and mask left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def apply(self, image: Array, mask: Array, rng: np.random.Generator) -> tuple[Array, Array]:
        if rng.random() < self.p:
            return image[:, ::-1].copy(), mask[:, ::-1].copy()
        return image, mask


def _shift(a: Array, dx: int, dy: int, fill: int) -> Array:
    """Move content by (dx, dy) pixels (x right, y down); uncovered pixels get ``fill``."""
    h, w = a.shape[:2]
    out = np.full_like(a, fill)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[dst_y, dst_x] = a[src_y, src_x]
    return out


class RandomTranslate(PairedTransform):
    """Shift by integer x and y offsets drawn uniformly from ``[-max_shift, max_shift]``."""

    def __init__(self, max_shift: int = 10) -> None:
        self.max_shift = int(max_shift)

    def apply(self, image: Array, mask: Array, rng: np.random.Generator) -> tuple[Array, Array]:
        dx, dy = (int(v) for v in rng.integers(-self.max_shift, self.max_shift + 1, size=2))
        if dx == 0 and dy == 0:
            return image, mask
        return _shift(image, dx, dy, 0), _shift(mask, dx, dy, IGNORE_INDEX)


class RandomScaleRotate(PairedTransform):
    """Scale by a factor from ``scale`` (log-uniform) and rotate by up to ``degrees``
    about the image centre; image bilinear, mask nearest; applied with probability ``p``."""

    def __init__(
        self, scale: tuple[float, float] = (0.75, 1.25), degrees: float = 15, p: float = 1.0
    ) -> None:
        self.scale = (float(scale[0]), float(scale[1]))
        self.degrees = float(degrees)
        self.p = float(p)

    def apply(self, image: Array, mask: Array, rng: np.random.Generator) -> tuple[Array, Array]:
        import cv2

        if rng.random() >= self.p:
            return image, mask
        s = float(np.exp(rng.uniform(np.log(self.scale[0]), np.log(self.scale[1]))))
        angle = float(rng.uniform(-self.degrees, self.degrees))
        h, w = mask.shape[:2]
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, s)  # (2, 3)
        image = cv2.warpAffine(
            image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )  # fmt: skip
        mask = cv2.warpAffine(
            mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
            borderValue=IGNORE_INDEX,
        )  # fmt: skip
        return image, mask


# Rec. 601 luma weights, as PIL's and torchvision's grayscale.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _hue_matrix(turns: float) -> Array:
    """(3, 3) RGB matrix rotating hue by ``turns`` of a full circle (YIQ rotation)."""
    to_yiq = np.array(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
    )
    c, s = np.cos(2 * np.pi * turns), np.sin(2 * np.pi * turns)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
    return np.linalg.inv(to_yiq) @ rot @ to_yiq


class ColorJitter(PairedTransform):
    """Random brightness, contrast, saturation, hue and colour temperature (image only).

    Factors are drawn uniformly: brightness and contrast and saturation in ``1 +- value``,
    hue shift in ``+- hue`` turns, temperature ``t`` in ``+- temperature`` (red scaled by
    ``1 + t``, blue by ``1 - t``).
    """

    def __init__(
        self,
        brightness: float = 0.3,
        contrast: float = 0.3,
        saturation: float = 0.3,
        hue: float = 0.03,
        temperature: float = 0.2,
    ) -> None:
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.hue = float(hue)
        self.temperature = float(temperature)

    def apply(self, image: Array, mask: Array, rng: np.random.Generator) -> tuple[Array, Array]:
        b, c, s = (
            1 + rng.uniform(-v, v) for v in (self.brightness, self.contrast, self.saturation)
        )
        hue = rng.uniform(-self.hue, self.hue)
        t = rng.uniform(-self.temperature, self.temperature)
        x = image.astype(np.float32) * b  # (H, W, 3)
        mean = float((x @ _LUMA).mean())
        x = (x - mean) * c + mean
        grey = (x @ _LUMA)[..., None]
        x = grey + (x - grey) * s
        x = x @ (_hue_matrix(hue) * np.array([1 + t, 1.0, 1 - t], np.float32)[:, None]).T
        return np.clip(x, 0, 255).round().astype(np.uint8), mask


class RandomBlurNoise(PairedTransform):
    """Image degradations, each with its own probability: Gaussian blur (sigma from
    ``blur_sigma``), Gaussian noise (std in grey levels from ``noise_std``) and JPEG
    re-encoding (quality from ``jpeg_quality``). The mask is unchanged."""

    def __init__(
        self,
        p_blur: float = 0.3,
        blur_sigma: tuple[float, float] = (0.5, 1.5),
        p_noise: float = 0.3,
        noise_std: tuple[float, float] = (2.0, 10.0),
        p_jpeg: float = 0.3,
        jpeg_quality: tuple[int, int] = (40, 90),
    ) -> None:
        self.p_blur, self.blur_sigma = float(p_blur), tuple(blur_sigma)
        self.p_noise, self.noise_std = float(p_noise), tuple(noise_std)
        self.p_jpeg, self.jpeg_quality = float(p_jpeg), tuple(jpeg_quality)

    def apply(self, image: Array, mask: Array, rng: np.random.Generator) -> tuple[Array, Array]:
        import cv2

        if rng.random() < self.p_blur:
            sigma = rng.uniform(*self.blur_sigma)
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)
        if rng.random() < self.p_noise:
            noise = rng.normal(0.0, rng.uniform(*self.noise_std), image.shape)
            image = np.clip(image + noise, 0, 255).round().astype(np.uint8)
        if rng.random() < self.p_jpeg:
            from PIL import Image

            quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(image)).save(buf, "JPEG", quality=quality)
            buf.seek(0)
            image = np.asarray(Image.open(buf).convert("RGB")).copy()
        return image, mask


Factory = Callable[..., "PairedTransform | None"]


def _pick(options: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: options[k] for k in names if k in options}


def _seed_factory(**options: Any) -> PairedTransform:
    return Compose([_flip_factory(**options), _translate_factory(**options)])


def _flip_factory(**options: Any) -> PairedTransform:
    return RandomHorizontalFlip(**_pick(options, "p"))


def _translate_factory(**options: Any) -> PairedTransform:
    return RandomTranslate(**_pick(options, "max_shift"))


def _scale_rotate_factory(**options: Any) -> PairedTransform:
    return RandomScaleRotate(**_pick(options, "scale", "degrees"))


def _color_factory(**options: Any) -> PairedTransform:
    names = ("brightness", "contrast", "saturation", "hue", "temperature")
    return ColorJitter(**_pick(options, *names))


def _blur_noise_factory(**options: Any) -> PairedTransform:
    names = ("p_blur", "blur_sigma", "p_noise", "noise_std", "p_jpeg", "jpeg_quality")
    return RandomBlurNoise(**_pick(options, *names))


def _none_factory(**options: Any) -> None:
    return None


AUGMENTATIONS: dict[str, Factory] = {
    "seed": _seed_factory,
    "flip": _flip_factory,
    "translate": _translate_factory,
    "scale-rotate": _scale_rotate_factory,
    "color": _color_factory,
    "blur-noise": _blur_noise_factory,
    "none": _none_factory,
}
"""Augmentation names usable from the CLI -> factory(**options) -> PairedTransform.

Each factory receives every option given to :func:`build_transform` and takes the ones it
knows (e.g. ``max_shift``, ``degrees``, ``brightness``)."""
DEFAULT_AUGMENTATION: tuple[str, ...] = ("seed",)
# "seed" is shorthand: expanding it lets ["seed", "flip"] flip once, not twice.
_EXPANSIONS = {"seed": ("flip", "translate")}


def register_augmentation(name: str, factory: Factory, *, overwrite: bool = False) -> None:
    """Make ``factory(**options) -> PairedTransform`` available under ``name``.

    The hook for augmentations that live in other modules, e.g.
    ``register_augmentation("background", lambda **o: BackgroundComposite(o["backgrounds"]))``.
    Re-registering a name needs ``overwrite=True``.
    """
    if not name or "," in name or name != name.strip():
        raise ValueError(f"invalid augmentation name {name!r}")
    if name in AUGMENTATIONS and not overwrite:
        raise ValueError(f"augmentation {name!r} is already registered")
    AUGMENTATIONS[name] = factory


def build_transform(
    names: Sequence[str] | str,
    *,
    factories: Mapping[str, Factory] | None = None,
    **options: Any,
) -> PairedTransform | None:
    """Build the paired transform for augmentation ``names``, applied in the given order.

    ``names`` may also be comma-separated (``"seed,color"``). ``["none"]`` (or an empty
    list) gives ``None``; ``"seed"`` is flip + translate +-10 px. Repeated names are applied
    once. An unknown name raises :class:`HandsegError` listing the valid ones.
    ``factories`` adds augmentations that live in higher stages (the training run passes
    ``{"background": ...}`` from :mod:`handseg.synth.compositing`).
    """
    known = {**(factories or {}), **AUGMENTATIONS}
    if isinstance(names, str):
        names = [names]
    flat = [n.strip() for item in names for n in str(item).split(",") if n.strip()]
    unknown = [n for n in flat if n not in known]
    if unknown:
        raise HandsegError(
            f"unknown augmentation {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(sorted(known))}"
        )
    if "none" in flat:
        if len(set(flat)) > 1:
            raise HandsegError("augmentation 'none' cannot be combined with other augmentations")
        return None
    expanded: list[str] = []
    for n in flat:
        builtin = n in _EXPANSIONS and AUGMENTATIONS[n] is _seed_factory
        for part in _EXPANSIONS[n] if builtin else (n,):
            if part not in expanded:
                expanded.append(part)
    steps = [t for n in expanded if (t := known[n](**options)) is not None]
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else Compose(steps)
