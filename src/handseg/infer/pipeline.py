"""Hand-aware segmentation: find the hands first, then segment only where they are.

A :class:`HandPipeline` runs the detector (:class:`handseg.infer.detect.HandDetector`) and
then one of the refiners below on the photo; a photo where no hand is found gets an empty
mask, never a guess.

Refiners (``refine``):

- ``crops``: a trained crop segmenter (``handseg train --preset hands``): one canonical crop
  per hand, MediaPipe's landmark network as its encoder (:mod:`handseg.infer.crop_segmenter`);
- ``landmarks``: the 21 landmarks drawn as a mask (padded palm hull + thick finger bones);
- ``color``: a colour model of this photo sampled at the landmarks (hand) and the crop's
  edge (background), kept near the landmarks; ~3 ms a frame;
- ``grabcut``: GrabCut seeded by the landmarks (bones = sure hand, outside the enlarged
  box = sure background); slower;
- ``network``: a trained whole-image handseg network, kept only inside the detected
  hands' enlarged boxes.

``instances`` splits the mask into one mask per hand: each hand pixel goes to the hand
whose landmarks are nearest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from handseg.core.constants import CLASS_NAMES, DETECTORS, REFINERS
from handseg.core.errors import HandsegError
from handseg.infer.crop_segmenter import CropSegmenter
from handseg.infer.detect import DETECTOR_MODES, Hand, HandDetector
from handseg.infer.onnx_file import read_onnx_file
from handseg.infer.predictor import Predictor, load_model
from handseg.infer.refine import color_refine, grabcut_refine, hand_size, landmark_mask
from handseg.model.checkpoint import read_model_card, read_model_file

__all__ = [
    "DETECTORS",
    "REFINERS",
    "HandPipeline",
    "HandResult",
    "HandSegmenter",
    "box_region",
    "load_scorer",
    "load_segmenter",
    "split_instances",
]

log = logging.getLogger(__name__)

REDETECT_EVERY = 10
"""Video: palm detection every this many frames when fewer hands than wanted are followed."""
BOX_MARGIN = 0.25
"""Margin around a hand's landmark box, in palm lengths, inside which a network may paint."""


@dataclass
class HandResult:
    """What the pipeline found in one photo."""

    mask: np.ndarray
    """(H, W) uint8, 1 = hand."""
    hands: list[Hand]
    instances: list[np.ndarray]
    """One (H, W) uint8 0/1 mask per hand, in the order of ``hands``."""


def box_region(
    shape: tuple[int, ...], hands: Sequence[Hand], margin: float = BOX_MARGIN
) -> np.ndarray:
    """(H, W) bool: inside some hand's landmark box enlarged by ``margin`` palm lengths."""
    h, w = shape[:2]
    region = np.zeros((h, w), bool)
    for hand in hands:
        pad = margin * hand_size(hand.landmarks)
        xy = hand.landmarks[:, :2]
        x0, y0 = np.floor(xy.min(0) - pad).astype(int)
        x1, y1 = np.ceil(xy.max(0) + pad).astype(int)
        region[max(0, y0) : max(0, y1 + 1), max(0, x0) : max(0, x1 + 1)] = True
    return region


def split_instances(mask: np.ndarray, hands: Sequence[Hand]) -> list[np.ndarray]:
    """One mask per hand: every hand pixel of ``mask`` goes to the hand with the nearest
    landmark (so the instances never overlap and their union is ``mask``)."""
    if not hands:
        return []
    if len(hands) == 1:
        return [(mask > 0).astype(np.uint8)]
    h, w = mask.shape
    seeds_at = []
    for hand in hands:
        pts = np.round(hand.landmarks[:, :2]).astype(int)
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        if not ok.any():  # hand outside the frame: distance from its clipped box centre
            x0, y0, x1, y1 = hand.box
            centre = np.clip([(x0 + x1) / 2, (y0 + y1) / 2], 0, [w - 1, h - 1])
            pts, ok = centre.astype(int)[None], [0]
        seeds_at.append(pts[ok])
    # only the box holding the hand pixels and every seed: the 3x3 chamfer distance's
    # shortest paths stay inside it, so the owners are those of the whole frame
    ys, xs = np.nonzero(mask)
    allp = np.concatenate(seeds_at)
    r0, r1 = min(ys.min(initial=h), allp[:, 1].min()), max(ys.max(initial=0), allp[:, 1].max()) + 1
    c0, c1 = min(xs.min(initial=w), allp[:, 0].min()), max(xs.max(initial=0), allp[:, 0].max()) + 1
    dist = np.empty((len(hands), r1 - r0, c1 - c0), np.float32)
    for i, pts in enumerate(seeds_at):
        seeds = np.full(dist.shape[1:], 255, np.uint8)
        seeds[pts[:, 1] - r0, pts[:, 0] - c0] = 0
        dist[i] = cv2.distanceTransform(seeds, cv2.DIST_L2, 3)
    owner = np.full((h, w), -1, np.int64)
    owner[r0:r1, c0:c1] = dist.argmin(0)
    return [((mask > 0) & (owner == i)).astype(np.uint8) for i in range(len(hands))]


class HandPipeline:
    """Detector + refiner. ``pipeline(rgb)`` -> :class:`HandResult`.

    ``network`` is a callable ``(H, W, 3) uint8 -> (H, W) uint8`` mask (e.g. a
    :class:`handseg.infer.predictor.Predictor`'s ``predict``), needed for ``refine="network"``;
    ``crops`` a :class:`~handseg.infer.crop_segmenter.CropSegmenter`, for ``refine="crops"``.
    """

    def __init__(
        self,
        *,
        refine: str = "color",
        mode: str = "accurate",
        network: Callable[[np.ndarray], np.ndarray] | None = None,
        detector: HandDetector | None = None,
        threads: int | None = None,
        tracking: bool = False,
        crops: CropSegmenter | None = None,
    ) -> None:
        if refine not in REFINERS:
            raise HandsegError(f"unknown refiner {refine!r}; choose from {', '.join(REFINERS)}")
        if refine == "network" and network is None:
            raise HandsegError("refine 'network' needs a trained model (--model)")
        if refine == "crops" and crops is None:
            raise HandsegError(
                "refine 'crops' needs a crop segmenter: --model RUN/model.pt of a run trained "
                "with --preset hands"
            )
        if mode not in DETECTOR_MODES:
            raise HandsegError(
                f"unknown detector mode {mode!r}; choose from {', '.join(DETECTOR_MODES)}"
            )
        self.refine, self.mode = refine, mode
        self.tracking = tracking  # video: follow the previous frame's hands
        self._previous: list[Hand] = []
        self._frame = 0
        self.network, self.crops = network, crops
        self.detector = detector or HandDetector(num_threads=threads)

    def hands(self, rgb: np.ndarray) -> list[Hand]:
        options = DETECTOR_MODES[self.mode]
        if not self.tracking:
            return self.detector(rgb, **options)
        redetect = self._frame % REDETECT_EVERY == 0
        self._previous = self.detector.track(rgb, self._previous, redetect=redetect, **options)
        self._frame += 1
        return self._previous

    def __call__(self, rgb: np.ndarray) -> HandResult:
        return self.segment_hands(rgb, self.hands(rgb))

    def segment_hands(self, rgb: np.ndarray, hands: Sequence[Hand]) -> HandResult:
        """The refiner on hands found already (e.g. by a clip's tracker): mask + one mask
        per hand, in the order of ``hands``."""
        hands = list(hands)
        h, w = rgb.shape[:2]
        if not hands:
            return HandResult(np.zeros((h, w), np.uint8), [], [])
        if self.refine == "crops":
            mask, instances = self.crops(rgb, hands)
            return HandResult(mask, hands, instances)
        if self.refine == "landmarks":
            mask = landmark_mask((h, w), hands) > 0
        elif self.refine == "color":
            mask = color_refine(rgb, hands) > 0
        elif self.refine == "grabcut":
            mask = grabcut_refine(rgb, hands) > 0
        else:
            mask = (self.network(rgb) > 0) & box_region((h, w), hands)
        mask = mask.astype(np.uint8)
        return HandResult(mask, hands, split_instances(mask, hands))


class HandSegmenter:
    """A :class:`HandPipeline` behind the :class:`~handseg.infer.predictor.Predictor`
    interface (``predict``, ``predict_many``, ``classes``), so that folders, videos and the
    camera run through it unchanged. ``last`` holds the latest photo's :class:`HandResult`
    (hands, per-hand masks) for ``handseg predict --instances``.

    Photos use ``mode`` / ``refine``; :meth:`for_video` gives the real-time variant
    (``fast`` detection, hands followed from frame to frame as MediaPipe's video mode does,
    and the ``color`` refiner).
    """

    classes = CLASS_NAMES

    def __init__(self, pipeline: HandPipeline) -> None:
        self.pipeline = pipeline
        self.last: HandResult | None = None

    @property
    def description(self) -> str:
        p = self.pipeline
        if p.refine == "crops":
            return f"hand detector (mediapipe, {p.mode}) + crop segmenter ({p.crops.runtime})"
        return f"hand detector (mediapipe, {p.mode}) + {p.refine} refiner"

    def predict(self, image: np.ndarray, *, out_size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) uint8 mask in {0, 1} (resized to ``out_size``)."""
        self.last = self.pipeline(np.ascontiguousarray(image))
        mask = self.last.mask
        if out_size is not None and tuple(out_size) != mask.shape:
            mask = cv2.resize(mask, (out_size[1], out_size[0]), interpolation=cv2.INTER_NEAREST)
        return mask

    def predict_many(self, images, *, batch_size: int = 1):
        """Masks for a stream of images, one at a time (the detector has no batch axis)."""
        for image in images:
            yield self.predict(image)

    def for_video(self) -> HandSegmenter:
        p = self.pipeline
        refine = p.refine if p.refine in ("network", "crops") else "color"
        fast = HandPipeline(refine=refine, mode="fast", network=p.network, detector=p.detector,
                            tracking=True, crops=p.crops)  # fmt: skip
        return HandSegmenter(fast)


def load_segmenter(
    model: str | Path | None = None,
    *,
    detector: str | None = None,
    refine: str | None = None,
    mode: str | None = None,
    threads: int | None = None,
    **model_kwargs: Any,
) -> Predictor | HandSegmenter:
    """What ``handseg predict`` runs: the model's own pipeline unless told otherwise.

    A model trained with a hand-aware preset records ``detector`` / ``refine`` /
    ``detector_mode`` in its training options; ``None`` here means "as recorded"
    (``none`` for older models: the whole-image network, as before). Without a model the
    detector runs with a refiner that needs no training. When the model asks for the
    detector but the ``hands`` extra is missing, the whole-image network is used and a
    warning says so and how to install it; an explicit ``detector="mediapipe"`` fails with
    that one-line error instead. A crop segmenter (``--preset hands``) always runs behind
    the detector (its crops come from it); ``refine`` may still pick another refiner.
    """
    if model is not None and _is_crop_segmenter(model):
        is_onnx = Path(model).suffix.lower() == ".onnx"
        net, card = read_onnx_file(model) if is_onnx else read_model_file(model)
        return _crop_pipeline(net, card, detector, refine, mode, threads, model_kwargs)
    predictor = load_model(model, threads=threads, **model_kwargs) if model is not None else None
    recorded = predictor.card.train_config if predictor is not None else {}
    chosen = detector or recorded.get("detector") or ("none" if predictor else "mediapipe")
    if chosen not in DETECTORS:
        raise HandsegError(f"unknown detector {chosen!r}; choose from {', '.join(DETECTORS)}")
    if chosen == "none":
        if predictor is None:
            raise HandsegError("--detector none needs a trained model: add --model RUN/model.pt")
        return predictor
    refine = refine or recorded.get("refine") or "grabcut"
    if refine == "crops":
        raise HandsegError(
            "--refine crops needs a crop segmenter (a model trained with --preset hands)"
        )
    mode = mode or recorded.get("detector_mode") or "accurate"
    network = predictor.predict if predictor is not None else None
    try:
        hand_detector = HandDetector(num_threads=threads)
    except HandsegError as exc:
        if detector is not None or predictor is None:
            raise
        log.warning("%s; using the whole-image network instead", exc)
        return predictor
    pipeline = HandPipeline(refine=refine, mode=mode, network=network, detector=hand_detector)
    return HandSegmenter(pipeline)


def _crop_pipeline(net, card, detector, refine, mode, threads, options) -> HandSegmenter:
    """A crop segmenter's pipeline: the detector always (its crops come from the detector);
    ``refine`` may pick another refiner (grabcut, color, landmarks) for comparison."""
    if detector == "none":
        raise HandsegError(
            "this model segments hand crops and needs the hand detector: leave out --detector none"
        )
    refine = refine or "crops"
    if refine == "network":
        raise HandsegError("--refine network needs a whole-image model; this one segments crops")
    mode = mode or card.train_config.get("detector_mode") or "accurate"
    runtime = {k: options[k] for k in ("runtime", "precision") if options.get(k)}
    crops = CropSegmenter(net, card, threads=threads, **runtime)
    pipeline = HandPipeline(refine=refine, mode=mode, detector=HandDetector(num_threads=threads),
                            crops=crops)  # fmt: skip
    return HandSegmenter(pipeline)


def load_scorer(model: str | Path, **kwargs: Any) -> Predictor | HandSegmenter:
    """What ``handseg evaluate``, ``compare`` and the report score: a crop segmenter's own
    pipeline (detector + crop segmenter; it has no other way to run), else the model's
    network on the whole image, as before (``kwargs``: runtime, precision, threads, ...)."""
    if _is_crop_segmenter(model):
        threads = kwargs.pop("threads", None)
        kwargs.pop("device", None)  # the crop segmenter runs on the CPU runtimes
        is_onnx = Path(model).suffix.lower() == ".onnx"
        net, card = read_onnx_file(model) if is_onnx else read_model_file(model)
        return _crop_pipeline(net, card, None, None, None, threads, kwargs)
    return load_model(model, **kwargs)


def _is_crop_segmenter(model: str | Path) -> bool:
    """Whether a model file holds a crop segmenter (its card only: no network is built;
    remembered per file version, since the commands ask before every load)."""
    path = Path(model)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None  # missing: the loader below says so in one line
    if key is not None and key in _KIND_SEEN:
        return _KIND_SEEN[key]
    if path.suffix.lower() == ".onnx":
        crop = read_onnx_file(path)[1].is_crop_segmenter
    else:
        crop = read_model_card(path).is_crop_segmenter
    if key is not None:
        _KIND_SEEN[key] = crop
    return crop


_KIND_SEEN: dict[tuple[str, int, int], bool] = {}
