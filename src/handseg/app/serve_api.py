"""The FastAPI app of ``handseg serve`` (imported only when the ``serve`` extra is there).

Routes: ``GET /`` (the page), ``/static/*`` (its script and style), ``GET /healthz``,
``GET /api/model``, ``POST /api/segment``, ``POST /api/evaluate``; FastAPI documents them
at ``/openapi.json`` and ``/docs`` (Swagger UI from fastapi-offline's copy, so the docs
work offline too). Every error answer is ``{"error": "one line"}``: a
:class:`~handseg.core.errors.HandsegError` answers with its ``status`` attribute (the
refusals of :class:`handseg.app.serve.Segmenter` carry one), else 500.

This module knows the work only through :class:`Service` (what
:class:`handseg.app.serve.Segmenter` offers), so it imports nothing of :mod:`handseg.app`;
:func:`handseg.app.serve.create_app` imports it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from handseg.core.constants import __version__
from handseg.core.errors import HandsegError
from handseg.eval.metrics import to_json

__all__ = ["Service", "b64", "build_app"]

_CURL = "e.g. curl -F image=@photo.jpg"


class Service(Protocol):
    """The work behind the app (:class:`handseg.app.serve.Segmenter`)."""

    limits: Any
    """``max_bytes``, ``workers``, ``queue`` (:class:`handseg.app.serve.ServeLimits`)."""
    facts: dict[str, Any]
    """What ``GET /api/model`` answers."""

    def segment(
        self, data: bytes, *, want_overlay: bool = False, stream: str | None = None
    ) -> dict[str, Any]: ...

    def evaluate(
        self, image_data: bytes, mask_data: bytes, *, hand_value: str | None = None
    ) -> dict[str, Any]: ...


def b64(data: bytes) -> str:
    """Bytes as base64 text (images inside JSON answers)."""
    return base64.b64encode(data).decode("ascii")


def _refusal(status: int, message: str) -> HTTPException:
    """A request this app refuses (answered as ``{"error": message}``)."""
    return HTTPException(status, " ".join(message.split()))


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, on the declared
    Content-Length before reading anything, else as the bytes arrive (chunked uploads).

    An answer given before the client has sent its whole body (413, 415, ...) is followed
    by reading and discarding the rest, up to :attr:`DRAIN_BYTES` or :attr:`DRAIN_SECONDS`,
    before the answer is completed: closing a socket with unread bytes in it resets the
    connection, and the client would then lose the answer ("lingering close")."""

    DRAIN_BYTES = 256_000_000
    DRAIN_SECONDS = 10.0

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        has_body = b"chunked" in headers.get(b"transfer-encoding", b"").lower() or (
            length not in (None, b"0")
        )
        state = {"received": 0, "done": not has_body}

        async def limited() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
                if state["received"] > self.max_bytes:
                    raise _BodyTooLarge
            else:  # http.disconnect
                state["done"] = True
            return message

        async def lingering(message: dict) -> None:
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and not state["done"]:  # answered before the whole body came: drain it
                await send({**message, "more_body": True})
                await self._drain(receive)
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _error(400, "the Content-Length header is not a number")(
                    scope, receive, lingering
                )
                return
            if declared > self.max_bytes:
                await self._too_large(declared)(scope, receive, lingering)
                return
        await self.app(scope, limited, lingering)

    async def _drain(self, receive: Any) -> None:
        """Read and drop the rest of the request body (bounded in bytes and time)."""
        dropped = 0
        try:
            async with asyncio.timeout(self.DRAIN_SECONDS):
                while dropped < self.DRAIN_BYTES:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    dropped += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
        except TimeoutError:
            return

    def _too_large(self, n: int | None = None) -> JSONResponse:
        size = f" ({n / 1e6:.1f} MB)" if n is not None else ""
        return _error(
            413,
            f"the request body{size} is over this server's limit of "
            f"{self.max_bytes / 1e6:g} MB (--max-upload-mb); send a smaller file",
            headers={"Connection": "close"},
        )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status, headers=headers)


class _Admission:
    """At most ``capacity`` heavy requests inside the server (working or waiting)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.active = capacity, 0

    def __enter__(self) -> None:
        if self.active >= self.capacity:
            raise _refusal(503, f"the server is busy ({self.active} requests in hand); retry")
        self.active += 1  # the event loop is single-threaded: no lock needed

    def __exit__(self, *exc: Any) -> None:
        self.active -= 1


async def _read_form(
    request: Request, files: tuple[str, ...], fields: tuple[str, ...] = ()
) -> tuple[dict[str, bytes], dict[str, str]]:
    """The named file parts (required) and text fields (optional) of a multipart body."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise _refusal(
            415,
            f"send multipart/form-data with the file in field '{files[0]}' ({_CURL}); "
            f"got Content-Type {ctype or 'none'!r}",
        )
    try:
        form = await request.form(max_files=len(files), max_fields=len(fields) + 1)
    except _BodyTooLarge:
        raise _refusal(413, "the request body is over this server's limit") from None
    except HTTPException as exc:  # starlette's malformed-multipart answer
        raise _refusal(400, f"malformed multipart body: {exc.detail}") from None
    try:
        out: dict[str, bytes] = {}
        for name in files:
            part = form.get(name)
            if part is None:
                raise _refusal(400, f"missing file field '{name}' ({_CURL})")
            if not isinstance(part, UploadFile):
                raise _refusal(400, f"field '{name}' must be a file upload, not text")
            out[name] = await part.read()
        text = {k: v for k in fields if isinstance(v := form.get(k), str) and v.strip()}
        return out, text
    except _BodyTooLarge:
        raise _refusal(413, "the request body is over this server's limit") from None
    finally:
        await form.close()


def run_in_pool(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any, **kw: Any):
    """``fn(*args, **kw)`` on the worker pool, awaited from the event loop."""
    return asyncio.get_running_loop().run_in_executor(pool, lambda: fn(*args, **kw))


def _segment_json(result: dict[str, Any]) -> Response:
    """A :meth:`Service.segment` / ``evaluate`` result as JSON: images as base64,
    undefined metrics (NaN) as null."""
    out = {k: v for k, v in result.items() if k not in ("mask", "overlay")}
    out["mask_png"] = b64(result["mask"])
    if "overlay" in result:
        out["overlay_jpeg"] = b64(result["overlay"])
    return Response(to_json(out, indent=None), media_type="application/json")


def _exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(HandsegError)
    async def refused(request: Request, exc: HandsegError) -> JSONResponse:
        return _error(getattr(exc, "status", 500), str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")


def _form_doc(**fields: str) -> dict:
    """OpenAPI for a multipart form whose uploads are ``fields`` (name -> description;
    ``""`` for a required file), as FastAPI cannot infer it from routes that read the raw
    request."""
    files = {k: {"type": "string", "format": "binary"} for k, v in fields.items() if not v}
    text = {k: {"type": "string", "description": v} for k, v in fields.items() if v}
    schema = {"type": "object", "required": list(files), "properties": {**files, **text}}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


_FORM_DOC = _form_doc(image="")
_EVAL_DOC = _form_doc(image="", mask="", hand_value="mask value of hand")


def build_app(segmenter: Service, static: Path) -> FastAPI:
    """The app around ``segmenter``; its pool of ``workers`` threads lives as long as it."""
    limits = segmenter.limits
    pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="handseg-serve")
    admission = _Admission(limits.workers + limits.queue)
    app = _new_app(pool, limits.max_bytes, static)
    _add_info_routes(app, segmenter, admission, static)
    _add_work_routes(app, segmenter, pool, admission)
    return app


def _new_app(pool: ThreadPoolExecutor, max_bytes: int, static: Path) -> FastAPI:
    """The app without routes: body limit, one-line JSON errors, the page's static files;
    ``pool`` shuts down with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(  # FastAPI with /docs and /redoc served from the package, no CDN
        title="handseg",
        version=__version__,
        description="Segment hands in photos: the model of `handseg predict` over HTTP. "
        'Errors are `{"error": "one line"}` with a 4xx status (503: busy, retry).',
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    _exception_handlers(app)
    app.mount("/static", StaticFiles(directory=static), name="static")
    return app


def _add_info_routes(app: FastAPI, segmenter: Service, admission: _Admission, static: Path) -> None:
    """``GET /`` (the page), ``GET /healthz``, ``GET /api/model``."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static / "index.html")

    @app.get("/healthz", summary="Is the server up?")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "in_hand": admission.active, "capacity": admission.capacity}

    @app.get("/api/model", summary="The model card (or the built-in pipeline) and the limits")
    async def model() -> dict[str, Any]:
        return segmenter.facts


def _add_work_routes(
    app: FastAPI, segmenter: Service, pool: ThreadPoolExecutor, admission: _Admission
) -> None:
    """``POST /api/segment`` and ``POST /api/evaluate``: admitted (else 503), read, then
    run on the worker pool."""

    @app.post(
        "/api/segment",
        summary="Segment one image",
        description="Multipart field `image`. Answers the mask as PNG (hand 255, the "
        "image's size; headers X-Hand-Fraction, X-Image-Size), or with format=json: "
        "width, height, hand_fraction, mask_png (base64), hands (with the hand detector) "
        "and, with overlay=true, overlay_jpeg (base64). With stream=ID (any short name the "
        "client picks, e.g. one per webcam session) the frames of that stream are one clip: "
        "hands tracked as handseg predict tracks a video (each hand keeps its side and "
        "track, landmarks and masks smoothed over time).",
        openapi_extra=_FORM_DOC,
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "application/json": {}}}},
    )
    async def segment(
        request: Request,
        format: Literal["png", "json"] = Query("png", description="png or json"),
        overlay: bool = Query(False, description="json only: also the overlay JPEG"),
        stream: str | None = Query(
            None,
            max_length=64,
            pattern=r"^[A-Za-z0-9_.-]+$",
            description="frames of one video stream: hands tracked across its frames",
        ),  # fmt: skip
    ) -> Response:
        with admission:
            files, _ = await _read_form(request, ("image",))
            result = await run_in_pool(
                pool, segmenter.segment, files["image"],
                want_overlay=overlay and format == "json", stream=stream,
            )  # fmt: skip
        if format == "json":
            return _segment_json(result)
        headers = {
            "X-Hand-Fraction": f"{result['hand_fraction']:.6f}",
            "X-Image-Size": f"{result['width']}x{result['height']}",
        }
        return Response(result["mask"], media_type="image/png", headers=headers)

    @app.post(
        "/api/evaluate",
        summary="Score the prediction for one image against its ground-truth mask",
        description="Multipart fields `image`, `mask` (white = hand) and optionally "
        "`hand_value`. Answers handseg evaluate's per-image record: hand_iou, bf, "
        "class_bf, accuracy, confusion (counts, rows = truth), plus the prediction as in "
        "/api/segment?format=json&overlay=true.",
        openapi_extra=_EVAL_DOC,
    )
    async def evaluate(request: Request) -> Response:
        with admission:
            files, text = await _read_form(request, ("image", "mask"), ("hand_value",))
            result = await run_in_pool(
                pool, segmenter.evaluate, files["image"], files["mask"],
                hand_value=text.get("hand_value"),
            )  # fmt: skip
        return _segment_json(result)
