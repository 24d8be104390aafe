"""Background compositing: paste each training hand onto a new background.

The real data shows one signer on one background, so a network trained on it alone learns
that background. :class:`BackgroundComposite` keeps the hand (its ``mask == 1`` pixels,
bit for bit) and replaces everything else with a background from a
:class:`handseg.backgrounds.BackgroundSource`: the user's own photos (``--backgrounds
DIR``) and/or the built-in generators (plain, gradient, texture, clutter, indoor and
skin-coloured distractors).

Choices, and why:

- **Labels are never changed.** The mask is returned as given: background stays 0, hand
  stays 1, ignore (255) stays ignore. A new background never contains label-1 pixels.
- **No seam.** Hand pixels are untouched; outside the hand a feathered ring (Gaussian
  sigma drawn from ``feather``, 1-3 px by default, so 2-6 px wide) fades the colours of
  the hand's outermost 2 px into the new background (normalised convolution from those
  pixels; nothing outside the mask survives). Hand-drawn masks are often a few pixels
  larger than the skin (arsl-bg11's include 2-3 px of grey mat): a ring of skin colour,
  or a hard edge, would put a colour edge exactly on the label edge, a cue that plain
  photos lack. Trained with such a ring (the first version extended the inner skin
  colour), the network under-segmented plain photos by about 2 px (3.2 % of the hand
  missed) and lost 0.017 hand IoU on them; with the rim's colours it lost 0.005 (160
  epochs) and 0.002 (240 epochs) (BENCHMARKS.md, "Hands on any background").
- **Arms are background.** In the seed data the black sleeve is labelled background, and
  compositing replaces it with the rest of the old background, leaving a hand cut off at
  the wrist. With probability ``arm_prob`` an arm-like band is painted (on the background,
  under the hand) from the wrist to the frame edge: half of them bare skin in the hand's
  own colour, half sleeves of random colour. They are background in the mask, so the
  network learns that a skin-coloured arm attached at the wrist is not hand. The arm
  leaves the frame at the bottom (a signer facing the camera, as in the seed data) unless
  the hand is cut by the left or right frame edge; the wrist is the hand's part nearest
  that edge, the arm's direction up to ~30 degrees off the edge's normal.
- **Ignore pixels are composited like background** (their label stays ignore): after a
  geometric transform they are the black out-of-frame border, which must not survive as
  a cue either.
- **Camouflage.** With probability ``camouflage_prob`` the new background is recoloured
  towards the hand's own colour (its texture kept): skin-toned walls, wood, a face or a
  jumper right behind the hand, so that "skin colour on a contrasting background" is not
  enough to find the hand. Measured: alone (p 0.5, 80 epochs) it did not help; with
  p 0.7 and 160 epochs it is part of the recipe that passes 0.85 hand IoU on unseen
  skin-coloured distractors (BENCHMARKS.md).
- **Placement.** With probability ``placement_prob`` the hand is first moved and scaled
  (hand kept inside the frame); the frame's uncovered border is then genuinely new
  background and is labelled 0, the one case where the mask changes (with the hand).
  Off by default: the geometric augmentations (``scale-rotate``, ``translate``) already
  move the hand.

Put ``background`` before ``color`` in the augmentation list so the colour jitter acts on
the whole composite (hand and new background), as a camera would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from handseg.core.config import TrainConfig
from handseg.core.errors import HandsegError
from handseg.data.transforms import Factory, PairedTransform
from handseg.data.transforms import build_transform as build_paired_transform
from handseg.synth.backgrounds import BackgroundSource

Array = np.ndarray


class BackgroundComposite(PairedTransform):
    """Composite the hand onto a new background with probability ``p`` (paired transform).

    Args:
        source: where backgrounds come from; None = all built-in generator families.
        p: probability of replacing the background of one sample.
        feather: range of the Gaussian sigma (pixels) of the edge ring outside the hand;
            ``(0, 0)`` gives a hard edge.
        arm_prob: probability of painting an arm (bare skin or sleeve) from the wrist to
            the frame edge, as background.
        placement_prob: probability of moving and scaling the hand first
            (``placement_scale``, log-uniform), keeping it inside the frame.
        placement_scale: scale range for placement.
        camouflage_prob: probability of recolouring the background towards the hand's
            colour (:func:`camouflage`).
        bare_arm_share: share of the painted arms that are bare skin (the rest are
            sleeves). Bare arms are background in the mask: right for masks cut at the
            wrist, wrong for masks cut at the sleeve cuff (skin up to the sleeve = hand).
        cuff_prob: share of the bare arms that end in a sleeve cuff, the skin before it
            labelled hand: the one case besides placement where the mask changes (hand
            pixels are added, none removed).

    ``t(image, mask, rng)`` takes image (H, W, 3) uint8 and mask (H, W) uint8 in
    {0, 1, 255} and returns a new image of the same shape and the mask unchanged (the
    same array unless placement moved it). Pixels with ``mask == 1`` keep their exact
    values.
    """

    def __init__(
        self,
        source: BackgroundSource | None = None,
        p: float = 0.5,
        feather: tuple[float, float] = (1.0, 3.0),
        arm_prob: float = 0.5,
        placement_prob: float = 0.0,
        placement_scale: tuple[float, float] = (0.7, 1.3),
        camouflage_prob: float = 0.0,
        bare_arm_share: float = 0.5,
        cuff_prob: float = 0.0,
    ) -> None:
        probs = {
            "cuff_prob": cuff_prob,
            "bare_arm_share": bare_arm_share,
            "p": p,
            "arm_prob": arm_prob,
            "placement_prob": placement_prob,
            "camouflage_prob": camouflage_prob,
        }
        for name, v in probs.items():
            if not 0.0 <= float(v) <= 1.0:
                raise HandsegError(f"background augmentation: {name} must be within 0..1, got {v}")
        if len(feather) != 2 or not 0.0 <= feather[0] <= feather[1]:
            raise HandsegError(
                f"background augmentation: feather must be (lo, hi) >= 0, got {feather}"
            )
        if len(placement_scale) != 2 or not 0.0 < placement_scale[0] <= placement_scale[1]:
            raise HandsegError(
                f"background augmentation: placement_scale must be (lo, hi) > 0, got {placement_scale}"
            )
        self.source = source if source is not None else BackgroundSource()
        self.p = float(p)
        self.feather = (float(feather[0]), float(feather[1]))
        self.arm_prob = float(arm_prob)
        self.placement_prob = float(placement_prob)
        self.placement_scale = (float(placement_scale[0]), float(placement_scale[1]))
        self.camouflage_prob = float(camouflage_prob)
        self.bare_arm_share = float(bare_arm_share)
        self.cuff_prob = float(cuff_prob)

    def apply(self, image: Array, mask: Array, rng: np.random.Generator) -> tuple[Array, Array]:
        if rng.random() >= self.p:
            return image, mask
        h, w = mask.shape[:2]
        if image.shape[:2] != (h, w):
            raise HandsegError(f"image {image.shape[:2]} and mask {mask.shape[:2]} sizes differ")
        if rng.random() < self.placement_prob:
            image, mask = _place(image, mask, rng, self.placement_scale)
        background = self.source.sample(rng, (h, w)).astype(np.float32)  # (H, W, 3)
        hand = mask == 1  # (H, W) bool
        if not hand.any():
            return background.round().astype(np.uint8), mask
        if self.camouflage_prob and rng.random() < self.camouflage_prob:
            background = camouflage(background, image[hand], rng)
        if rng.random() < self.arm_prob:
            forearm = _paint_arm(background, hand, image, rng, self.bare_arm_share,
                                 self.cuff_prob)  # fmt: skip
            if forearm is not None and forearm.any():  # skin up to the cuff is hand
                mask = mask.copy()
                mask[forearm & (mask == 0)] = 1
        sigma = float(rng.uniform(*self.feather))
        return composite(image, hand, background, sigma), mask


def composite(image: Array, hand: Array, background: Array, sigma: float) -> Array:
    """Paste the ``hand`` pixels of ``image`` onto ``background`` with a feathered ring.

    Args:
        image: (H, W, 3) uint8, the photo the hand comes from.
        hand: (H, W) bool, the hand pixels.
        background: (H, W, 3) float32 or uint8, the new background.
        sigma: Gaussian sigma in pixels of the ring outside the hand (0 = hard edge).

    Returns:
        (H, W, 3) uint8: ``image`` where ``hand``; elsewhere the background, blended near
        the hand with the hand's edge colours extended outward (weight = the blurred hand
        indicator, below 1 outside the hand).
    """
    import cv2

    out = np.asarray(background, np.float32).copy()
    if sigma > 0:
        hf = hand.astype(np.float32)
        alpha = cv2.GaussianBlur(hf, (0, 0), sigmaX=sigma)  # (H, W), < 1 outside the hand
        ring = ~hand & (alpha > 1e-3)
        if ring.any():
            # the colour of the hand's outermost 2 px near each ring pixel, by normalised
            # convolution: the ring continues the mask's own rim (in hand-drawn masks often a
            # few pixels of the old background), so the label edge does not sit on a colour
            # edge that plain photos lack
            inner = cv2.erode(hand.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2)
            rim = hand.astype(np.uint8) - inner
            src = rim if rim.any() else hand.astype(np.uint8)
            sc = sigma + 2.0
            wgt = cv2.GaussianBlur(src.astype(np.float32), (0, 0), sigmaX=sc)  # (H, W)
            num = cv2.GaussianBlur(image.astype(np.float32) * src[..., None], (0, 0), sigmaX=sc)
            a = alpha[ring][:, None]  # (N, 1)
            den = wgt[ring][:, None]
            ok = den > 1e-4
            edge = np.where(ok, num[ring] / np.maximum(den, 1e-4), out[ring])  # (N, 3)
            out[ring] = a * edge + (1.0 - a) * out[ring]
    result = np.clip(out, 0, 255).round().astype(np.uint8)
    result[hand] = image[hand]
    return result


def camouflage(background: Array, hand_pixels: Array, rng: np.random.Generator) -> Array:
    """Recolour ``background`` towards the hand's colour, keeping its texture.

    Args:
        background: (H, W, 3) float32 0..255.
        hand_pixels: (N, 3) uint8, the hand's pixels.
        rng: random generator.

    Returns:
        (H, W, 3) float32: the background moved so that its mean colour is the hand's median
        colour times a brightness factor (0.8-1.2) and a slight tint (±5 %), its contrast
        scaled by 0.6-1.0, blended with the original by 0.6-1.0.
    """
    target = np.median(hand_pixels, axis=0).astype(np.float32) * rng.uniform(0.8, 1.2)
    target *= rng.uniform(0.95, 1.05, 3).astype(np.float32)
    mean = background.reshape(-1, 3).mean(0)  # (3,)
    shifted = target + (background - mean) * np.float32(rng.uniform(0.6, 1.0))
    t = np.float32(rng.uniform(0.6, 1.0))
    return np.clip(background + t * (shifted - background), 0.0, 255.0)


SKIN_TONES = np.array(
    [(235, 200, 180), (215, 170, 140), (190, 140, 105), (160, 110, 80), (120, 80, 58),
     (85, 58, 42), (60, 42, 32)], np.float32,
)  # fmt: skip
"""RGB points along the range of human skin tones, lightest first (:func:`skin_tone`)."""


def skin_tone(image: Array, hand: Array, rng: np.random.Generator) -> Array:
    """Recolour the ``hand`` pixels of ``image`` (uint8 (H, W, 3), bool (H, W)) to another
    skin tone: each channel scaled so the hand's median colour becomes a point drawn along
    :data:`SKIN_TONES` (tinted by up to 8 % per channel); shading and texture are kept, and a
    feathered edge (the mask's outermost pixel in between) blends the scaled hand into its
    surroundings. The seed data shows
    one signer's light skin; hands elsewhere are every tone."""
    import cv2

    if not hand.any():
        return image
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    k = min(int(t), len(SKIN_TONES) - 2)
    tone = SKIN_TONES[k] + (t - k) * (SKIN_TONES[k + 1] - SKIN_TONES[k])
    tone = tone * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    gains = tone / np.maximum(np.median(image[hand], axis=0).astype(np.float32), 1.0)
    # the mask's outermost pixel is often the old background: faded, not recoloured
    inner = cv2.erode(hand.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    alpha = cv2.GaussianBlur(inner, (0, 0), sigmaX=1.0)[..., None]
    x = image.astype(np.float32)
    out = x + alpha * (x * gains - x)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def _place(
    image: Array, mask: Array, rng: np.random.Generator, scale: tuple[float, float]
) -> tuple[Array, Array]:
    """Scale the hand about its centre and move it to a random place inside the frame.

    Out-of-frame pixels get mask 0: the caller fills them with new background."""
    import cv2

    ys, xs = np.nonzero(mask == 1)
    if len(ys) == 0:
        return image, mask
    h, w = mask.shape
    s = float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]))))
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    s = min(s, w / (x1 - x0), h / (y1 - y0))  # the hand must fit in the frame
    cx, cy = (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0
    half_w, half_h = s * (x1 - x0) / 2.0, s * (y1 - y0) / 2.0
    tx = rng.uniform(half_w - 0.5, w - 0.5 - half_w)
    ty = rng.uniform(half_h - 0.5, h - 0.5 - half_h)
    m = np.float32([[s, 0, tx - s * cx], [0, s, ty - s * cy]])  # (2, 3)
    image = cv2.warpAffine(
        image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    mask = cv2.warpAffine(
        mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return image, mask


_EDGES = ((0.0, 1.0), (-1.0, 0.0), (1.0, 0.0))  # outward (x, y): bottom, left, right


def _paint_arm(
    background: Array,
    hand: Array,
    image: Array,
    rng: np.random.Generator,
    bare: float = 0.5,
    cuff_prob: float = 0.0,
) -> Array | None:
    """Paint an arm (bare skin or sleeve) from the wrist to the nearest frame edge, in place.

    Args:
        background: (H, W, 3) float32, modified.
        hand: (H, W) bool, the hand pixels (the arm passes under them).
        image: (H, W, 3) uint8, gives the hand's skin colour.
        bare: probability of bare skin rather than a sleeve.
        cuff_prob: probability that a bare arm is bare only up to a sleeve cuff, its skin
            labelled hand (masks that mark the hand up to the sleeve).

    Returns:
        (H, W) bool of new hand pixels (the bare forearm before a cuff), or None.
    """

    h, w = hand.shape
    ys, xs = np.nonzero(hand)
    ref = float(np.sqrt(len(ys)))  # hand size in pixels
    # the arm leaves the frame at the bottom (a signer facing the camera), unless the hand
    # is cut by the left or right frame edge and not by the bottom one
    side = 0
    if ys.max() < h - 1:
        if xs.min() == 0:
            side = 1
        elif xs.max() == w - 1:
            side = 2
    ux, uy = _EDGES[side]
    # the wrist: hand pixels within 0.2 hand sizes of the hand's extreme towards that edge
    along = xs * ux + ys * uy
    near = along >= along.max() - 0.2 * ref
    cx, cy = float(xs[near].mean()), float(ys[near].mean())
    across = xs[near] * -uy + ys[near] * ux
    r0 = float(np.clip((across.max() - across.min() + 1) / 2.0, 0.18 * ref, 0.35 * ref))
    ang = rng.uniform(-0.5, 0.5)  # up to ~30 degrees off the edge normal
    ux, uy = ux * np.cos(ang) - uy * np.sin(ang), ux * np.sin(ang) + uy * np.cos(ang)
    px, py = cx - 0.3 * ref * ux, cy - 0.3 * ref * uy  # start tucked under the hand

    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    t = (xx - px) * ux + (yy - py) * uy  # (H, W) along the arm
    d = (xx - px) * -uy + (yy - py) * ux  # (H, W) across the arm
    radius = r0 * (1.0 + rng.uniform(0.0, 0.4) * np.clip(t, 0, None) / float(np.hypot(h, w)))
    dist = np.where(t >= 0, np.abs(d), np.hypot(t, d))
    cover = np.clip(radius - dist + 0.5, 0.0, 1.0)  # (H, W), anti-aliased edge
    if not cover.any():
        return None

    is_bare = rng.random() < bare
    cuff = None
    if is_bare and cuff_prob and rng.random() < cuff_prob:
        cuff = rng.uniform(0.5, 1.8) * ref  # bare forearm up to a sleeve cuff this far out
    cell = max(2.0, 0.05 * ref)  # fabric / skin texture, features ~5 % of the hand size

    def skin() -> Array:  # bare skin, in the hand's own colour: the hard negative
        colour = _skin_colour(image, hand, rng)
        return _arm_layer(colour, 3.0, rng.uniform(0.15, 0.35), d, radius, cell, rng)

    def sleeve() -> Array:
        return _arm_layer(_sleeve_colour(rng), 10.0, rng.uniform(0.2, 0.5), d, radius, cell, rng)

    if cuff is None:
        arm = skin() if is_bare else sleeve()
    else:  # skin to the cuff, then the sleeve
        arm = np.where((t < cuff)[..., None], skin(), sleeve())
    c3 = cover[..., None]
    background *= 1.0 - c3
    background += c3 * arm
    if cuff is None:
        return None
    return (cover > 0.5) & (t < cuff) & ~hand


def _skin_colour(image: Array, hand: Array, rng: np.random.Generator) -> Array:
    color = np.median(image[hand], axis=0).astype(np.float32) * rng.uniform(0.85, 1.1)
    return color * rng.uniform(0.95, 1.05, 3).astype(np.float32)


def _sleeve_colour(rng: np.random.Generator) -> Array:
    """Any colour, often dark."""
    import colorsys

    v = rng.uniform(0.05, 0.35) if rng.random() < 0.6 else rng.uniform(0.3, 0.95)
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.8), v), np.float32) * 255


def _arm_layer(color, texture, shade, d, radius, cell, rng) -> Array:
    """(H, W, 3) float32: the arm's colour with rounded shading across it and texture."""
    import cv2

    h, w = d.shape
    rel = np.clip(np.abs(d) / np.maximum(radius, 1.0), 0.0, 1.0)
    light = 1.0 - shade * rel**2  # (H, W) rounded shading across the arm
    grid = rng.standard_normal((int(h / cell) + 2, int(w / cell) + 2)).astype(np.float32)
    noise = texture * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)  # (H, W)
    return np.clip(color[None, None, :] * light[..., None] + noise[..., None], 0, 255)


def background_factory(**options: Any) -> BackgroundComposite:
    """The ``"background"`` augmentation of :func:`handseg.transforms.build_transform`
    (which imports this module when the name is first used).

    Options (others are ignored): ``backgrounds`` (folder of photos or None),
    ``background_prob`` (default 0.5), ``background_families`` (None = all),
    ``folder_prob``, ``arm_prob``, ``placement_prob``, ``feather``, ``camouflage_prob``,
    ``bare_arm_share``, ``cuff_prob``.
    """
    families = options.get("background_families")
    source = BackgroundSource(
        options.get("backgrounds"),
        families=None if families is None else tuple(families),
        folder_prob=float(options.get("folder_prob", 0.5)),
    )
    keys = ("arm_prob", "placement_prob", "feather", "camouflage_prob", "bare_arm_share",
            "cuff_prob")  # fmt: skip
    kw = {k: options[k] for k in keys if k in options}
    return BackgroundComposite(source, p=float(options.get("background_prob", 0.5)), **kw)


def augment_options(cfg: TrainConfig) -> dict[str, Any]:
    """The keyword options of :func:`build_transform` that ``cfg.augment`` needs."""
    opts: dict[str, Any] = {}
    if "background" in cfg.augment:
        opts["backgrounds"] = cfg.backgrounds
        opts["background_prob"] = cfg.background_prob
        opts["camouflage_prob"] = cfg.camouflage_prob
        opts["bare_arm_share"] = cfg.bare_arm_share
        opts["cuff_prob"] = cfg.cuff_prob
        opts["background_families"] = cfg.background_families or None
    return opts


FACTORIES: dict[str, Factory] = {"background": background_factory}
"""Augmentations this stage adds to :data:`handseg.data.transforms.AUGMENTATIONS`."""


def build_transform(names: Sequence[str] | str, **options: Any) -> PairedTransform | None:
    """:func:`handseg.data.transforms.build_transform` with background compositing
    (``"background"``) available too: the training augmentation."""
    return build_paired_transform(names, factories=FACTORIES, **options)
