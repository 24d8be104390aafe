"""``handseg serve``: a local web page and an HTTP API around the ``handseg predict`` model.

:class:`Segmenter` is the work (decode an upload, segment it, score it against a ground
truth), with no web framework in it; :func:`create_app` puts it behind FastAPI
(:mod:`handseg.app.serve_api`, which imports nothing from here: it sees the work through
its ``Service`` protocol) and :func:`serve` runs that app with uvicorn (the ``serve``
extra: ``pip install 'handseg[serve]'``).

The model is loaded exactly as ``handseg predict`` loads it
(:func:`handseg.infer.pipeline.load_segmenter`: ``weights_only`` model file, the same
runtime choice; without a model, the built-in hand detector + GrabCut refiner, as for
``handseg predict`` without ``--model``). Uploads are decoded by the same
:func:`handseg.core.imaging.read_image`, and the mask PNG holds the bytes ``handseg
predict`` writes, so the two agree bit for bit.
Metrics are :class:`handseg.eval.metrics.SegmentationMetrics`, as ``handseg evaluate``.

Sturdiness: request bodies are capped (:attr:`ServeLimits.max_upload_mb`, checked on the
declared length and again on the bytes as they arrive), images are measured before they
are decoded (:attr:`ServeLimits.max_megapixels`), at most ``workers`` requests are decoded
and segmented at a time and at most ``queue`` more wait (the rest get 503 at once), and
every failure is a 4xx/5xx answer with a one-line JSON body ``{"error": "..."}``. A
client's file names are shown back to it, never used as paths: uploads are written to
temporary files that the server names.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import socket
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from handseg.core.constants import MAX_MEGAPIXELS, __version__
from handseg.core.errors import HandsegError
from handseg.core.imaging import check_aspect, read_image, read_mask
from handseg.core.rundir import RunDir
from handseg.core.viz import overlay
from handseg.eval.metrics import SegmentationMetrics
from handseg.infer.clips import ClipSegmenter
from handseg.infer.pipeline import load_segmenter

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ServeLimits", "Segmenter", "UploadError", "create_app", "mask_png", "serve"]

log = logging.getLogger(__name__)

INSTALL_HINT = "the web server needs the serve extra: pip install 'handseg[serve]'"
NO_MODEL_NOTE = (
    "no model file, so no model card: the built-in pipeline (MediaPipe's hand detector and "
    "a refiner that needs no training) runs, as handseg predict without --model"
)
MAX_STREAMS = 8
"""Video streams (webcam sessions) tracked at a time."""
STREAM_IDLE_S = 60.0
"""A stream silent for this long is forgotten (its next frame starts a new clip)."""
STREAM_FPS = 10.0
"""The frame rate a stream's smoothing assumes (a webcam page sends a frame per answer)."""
STATIC = "static"
"""Folder of the page (index.html, app.js, style.css) inside this package."""


@dataclass(frozen=True)
class ServeLimits:
    """What one server accepts and how much work it takes on at once."""

    max_upload_mb: float = 20.0
    """Largest request body, in MB (10^6 bytes); larger ones get 413 before being read."""
    max_megapixels: float = MAX_MEGAPIXELS
    """Largest image (or mask), in millions of pixels, measured before decoding (413)."""
    workers: int = 2
    """Requests decoded and segmented at the same time (the network runs one at a time)."""
    queue: int = 16
    """Requests that may wait for a worker; more get 503 ("busy, retry") at once."""

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0 or self.max_megapixels <= 0:
            raise HandsegError("--max-upload-mb and --max-megapixels must be positive")
        if self.workers < 1 or self.queue < 0:
            raise HandsegError("--workers must be at least 1 and --queue at least 0")

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


class UploadError(HandsegError):
    """A request the server refuses: an HTTP status and a one-line reason (the app answers
    a HandsegError with its ``status``)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = " ".join(message.split())  # one line, whatever the cause said
        super().__init__(self.message)


def mask_png(mask: np.ndarray) -> bytes:
    """(H, W) {0, 1} mask -> the PNG bytes ``handseg predict`` writes (hand 255)."""
    buf = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def _overlay_jpeg(image: np.ndarray, mask: np.ndarray) -> bytes:
    """The overlay ``handseg predict`` writes (JPEG quality 90)."""
    buf = io.BytesIO()
    Image.fromarray(overlay(image, mask)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Segmenter:
    """The model behind the server: decode uploads, segment, score. Thread-safe: any
    number of threads may call it; the network itself runs one image at a time."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        limits: ServeLimits | None = None,
        device: str = "auto",
        **runtime: Any,
    ) -> None:
        """``model``: RUN/model.pt (or RUN, or model.onnx); None: the built-in hand detector
        pipeline. ``device`` and ``runtime`` (runtime, precision, threads, scale,
        calibration) as for ``handseg predict``."""
        self.model_path = Path(model) if model is not None else None
        self.limits = limits or ServeLimits()
        self.predictor = load_segmenter(model, device=device, **runtime)
        self._lock = threading.Lock()  # one network call at a time (and HandSegmenter.last)
        # stream id -> (its tracker, frame size, last frame's time)
        self._streams: OrderedDict[str, tuple[ClipSegmenter, tuple, float]] = OrderedDict()
        self._tmp = tempfile.TemporaryDirectory(prefix="handseg-serve-")
        self.facts = self._model_facts()

    def close(self) -> None:
        self._tmp.cleanup()

    # -- decoding ---------------------------------------------------------------------------
    def _check_pixels(self, data: bytes, what: str) -> None:
        """Refuse an image whose header declares more pixels than the limit (or than PIL
        will ever decode), before any pixel is decoded."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    w, h = im.size
        except Image.DecompressionBombError as exc:
            raise UploadError(
                413, f"the {what} has too many pixels to decode safely ({exc})"
            ) from None
        except Exception:  # noqa: BLE001 - not an image: read_image says so in its words
            return
        limit = self.limits.max_megapixels
        if w * h > limit * 1e6:
            raise UploadError(
                413,
                f"the {what} is {w} x {h} pixels ({w * h / 1e6:.0f} MP); this server takes at "
                f"most {limit:g} MP (--max-megapixels): downscale it",
            )

    def decode(self, data: bytes, what: str, reader: Callable[[Path], np.ndarray]) -> np.ndarray:
        """Uploaded bytes -> ``reader(path)`` on a temporary file this server names.

        Decoding goes through the same reader as files on disk, so an upload decodes
        exactly as ``handseg predict`` decodes the same file."""
        if not data:
            raise UploadError(422, f"the {what} is empty (0 bytes); send the file itself")
        self._check_pixels(data, what)
        with tempfile.NamedTemporaryFile(dir=self._tmp.name, suffix=".upload") as f:
            f.write(data)
            f.flush()
            try:
                return reader(Path(f.name))
            except HandsegError as exc:
                message = str(exc).replace(f" '{f.name}'", "").replace(f" {f.name}", "")
                message = message.replace(f"{what}:", f"the uploaded {what}:", 1)
                raise UploadError(
                    422, message.replace("replace or remove it", "send another")
                ) from None

    # -- the work ---------------------------------------------------------------------------
    def _predict(self, image: np.ndarray, out_size: tuple[int, int] | None = None):
        with self._lock:
            mask = self.predictor.predict(image, out_size=out_size)
            last = getattr(self.predictor, "last", None)
            hands = [h.to_json() for h in last.hands] if last is not None else None
        return mask, hands

    def _track(self, image: np.ndarray, stream: str):
        """A frame of video stream ``stream``: its own clip tracker (as handseg predict
        runs a video), kept for :data:`STREAM_IDLE_S` seconds of silence, at most
        :data:`MAX_STREAMS` at a time (the least recently used goes)."""
        with self._lock:
            now = time.monotonic()
            for key in [k for k, v in self._streams.items() if now - v[2] > STREAM_IDLE_S]:
                del self._streams[key]
            seg, size, _ = self._streams.pop(stream, (None, None, 0.0))
            if seg is None or size != image.shape[:2]:  # new, or the camera changed
                seg = ClipSegmenter(self.predictor, fps=STREAM_FPS)
            self._streams[stream] = (seg, image.shape[:2], now)
            while len(self._streams) > MAX_STREAMS:
                self._streams.pop(next(iter(self._streams)))
            result = seg(image)
        hands = [t.to_json() for t in result.hands] if seg.detects_hands else None
        return result.mask, hands

    def segment(
        self, data: bytes, *, want_overlay: bool = False, stream: str | None = None
    ) -> dict[str, Any]:
        """An uploaded image -> ``{"mask": PNG bytes, "width", "height", "hand_fraction",
        "hands" (with the hand detector: box, handedness, scores, landmarks per hand; in a
        stream also side and track), "overlay": JPEG bytes (with ``want_overlay``),
        "seconds"}``. ``stream``: the image is the next frame of that video stream (the
        webcam): hands tracked from frame to frame (:class:`handseg.infer.clips.ClipSegmenter`)."""
        start = time.perf_counter()
        image = self.decode(data, "image", read_image)
        mask, hands = self._predict(image) if stream is None else self._track(image, stream)
        out: dict[str, Any] = {
            "width": int(mask.shape[1]),
            "height": int(mask.shape[0]),
            "hand_fraction": float(mask.mean()),
            "mask": mask_png(mask),
        }
        if hands is not None:
            out["hands"] = hands
        if want_overlay:
            out["overlay"] = _overlay_jpeg(image, mask)
        out["seconds"] = time.perf_counter() - start
        return out

    def evaluate(
        self, image_data: bytes, mask_data: bytes, *, hand_value: str | None = None
    ) -> dict[str, Any]:
        """An uploaded photo and its ground-truth mask -> ``handseg evaluate``'s per-image
        record (``hand_iou``, ``bf``, ``class_bf``, ``accuracy``) and ``confusion`` (the
        image's counts, to sum over a set), plus everything :meth:`segment` returns.

        As ``handseg evaluate``, the prediction is scored at the mask's resolution."""
        start = time.perf_counter()
        image = self.decode(image_data, "image", read_image)
        gt = self.decode(mask_data, "mask", lambda p: read_mask(p, hand_value=hand_value))
        try:
            check_aspect(gt.shape[:2], image.shape[:2], "(uploaded)", target="the image")
        except HandsegError as exc:
            raise UploadError(422, str(exc)) from None
        pred, hands = self._predict(image, gt.shape[:2])
        mask = pred if pred.shape == image.shape[:2] else self._predict(image)[0]
        acc = SegmentationMetrics(self.predictor.classes)
        record = acc.update(pred, gt)
        record.pop("image"), record.pop("mask")
        out = record | {
            "confusion": acc.confusion.tolist(),
            "width": int(mask.shape[1]),
            "height": int(mask.shape[0]),
            "hand_fraction": float(mask.mean()),
            "mask": mask_png(mask),
            "overlay": _overlay_jpeg(image, mask),
        }
        if hands is not None:
            out["hands"] = hands
        out["seconds"] = time.perf_counter() - start
        return out

    # -- the model card ---------------------------------------------------------------------
    def _model_facts(self) -> dict[str, Any]:
        """What ``GET /api/model`` and the page show: the model card, the run folder's
        test-split metrics when the model sits in a run folder, and the runtime (and why
        it was chosen). Without a model file: ``file`` and ``model_card`` are null and
        ``note`` says that the built-in pipeline runs."""
        p = self.predictor
        network = p  # a Predictor; a HandSegmenter's network (if any) is a bound predict
        if not hasattr(p, "card"):
            network = getattr(getattr(p.pipeline, "network", None), "__self__", None)
        facts: dict[str, Any] = {
            "file": self.model_path.name if self.model_path is not None else None,
            "handseg_version": __version__,
            "classes": list(p.classes),
            "pipeline": getattr(p, "description", "whole-image network"),
            "limits": asdict(self.limits),
        }
        if self.model_path is None:
            facts |= {"model_card": None, "note": NO_MODEL_NOTE}
            return facts
        if network is not None:
            card = network.card
            facts |= {
                "runtime": network.backend.name,
                "runtime_reason": network.backend.reason,
                "input_size": list(card.input_size),
                "architecture": card.architecture.to_dict(),
                "backbone_weights": card.backbone_weights,
                "train_config": card.train_config,
                "metrics": card.metrics,
                "versions": card.versions,
            }
        run = RunDir(self.model_path.parent if self.model_path.is_file() else self.model_path)
        if run.test_metrics.is_file():
            facts["test_metrics"] = _test_metrics(run.test_metrics)
        return facts


def _test_metrics(path: Path) -> dict[str, Any] | None:
    """The headline of a run folder's test/metrics.json (None when unreadable)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        hand = doc["classes"].get("hand") or list(doc["classes"].values())[-1]
        return {"num_images": doc.get("num_images"), "hand_IoU": hand.get("IoU")} | doc["dataset"]
    except (OSError, ValueError, KeyError, AttributeError, IndexError, TypeError):
        log.warning("cannot read the test metrics in %s; not shown", path)
        return None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def static_dir() -> Path:
    """The page's files inside the installed package."""
    return Path(str(resources.files("handseg.app") / STATIC))


def serve(
    model: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits | None = None,
    device: str = "auto",
    **runtime: Any,
) -> None:
    """Load the model (None: the built-in hand detector pipeline) and serve the page and
    the API on ``host:port`` until Ctrl-C.

    The port is taken before the model loads, so a busy port fails at once, in one line."""
    try:
        import uvicorn  # noqa: F401 - checked here, used by run_server
    except ImportError:
        raise HandsegError(INSTALL_HINT) from None
    limits = limits or ServeLimits()
    if not is_loopback(host):
        log.warning(
            "serving on %s, which other machines can reach: the page and the API have no "
            "authentication; anyone who can connect can use the model (use --host 127.0.0.1 "
            "to keep it on this machine)",
            host,
        )
    try:
        sock = socket.create_server((host, port))
    except OSError as exc:
        raise HandsegError(
            f"cannot listen on {host} port {port}: {exc.strerror or exc}; choose another "
            "--port (or stop the program using it)"
        ) from None
    with sock:
        segmenter = Segmenter(model, limits=limits, device=device, **runtime)
        try:
            app = create_app(segmenter)
            shown = f"[{host}]" if ":" in host else host
            port = sock.getsockname()[1]
            facts = segmenter.facts
            if model is None:
                log.info("no --model: serving the built-in %s", facts["pipeline"])
            else:
                log.info("model %s (%s)", model, facts.get("runtime", facts["pipeline"]))
            log.info("open http://%s:%d/ in a browser (API docs: /docs); Ctrl-C stops", shown, port)
            run_server(app, sock, limits)
        finally:
            segmenter.close()


def run_server(app: FastAPI, sock: socket.socket, limits: ServeLimits) -> None:
    """Run ``app`` with uvicorn on the listening socket ``sock`` until Ctrl-C."""
    import uvicorn

    # uvicorn's own concurrency cap is a backstop for connection floods; the queue
    # (create_app) is what answers busy clients of the heavy endpoints
    config = uvicorn.Config(
        app, log_level="warning", limit_concurrency=4 * (limits.workers + limits.queue) + 16
    )
    uvicorn.Server(config).run(sockets=[sock])


def create_app(segmenter: Segmenter) -> FastAPI:
    """The FastAPI app: the page at ``/``, the API under ``/api``, ``/healthz``."""
    try:
        from handseg.app.serve_api import build_app
    except ImportError as exc:  # fastapi / starlette / python-multipart missing
        raise HandsegError(f"{INSTALL_HINT} ({exc})") from None
    return build_app(segmenter, static_dir())
