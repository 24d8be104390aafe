"""The hand detector stage: MediaPipe Hands without the mediapipe package.

Runs the two TFLite models that mediapipe 0.10.14 ships (``palm_detection_full``,
``hand_landmark_full``; see :mod:`handseg.infer.hand_models`) through ``ai-edge-litert``
and re-implements, in numpy + OpenCV, the graph ``mp.solutions.hands`` runs in
static-image mode (checked against it: median landmark difference 0.03 px, the same hand
counts on 289 photos):

  palm_detection_cpu             letterbox to 192x192 (zero border), SSD anchors,
                                 box/keypoint decoding, weighted NMS (IoU 0.3)
  palm_detection_detection_to_roi  rotation wrist -> middle MCP to 90 deg, shift_y -0.5,
                                 square long side, scale 2.6
  hand_landmark_cpu              rotated 224x224 crop (replicate border), presence
                                 threshold, handedness, z / 224 / 0.4
  hand_landmark_tracking_cpu     at most ``max_hands`` palms; drop hand ROIs that overlap
                                 an earlier one (IoU > 0.5)

Why not the mediapipe package: 0.10.14 is the last release with ``mp.solutions.hands``
that allows numpy 2; it pulls jax, jaxlib and opencv-contrib-python (a second ``cv2``)
and pins protobuf < 5, which holds onnx back. ai-edge-litert is Google's maintained
TFLite runtime with wheels for Python 3.10-3.14.

The refiners that turn landmarks into masks (landmarks drawn, colour model, GrabCut seeded by
them, in :mod:`handseg.infer.refine`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from handseg.core.errors import HandsegError
from handseg.core.imaging import skin_pixels
from handseg.infer.hand_models import find_hand_models

__all__ = [
    "ACCURATE",
    "BONES",
    "DETECTOR_MODES",
    "FAST",
    "Hand",
    "HandDetector",
    "THOROUGH",
]

INSTALL_HINT = "the hand detector needs the 'hands' extra: pip install 'handseg[hands]'"

# Landmark indices (MediaPipe hand topology).
WRIST = 0
PALM_IDS = (0, 1, 2, 5, 9, 13, 17)
FINGER_CHAINS = (
    (0, 1, 2, 3, 4),  # thumb
    (0, 5, 6, 7, 8),  # index
    (9, 10, 11, 12),  # middle (0-9 lies inside the palm hull)
    (13, 14, 15, 16),  # ring
    (0, 17, 18, 19, 20),  # little
)
BONES = tuple((a, b) for ch in FINGER_CHAINS for a, b in zip(ch[:-1], ch[1:])) + (
    (5, 9),
    (9, 13),
    (13, 17),
)


@dataclass(frozen=True)
class Hand:
    """One detected hand. Pixel coordinates of the photo it was found in."""

    landmarks: np.ndarray
    """(21, 3) float32: x, y in pixels; z relative depth in pixel units (wrist ~ 0)."""
    box: tuple[float, float, float, float]
    """(x0, y0, x1, y1): the landmarks' extent, clipped to the image."""
    handedness: str
    """"left" / "right": the person's hand, for an ordinary (unmirrored) photo."""
    handedness_score: float
    score: float
    """Palm-detector confidence (MediaPipe's detection score)."""
    presence: float
    """Landmark model's hand-presence score."""

    def to_json(self) -> dict[str, Any]:
        return {
            "box": [round(v, 2) for v in self.box],
            "handedness": self.handedness,
            "handedness_score": round(self.handedness_score, 4),
            "score": round(self.score, 4),
            "presence": round(self.presence, 4),
            "landmarks": np.round(self.landmarks.astype(np.float64), 2).tolist(),
        }


def _interpreter(path: Path, num_threads: int | None) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter  # heavy optional dependency
    except ImportError as exc:
        raise HandsegError(INSTALL_HINT) from exc
    it = Interpreter(model_path=str(path), num_threads=num_threads)
    it.allocate_tensors()
    return it


# --------------------------------------------------------------------------- anchors
def _ssd_anchors() -> np.ndarray:
    """SsdAnchorsCalculator for the 192x192 palm model: (2016, 2) centres (x, y).

    strides 8,16,16,16, 2 anchors per layer, layers of equal stride merged ->
    24x24x2 + 12x12x6; fixed_anchor_size, so width = height = 1.
    """
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = 192 // stride
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        c = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(c, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (4,) against boxes b (N,4), boxes as x0,y0,x1,y1."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(ua > 0, inter / np.maximum(ua, 1e-12), 0.0)


def _weighted_nms(boxes, kps, scores, thresh=0.3):
    """MediaPipe WEIGHTED non-max suppression; keeps the top score of each cluster."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    alive = np.ones(len(scores), bool)
    res = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        idx = np.nonzero(alive)[0]
        ov = _iou(boxes[i], boxes[idx])
        members = idx[ov > thresh]
        members = np.union1d(members, [i])
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(0) / w.sum()
        kp = (kps[members].reshape(len(members), -1) * w).sum(0) / w.sum()
        res.append((box, kp.reshape(-1, 2), float(scores[i])))
        alive[members] = False
    return res


# --------------------------------------------------------------------------- detector
class HandDetector:
    """MediaPipe Hands in static-image mode: palm detection, then 21 landmarks per palm.

    ``HandDetector()(rgb)`` -> list of :class:`Hand`. Needs the ``hands`` extra
    (``ai-edge-litert``) and the model files (:func:`handseg.infer.hand_models.fetch_hand_models`).
    """

    def __init__(self, num_threads: int | None = None) -> None:
        palm, landmark = find_hand_models()
        self.palm = _interpreter(palm, num_threads)
        self.lm = _interpreter(landmark, num_threads)
        self._palm_in = self.palm.get_input_details()[0]["index"]
        po = {o["shape"][-1]: o["index"] for o in self.palm.get_output_details()}
        self._palm_reg, self._palm_cls = po[18], po[1]
        self._lm_in = self.lm.get_input_details()[0]["index"]
        # outputs: Identity (63 screen lm), Identity_1 presence, Identity_2 handedness,
        # Identity_3 (63 world lm); sort by name so Identity < Identity_1 < ...
        outs = sorted(self.lm.get_output_details(), key=lambda o: o["name"])
        self._lm_xyz, self._lm_presence, self._lm_hand = (o["index"] for o in outs[:3])
        self.anchors = _ssd_anchors()

    # -- palm detection -------------------------------------------------------
    def palms(self, rgb: np.ndarray, min_score: float = 0.5):
        """Palm detections in pixels: list of (box x0,y0,x1,y1, keypoints (7,2), score)."""
        h, w = rgb.shape[:2]
        s = 192.0 / max(h, w)
        nw, nh = w * s, h * s
        ox, oy = (192 - nw) / 2, (192 - nh) / 2
        # like MediaPipe's OpenCV ImageToTensor converter: corner-to-corner mapping in
        # pixel-index coordinates (no half-pixel offsets)
        M = np.float32([[s, 0, ox], [0, s, oy]])
        inp = cv2.warpAffine(
            rgb, M, (192, 192), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        self.palm.set_tensor(self._palm_in, (inp.astype(np.float32) / 255.0)[None])
        self.palm.invoke()
        reg = self.palm.get_tensor(self._palm_reg)[0]
        logit = self.palm.get_tensor(self._palm_cls)[0, :, 0]
        score = 1.0 / (1.0 + np.exp(-np.clip(logit, -50.0, 50.0)))
        keep = score >= min_score
        if not keep.any():
            return []
        reg, score, anc = reg[keep] / 192.0, score[keep], self.anchors[keep]
        cx, cy = reg[:, 0] + anc[:, 0], reg[:, 1] + anc[:, 1]
        bw, bh = reg[:, 2], reg[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        kps = reg[:, 4:].reshape(-1, 7, 2) + anc[:, None, :]
        out = []
        # back from the 192x192 letterboxed square (normalised) to image pixels
        for box, kp, sc in _weighted_nms(boxes, kps, score, 0.3):
            box_px = (box * 192 - [ox, oy, ox, oy]) / s
            kp_px = (kp * 192 - [ox, oy]) / s
            out.append((box_px, kp_px, sc))
        return out

    # -- landmarks ------------------------------------------------------------
    @staticmethod
    def _palm_roi(box, kp):
        """PalmDetectionDetectionToRoi in pixel units: (cx, cy, side, rotation)."""
        x0, y0 = kp[0]
        x1, y1 = kp[2]
        rot = math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0)
        rot = rot - 2 * math.pi * math.floor((rot + math.pi) / (2 * math.pi))
        w, h = box[2] - box[0], box[3] - box[1]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        shift_y = -0.5
        cx += -h * shift_y * math.sin(rot)
        cy += h * shift_y * math.cos(rot)
        side = max(w, h) * 2.6
        return cx, cy, side, rot

    def _landmarks(self, rgb, roi):
        cx, cy, side, rot = roi
        c, s_ = math.cos(rot), math.sin(rot)
        # tensor (u, v) in [0,1] -> image: p = centre + side * R @ (uv - 0.5)
        a = side / 224.0
        T = np.float64([[c * a, -s_ * a, 0], [s_ * a, c * a, 0]])
        T[:, 2] = [cx, cy] - T[:, :2] @ [112.0, 112.0]
        # T maps tensor coords -> image coords (corner to corner, as MediaPipe does);
        # with WARP_INVERSE_MAP warpAffine takes exactly that dst->src map
        crop = cv2.warpAffine(
            rgb,
            T,
            (224, 224),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        self.lm.set_tensor(self._lm_in, (crop.astype(np.float32) / 255.0)[None])
        self.lm.invoke()
        raw = self.lm.get_tensor(self._lm_xyz)[0].reshape(21, 3).astype(np.float64)
        presence = float(self.lm.get_tensor(self._lm_presence).ravel()[0])
        left_prob = float(self.lm.get_tensor(self._lm_hand).ravel()[0])
        uv = raw[:, :2] / 224.0 - 0.5
        xy = np.stack(
            [
                cx + side * (c * uv[:, 0] - s_ * uv[:, 1]),
                cy + side * (s_ * uv[:, 0] + c * uv[:, 1]),
            ],
            1,
        )
        z = raw[:, 2] / 224.0 / 0.4 * side  # pixels, relative to the wrist-ish origin
        return np.column_stack([xy, z]).astype(np.float32), presence, left_prob

    # -- multi-scale / tiled palm detection ------------------------------------
    TILE_PRESETS = {
        None: (),
        "2x1": ((0.0, 0.0, 0.6, 1.0), (0.4, 0.0, 1.0, 1.0)),
        "2x2": (
            (0.0, 0.0, 0.6, 0.6),
            (0.4, 0.0, 1.0, 0.6),
            (0.0, 0.4, 0.6, 1.0),
            (0.4, 0.4, 1.0, 1.0),
        ),
        # 3 x 2 squares of 0.75 H for 4:3 frames (0.5625 W x 0.75 H), ~0.53x zoom of 640x480
        "3x2": tuple(
            (x, y, x + 0.5625, y + 0.75) for y in (0.0, 0.25) for x in (0.0, 0.21875, 0.4375)
        ),
        "centre": ((0.2, 0.2, 0.8, 0.8),),
        "bottom2": ((0.0, 0.3, 0.6, 1.0), (0.4, 0.3, 1.0, 1.0)),
    }

    def palms_multi(self, rgb, min_score=0.5, tiles=None):
        """Palm detections on the whole image plus on crops (tiles), merged by weighted NMS.

        tiles: None, a preset name (see TILE_PRESETS) or a sequence of fractional
        rectangles (x0, y0, x1, y1) in [0, 1]. A crop's detections are mapped back to
        full-image pixels before the merge (IoU 0.3, like the palm graph's own NMS).
        """
        rects = self.TILE_PRESETS[tiles] if (tiles is None or isinstance(tiles, str)) else tiles
        found = list(self.palms(rgb, min_score))
        if not rects:
            return found
        h, w = rgb.shape[:2]
        for fx0, fy0, fx1, fy1 in rects:
            x0, y0 = int(round(fx0 * w)), int(round(fy0 * h))
            x1, y1 = int(round(fx1 * w)), int(round(fy1 * h))
            for box, kp, sc in self.palms(rgb[y0:y1, x0:x1], min_score):
                found.append((box + [x0, y0, x0, y0], kp + [x0, y0], sc))
        if len(found) < 2:
            return found
        boxes = np.array([f[0] for f in found], np.float64)
        kps = np.array([f[1] for f in found], np.float64)
        scores = np.array([f[2] for f in found], np.float64)
        return [(b, k, s) for b, k, s in _weighted_nms(boxes, kps, scores, 0.3)]

    @staticmethod
    def _landmark_roi(lm, scale=2.0, shift_y=-0.1):
        """HandLandmarkLandmarksToRoi (tracking ROI) in pixels: (cx, cy, side, rotation)."""
        p = lm[:, :2].astype(np.float64)
        x0, y0 = p[0]
        c = ((p[5] + p[13]) / 2 + p[9]) / 2
        rot = math.pi / 2 - math.atan2(-(c[1] - y0), c[0] - x0)
        rot = rot - 2 * math.pi * math.floor((rot + math.pi) / (2 * math.pi))
        sub = p[[0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18]]
        cs, sn = math.cos(rot), math.sin(rot)
        # rotate into the hand-aligned frame, take the extent, rotate its centre back
        rx = sub[:, 0] * cs + sub[:, 1] * sn
        ry = -sub[:, 0] * sn + sub[:, 1] * cs
        bw, bh = rx.max() - rx.min(), ry.max() - ry.min()
        mx, my = (rx.max() + rx.min()) / 2, (ry.max() + ry.min()) / 2
        cx, cy = mx * cs - my * sn, mx * sn + my * cs
        cx += -bh * shift_y * sn
        cy += bh * shift_y * cs
        side = max(bw, bh) * scale
        return cx, cy, side, rot

    def __call__(
        self,
        rgb_uint8: np.ndarray,
        max_hands: int = 2,
        min_score: float = 0.5,
        min_presence: float = 0.5,
        mirrored: bool = False,
        tiles=None,
        second_pass: bool = False,
        max_candidates: int | None = None,
        search: bool = False,
    ) -> list[Hand]:
        """Hands in an (H, W, 3) uint8 RGB photo, best palm score first.

        ``tiles`` also runs the palm model on crops (:meth:`palms_multi`), ``second_pass``
        re-runs the landmark model on the ROI from the first landmarks (as MediaPipe's
        tracking does), ``max_candidates`` palms are tried by the landmark model (default
        ``max_hands``), ``search`` looks for hands the palm model missed where at least
        one was found (:meth:`search_missed`). ``mirrored=True`` returns MediaPipe's raw
        (selfie-view) handedness.
        """
        rgb = np.ascontiguousarray(rgb_uint8)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError("expected an HxWx3 uint8 RGB image")
        h, w = rgb.shape[:2]
        ncand = max_hands if max_candidates is None else max(max_candidates, max_hands)
        palms = self.palms_multi(rgb, min_score, tiles)[:ncand]
        rois, hands, lboxes = [], [], []
        for box, kp, sc in palms:
            if len(hands) >= max_hands:
                break
            roi = self._palm_roi(box, kp)
            r = roi[2] / 2  # AssociationNormRectCalculator(0.5), axis-aligned approximation
            rb = np.array([roi[0] - r, roi[1] - r, roi[0] + r, roi[1] + r])
            if rois and (_iou(rb, np.array(rois)) > 0.5).any():
                continue
            rois.append(rb)
            lm, presence, left_prob = self._landmarks(rgb, roi)
            if presence < min_presence:
                continue
            if second_pass:
                lm2, p2, lp2 = self._landmarks(rgb, self._landmark_roi(lm))
                if p2 >= min_presence:
                    lm, presence, left_prob = lm2, p2, lp2
            # drop a hand whose landmark box overlaps an accepted one (same hand twice)
            lb = np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()])
            if lboxes and (_iou(lb, np.array(lboxes)) > 0.4).any():
                continue
            lboxes.append(lb)
            hands.append(_make_hand(lm, presence, left_prob, float(sc), (h, w), mirrored))
        if search and 0 < len(hands) < max_hands:
            hands += self.search_missed(rgb, hands, max_hands=max_hands, mirrored=mirrored)
        return hands

    SEARCH_SIZES = (0.45, 0.65)
    """Window sides of :meth:`search_missed`, as fractions of the photo's short side."""

    def search_missed(
        self,
        rgb: np.ndarray,
        hands: Sequence[Hand],
        *,
        max_hands: int = 2,
        min_presence: float = 0.6,
        min_skin: float = 0.15,
        mirrored: bool = False,
    ) -> list[Hand]:
        """Hands the palm model missed: the landmark model alone on square windows.

        Windows of :attr:`SEARCH_SIZES` at half-window steps whose centre lies outside the
        found hands' boxes and whose middle quarter is at least ``min_skin`` skin-coloured
        (:func:`handseg.core.imaging.skin_pixels`), each at four rotations; a window whose best presence
        reaches ``min_presence`` is a candidate, kept when the landmark model's second pass
        on it reaches ``min_presence`` too and it overlaps no hand found before. Fists seen
        from the back and hands cut by the frame's edge, which the palm model scores low,
        are what it finds (the second hand of head-mounted frames: BENCHMARKS.md). About 40
        landmark passes per photo: slow, hence a mode of its own (``thorough``).
        """
        h, w = rgb.shape[:2]
        ii = cv2.integral(skin_pixels(rgb))
        boxes = [np.array(hand.box, np.float64) for hand in hands]
        windows = []
        for frac in self.SEARCH_SIZES:
            side = frac * min(h, w)
            nx = max(1, math.ceil((w - side) / (side / 2)) + 1)
            ny = max(1, math.ceil((h - side) / (side / 2)) + 1)
            for cy in side / 2 + (h - side) * np.linspace(0, 1, ny):
                for cx in side / 2 + (w - side) * np.linspace(0, 1, nx):
                    if any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes):
                        continue
                    x0, y0 = int(cx - side / 4), int(cy - side / 4)
                    x1, y1 = int(cx + side / 4), int(cy + side / 4)
                    share = (ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / max(
                        (x1 - x0) * (y1 - y0), 1
                    )
                    if share >= min_skin:
                        windows.append((share, cx, cy, side))
        candidates = []
        for _, cx, cy, side in sorted(windows, key=lambda c: -c[0]):
            best = max(
                (self._landmarks(rgb, (cx, cy, side, k * math.pi / 2)) for k in range(4)),
                key=lambda r: r[1],
            )
            if best[1] >= min_presence:
                candidates.append(best)
        found: list[Hand] = []
        for lm, _, _ in sorted(candidates, key=lambda c: -c[1]):
            if len(hands) + len(found) >= max_hands:
                break
            lm, presence, left_prob = self._landmarks(rgb, self._landmark_roi(lm))
            if presence < min_presence:
                continue
            lb = np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()])
            if boxes and (_iou(lb, np.array(boxes)) > 0.2).any():
                continue
            boxes.append(lb)
            found.append(_make_hand(lm, presence, left_prob, 0.0, (h, w), mirrored))
        return found

    def follow(
        self, rgb: np.ndarray, previous: Hand, *, min_presence: float = 0.5, mirrored: bool = False
    ) -> Hand | None:
        """The hand of the previous frame in this frame: the landmark model alone on the ROI
        of its previous landmarks (MediaPipe's tracking step); None when it is not there
        (presence below ``min_presence``). ``rgb``: (H, W, 3) uint8, C-contiguous."""
        lm, presence, left_prob = self._landmarks(rgb, self._landmark_roi(previous.landmarks))
        if presence < min_presence:
            return None
        return _make_hand(lm, presence, left_prob, previous.score, rgb.shape[:2], mirrored)

    def track(
        self,
        rgb_uint8: np.ndarray,
        previous: Sequence[Hand],
        *,
        redetect: bool = False,
        **options: Any,
    ) -> list[Hand]:
        """Video mode, as MediaPipe's tracking graph: follow each hand of the previous frame
        with the landmark model alone (on the ROI of its previous landmarks), and run palm
        detection when no hand was followed, and on ``redetect`` frames when fewer than
        ``max_hands`` were. Saves the palm model on most frames."""
        rgb = np.ascontiguousarray(rgb_uint8)
        max_hands = int(options.get("max_hands", 2))
        min_presence = float(options.get("min_presence", 0.5))
        mirrored = bool(options.get("mirrored", False))
        kept = [
            hand
            for prev in previous[:max_hands]
            if (hand := self.follow(rgb, prev, min_presence=min_presence, mirrored=mirrored))
        ]
        if (redetect or not kept) and len(kept) < max_hands:
            boxes = np.array([k.box for k in kept]) if kept else None
            for hand in self(rgb, **options):
                if len(kept) >= max_hands:
                    break
                if boxes is None or not (_iou(np.array(hand.box), boxes) > 0.3).any():
                    kept.append(hand)
        return kept


def _make_hand(
    lm: np.ndarray,
    presence: float,
    left_prob: float,
    score: float,
    shape: tuple[int, int],
    mirrored: bool,
) -> Hand:
    h, w = shape
    # The model labels hands as if the photo were mirrored (selfie view): its "Left" is
    # a right hand in an ordinary (unmirrored) photo.
    mp_label = "left" if left_prob >= 0.5 else "right"
    label = mp_label if mirrored else ("right" if mp_label == "left" else "left")
    x0, y0 = np.clip(lm[:, 0].min(), 0, w), np.clip(lm[:, 1].min(), 0, h)
    x1, y1 = np.clip(lm[:, 0].max(), 0, w), np.clip(lm[:, 1].max(), 0, h)
    return Hand(
        landmarks=lm,
        box=(float(x0), float(y0), float(x1), float(y1)),
        handedness=label,
        handedness_score=max(left_prob, 1 - left_prob),
        score=score,
        presence=presence,
    )


# Detector settings, measured on hands-wild (BENCHMARKS.md, "Hands in photos from anywhere"
# and "One learned pipeline").
# FAST: one palm pass, up to 2 landmark passes; ~16-18 ms at 640 x 480 on 2 quiet cores.
# ACCURATE: the palm model also on two overlapping halves (0.6 of the width each), low score
# and presence gates, 3 candidates, MediaPipe's second landmark pass. Chosen by the crop
# segmenter's masks (hand IoU on hands-wild 0.815 against 0.799 with 3 x 2 tiles of 0.53x
# zoom and 6 candidates, whose small extra palms took the second hand's place in the
# head-mounted frames) at about half the cost of the 3 x 2 tiles.
FAST: dict[str, Any] = dict(max_hands=2, min_score=0.5, min_presence=0.5)
ACCURATE: dict[str, Any] = dict(
    max_hands=2, min_score=0.3, min_presence=0.1, tiles="2x1", max_candidates=3, second_pass=True
)
# THOROUGH: ACCURATE and, where it found some hands but fewer than max_hands, the window
# search for the others (search_missed): hands-wild 0.824 against 0.807, ~40 more landmark
# passes on such photos.
THOROUGH: dict[str, Any] = ACCURATE | dict(search=True)
DETECTOR_MODES = {"accurate": ACCURATE, "fast": FAST, "thorough": THOROUGH}
"""Settings by name (names: :data:`handseg.core.constants.DETECTOR_MODES`)."""
