"""``handseg serve``'s HTTP API on a real uvicorn (the ``live_server`` fixture): the same
masks as ``handseg predict``, the same scores as ``handseg evaluate``, the model card,
and a 4xx with a one-line JSON error for every malformed upload while the server keeps
serving."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'handseg[serve]'")
httpx = pytest.importorskip("httpx", reason="needs httpx (the test extra)")

from handseg.app.cli import main  # noqa: E402
from handseg.app.serve import Segmenter, ServeLimits, UploadError, is_loopback  # noqa: E402


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds one short row: a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory, synth_dir) -> Path:
    """Two synthetic photos (PNG and JPEG) and their masks: photos/, masks/."""
    root = tmp_path_factory.mktemp("serve")
    (root / "photos").mkdir()
    (root / "masks").mkdir()
    for i, name in enumerate(["a.png", "b.jpg"]):
        image = Image.open(synth_dir / "images" / f"synth_{i:04d}.png").convert("RGB")
        image.save(root / "photos" / name, quality=90)
        Image.open(synth_dir / "masks" / f"synth_{i:04d}_mask.png").save(
            root / "masks" / f"{Path(name).stem}.png"
        )
    return root


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server, timeout=60) as c:
        yield c


def test_masks_equal_handseg_predict(client, photos, model_file, tmp_path):
    assert main(["predict", str(photos / "photos"), "--model", str(model_file),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    for path in sorted((photos / "photos").iterdir()):
        expected = (tmp_path / f"{path.stem}_mask.png").read_bytes()
        r = client.post("/api/segment", files={"image": (path.name, path.read_bytes())})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        assert r.content == expected  # the same PNG, byte for byte
        mask = np.asarray(Image.open(io.BytesIO(expected))) > 0
        assert float(r.headers["x-hand-fraction"]) == pytest.approx(mask.mean(), abs=1e-6)
        j = client.post(
            "/api/segment?format=json&overlay=true",
            files={"image": (path.name, path.read_bytes())},
        ).json()
        assert base64.b64decode(j["mask_png"]) == expected
        assert (j["width"], j["height"]) == Image.open(path).size
        overlay = Image.open(io.BytesIO(base64.b64decode(j["overlay_jpeg"])))
        assert overlay.size == Image.open(path).size


def test_scores_equal_handseg_evaluate(client, photos, model_file, tmp_path):
    assert main(["evaluate", "--model", str(model_file), "--images", str(photos / "photos"),
                 "--masks", str(photos / "masks"), "--out", str(tmp_path)]) == 0  # fmt: skip
    expected = json.loads((tmp_path / "metrics.json").read_text())
    for record in expected["images"]:
        image = (photos / "photos" / record["image"]).read_bytes()
        mask = (photos / "masks" / record["mask"]).read_bytes()
        r = client.post("/api/evaluate", files={"image": ("x", image), "mask": ("y", mask)})
        assert r.status_code == 200, r.text
        got = r.json()
        for key in ("hand_iou", "bf", "accuracy"):
            assert got[key] == pytest.approx(record[key], rel=1e-12, abs=1e-12), key
        assert got["class_bf"] == pytest.approx(record["class_bf"], rel=1e-12, abs=1e-12)
        assert (
            sum(map(sum, got["confusion"]))
            == Image.open(io.BytesIO(mask)).size[0] * Image.open(io.BytesIO(mask)).size[1]
        )


def test_model_card_and_health(client, model_file):
    card = client.get("/api/model").json()
    assert card["classes"] == ["background", "hand"]
    assert card["input_size"] == [64, 80]
    assert card["file"] == "model.pt"  # a name, never the server's folders
    assert card["limits"]["max_upload_mb"] == 1
    assert card["runtime"] and card["runtime_reason"]  # the path auto took, and why
    assert "model_card" not in card and "note" not in card
    assert client.get("/healthz").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/api/segment", "/api/evaluate", "/api/model", "/healthz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/segment"]["post"]["requestBody"]["content"]
    docs = client.get("/docs").text  # offline: Swagger UI from the server, not a CDN
    assert "swagger-ui-bundle.js" in docs and "cdn." not in docs
    js = docs.split('src="')[1].split('"')[0]
    assert client.get(js).status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_model_card_shows_the_run_folders_test_metrics(model_file, tmp_path):
    run = tmp_path / "run"
    (run / "test").mkdir(parents=True)
    (run / "model.pt").write_bytes(model_file.read_bytes())
    doc = {"dataset": {"GlobalAccuracy": 0.9, "MeanBFScore": 0.5}, "num_images": 6,
           "classes": {"background": {"IoU": 0.8}, "hand": {"IoU": 0.7}}}  # fmt: skip
    (run / "test" / "metrics.json").write_text(json.dumps(doc))
    s = Segmenter(run / "model.pt", runtime="torch")
    try:
        assert s.facts["test_metrics"] == {"num_images": 6, "hand_IoU": 0.7,
                                           "GlobalAccuracy": 0.9, "MeanBFScore": 0.5}  # fmt: skip
        assert s.facts["runtime"].startswith("torch")
    finally:
        s.close()


def _malformed(photos: Path) -> list[tuple[str, str, dict]]:
    """(what, path, httpx request arguments) of uploads the server must refuse."""
    rng = np.random.default_rng(0)
    good = (photos / "photos" / "a.png").read_bytes()
    jpg = (photos / "photos" / "b.jpg").read_bytes()
    mask = (photos / "masks" / "a.png").read_bytes()
    multi = np.repeat(np.arange(4, dtype=np.uint8) * 60, 16)[None].repeat(64, 0)[:, :80]
    seg, ev = "/api/segment", "/api/evaluate"

    def up(data: bytes, name: str = "f.png", field: str = "image") -> dict:
        return {"files": {field: (name, data)}}

    def pair(image: bytes, m: bytes, **data: str) -> dict:
        return {"files": {"image": ("i.png", image), "mask": ("m.png", m)}, "data": data}

    def chunks(n: int):
        for _ in range(n):
            yield b"\0" * 65536

    return [
        ("empty file", seg, up(b"")),
        ("truncated PNG", seg, up(good[: len(good) // 2])),
        ("truncated JPEG", seg, up(jpg[: len(jpg) // 3], "f.jpg")),
        ("PNG header only", seg, up(good[:40])),
        ("text file", seg, up(b"hello, this is not an image\n", "notes.txt")),
        ("HTML named .png", seg, up(b"<html><body>hi</body></html>")),
        ("random bytes", seg, up(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())),
        ("PDF", seg, up(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "a.pdf")),
        ("decompression bomb (30000 x 30000 PNG)", seg, up(_png_header(30000, 30000))),
        ("image over the megapixel limit (2000 x 1000)", seg, up(_png_header(2000, 1000))),
        ("PNG of 0 x 0 pixels", seg, up(_png_header(0, 0))),
        ("GIF header only", seg, up(b"GIF89a\x10\x27\x10\x27\x00\x00\x00")),
        (
            "100 MB body",
            seg,
            {
                "content": b"\0" * 100_000_000,
                "headers": {"content-type": "multipart/form-data; boundary=x"},
            },
        ),
        (
            "2 MB chunked body",
            seg,
            {"content": chunks(32), "headers": {"content-type": "multipart/form-data; boundary=x"}},
        ),
        ("JSON body", seg, {"json": {"image": "a.png"}}),
        ("raw image/png body", seg, {"content": good, "headers": {"content-type": "image/png"}}),
        ("text/plain body", seg, {"content": b"x", "headers": {"content-type": "text/plain"}}),
        ("form-urlencoded body", seg, {"data": {"image": "a.png"}}),
        ("no content type", seg, {"content": good}),
        ("missing field", seg, up(good, field="photo")),
        ("field is text", seg, {"data": {"image": "/etc/passwd"}, "files": {"other": ("x", b"1")}}),
        (
            "two files in one request",
            seg,
            {"files": [("image", ("a.png", good)), ("image", ("b.png", good))]},
        ),
        (
            "multipart without boundary",
            seg,
            {"content": good, "headers": {"content-type": "multipart/form-data"}},
        ),
        (
            "multipart garbage",
            seg,
            {
                "content": b"--x\r\nnonsense",
                "headers": {"content-type": "multipart/form-data; boundary=x"},
            },
        ),
        ("bad format", seg + "?format=xml", up(good)),
        ("bad overlay flag", seg + "?format=json&overlay=perhaps", up(good)),
        ("evaluate without mask", ev, up(good)),
        ("evaluate, mask not an image", ev, pair(good, b"not a mask")),
        ("evaluate, empty mask", ev, pair(good, b"")),
        ("evaluate, truncated mask", ev, pair(good, mask[: len(mask) // 2])),
        ("evaluate, mask of another shape", ev, pair(good, _png(np.zeros((64, 200), np.uint8)))),
        ("evaluate, multi-label mask", ev, pair(good, _png(multi))),
        ("evaluate, hand value not a number", ev, pair(good, mask, hand_value="hand")),
        ("evaluate, mask bomb", ev, pair(good, _png_header(40000, 40000))),
        ("evaluate, image is text", ev, pair(b"just text", mask)),
    ]


def test_malformed_uploads_get_a_4xx_json_error_and_the_server_keeps_serving(client, photos):
    cases = _malformed(photos)
    assert len(cases) >= 30
    for what, path, kwargs in cases:
        r = client.post(path, **kwargs)
        assert 400 <= r.status_code < 500, f"{what}: {r.status_code} {r.text[:200]}"
        assert r.headers["content-type"] == "application/json", what
        error = r.json()["error"]
        assert error and "\n" not in error, what
        assert "/tmp" not in error and "handseg-serve" not in error, f"{what}: {error}"
        assert client.get("/healthz").json()["status"] == "ok", f"after {what}"
    # and it still segments
    r = client.post(
        "/api/segment", files={"image": ("a.png", (photos / "photos" / "a.png").read_bytes())}
    )
    assert r.status_code == 200


def test_statuses_say_what_went_wrong(client, photos):
    good = (photos / "photos" / "a.png").read_bytes()
    assert (
        client.post("/api/segment", content=good, headers={"content-type": "image/png"}).status_code
        == 415
    )
    assert client.post("/api/segment", files={"photo": ("a.png", good)}).status_code == 400
    r = client.post("/api/segment", files={"image": ("a.png", b"nope")})
    assert r.status_code == 422 and "the uploaded image" in r.json()["error"]
    r = client.post("/api/segment", files={"image": ("a.png", _png_header(30000, 30000))})
    assert r.status_code == 413 and "pixels" in r.json()["error"]
    assert client.get("/api/segment").status_code == 405
    assert client.get("/api/nothing").json() == {"error": "Not Found"}


def test_a_huge_declared_body_is_refused_before_it_is_read(live_server):
    """100 MB announced, 10 bytes sent: the answer comes at once, from the headers alone."""
    host, port = live_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /api/segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  b"boundary=x\r\nContent-Length: 100000000\r\n\r\n0123456789")  # fmt: skip
        answer = b""
        while b'"}' not in answer:  # the head, then the JSON body, while 99.99 MB never come
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {answer!r}"
            answer += chunk
    head, body = answer.decode("latin-1").split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 413"), head
    assert "limit of 1 MB" in json.loads(body)["error"]


def test_client_file_names_are_never_paths(client, photos, tmp_path):
    target = tmp_path / "written.png"
    name = f"../../../../{target}"
    good = (photos / "photos" / "a.png").read_bytes()
    r = client.post("/api/segment", files={"image": (name, good)})
    assert r.status_code == 200
    assert not target.exists()


def test_busy_server_says_503():
    from starlette.exceptions import HTTPException

    from handseg.app.serve_api import _Admission

    gate = _Admission(2)
    with gate, gate:
        with pytest.raises(HTTPException) as err, gate:
            pass
        assert err.value.status_code == 503 and "busy" in err.value.detail
    assert gate.active == 0


def test_serve_and_serve_api_import_one_way():
    """serve.py imports serve_api (lazily: the serve extra is optional); never the reverse."""
    import ast

    import handseg.app.serve_api as api

    tree = ast.parse(Path(api.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("handseg.app")}


def test_concurrent_requests_get_the_sequential_answers(live_server, photos):
    """Many clients at once: every answer is the one a single client gets."""
    from concurrent.futures import ThreadPoolExecutor

    files = sorted((photos / "photos").iterdir())

    def ask(path: Path) -> bytes:
        with httpx.Client(base_url=live_server, timeout=60) as c:
            r = c.post("/api/segment", files={"image": (path.name, path.read_bytes())})
            assert r.status_code == 200, r.text
            return r.content

    alone = [ask(p) for p in files]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, files * 6))
    assert together == alone * 6


def test_cli_serve_binds_loopback_and_warns_off_it(monkeypatch, model_file, caplog, capsys):
    import handseg.app.serve as serve_module

    class Loaded:  # what serve() needs of a Segmenter, without loading the model again
        def __init__(self, model, *, limits, device, **runtime):
            self.limits, self.facts = limits, {"pipeline": "stub", "runtime": runtime["runtime"]}

        def close(self):
            pass

    calls = []
    monkeypatch.setattr(serve_module, "Segmenter", Loaded)
    monkeypatch.setattr(serve_module, "create_app", lambda segmenter: segmenter)
    monkeypatch.setattr(
        serve_module,
        "run_server",
        lambda app, sock, limits: calls.append((app, sock.getsockname())),
    )
    with caplog.at_level(logging.WARNING):
        assert main(["serve", "--model", str(model_file), "--port", "0", "--runtime", "torch"]) == 0
    app, address = calls[-1]
    assert address[0] == "127.0.0.1"
    assert app.facts["runtime"] == "torch" and app.limits == ServeLimits()
    assert "no authentication" not in caplog.text
    assert main(["serve", "--model", str(model_file), "--host", "0.0.0.0", "--port", "0",
                 "--workers", "1", "--queue", "3", "--max-upload-mb", "5"]) == 0  # fmt: skip
    app, address = calls[-1]
    assert address[0] == "0.0.0.0"
    assert app.limits == ServeLimits(max_upload_mb=5, workers=1, queue=3)
    assert "no authentication" in caplog.text
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("192.168.1.5")
    with socket.create_server(("127.0.0.1", 0)) as busy:  # a port in use: one line, status 2
        port = str(busy.getsockname()[1])
        assert main(["serve", "--model", str(model_file), "--port", port]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot listen on 127.0.0.1 port") and "\n" not in err


def test_limits_are_checked():
    from handseg.core.errors import HandsegError

    with pytest.raises(HandsegError, match="--workers"):
        ServeLimits(workers=0)
    with pytest.raises(HandsegError, match="positive"):
        ServeLimits(max_upload_mb=0)


def test_a_detector_pipeline_answers_with_its_hands(monkeypatch, photos):
    """With the hand detector (a HandSegmenter), the JSON answer lists each hand's box."""
    from types import SimpleNamespace

    import handseg.app.serve as serve_module

    class Hand:
        def to_json(self):
            return {"box": [1.0, 2.0, 30.0, 40.0], "handedness": "Left"}

    class DetectorPipeline:  # the HandSegmenter interface: classes, predict, last
        classes = ("background", "hand")
        description = "hand detector (stub) + color refiner"
        pipeline = SimpleNamespace(network=None)
        last = None

        def predict(self, image, *, out_size=None):
            h, w = out_size or image.shape[:2]
            self.last = SimpleNamespace(hands=[Hand()])
            return np.ones((h, w), np.uint8)

    monkeypatch.setattr(serve_module, "load_segmenter", lambda model, **kw: DetectorPipeline())
    s = Segmenter("model.pt")
    try:
        r = s.segment((photos / "photos" / "a.png").read_bytes())
        assert r["hands"] == [{"box": [1.0, 2.0, 30.0, 40.0], "handedness": "Left"}]
        assert r["hand_fraction"] == 1.0
        assert s.facts["pipeline"] == DetectorPipeline.description
        assert "runtime" not in s.facts  # no network to describe
    finally:
        s.close()


@pytest.fixture()
def detector_ready():
    """Skip where the hands extra or MediaPipe's model files (make setup fetches them) are
    missing."""
    pytest.importorskip("ai_edge_litert", reason="the 'hands' extra is not installed")
    from handseg.core.errors import HandsegError
    from handseg.infer.hand_models import find_hand_models

    try:
        find_hand_models()
    except HandsegError as exc:
        pytest.skip(str(exc))


def test_serve_without_a_model_runs_the_built_in_detector_pipeline(detector_ready):
    """As handseg predict without --model: hand detector + GrabCut, no model card; a photo
    without hands gets an empty mask."""
    import threading
    import time

    import uvicorn

    from handseg.app.serve import create_app

    segmenter = Segmenter(None, limits=ServeLimits(max_upload_mb=1, max_megapixels=1))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(segmenter), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60) as c:
            facts = c.get("/api/model").json()
            assert facts["pipeline"] == "hand detector (mediapipe, accurate) + grabcut refiner"
            assert facts["file"] is None and facts["model_card"] is None
            assert "no model card" in facts["note"] and "runtime" not in facts
            assert facts["classes"] == ["background", "hand"]
            # a hand-free photo: a smooth grey-blue gradient
            ramp = np.linspace(60, 200, 320, dtype=np.float32)[None, :, None]
            photo = np.broadcast_to(ramp * np.array([0.8, 0.9, 1.0]), (240, 320, 3))
            data = _png(photo.astype(np.uint8))
            r = c.post("/api/segment", files={"image": ("empty.png", data)})
            assert r.status_code == 200, r.text
            mask = np.asarray(Image.open(io.BytesIO(r.content)))
            assert mask.shape == (240, 320) and not mask.any()
            assert float(r.headers["x-hand-fraction"]) == 0.0
            j = c.post("/api/segment?format=json", files={"image": ("e.png", data)}).json()
            assert j["hands"] == [] and j["hand_fraction"] == 0.0
    finally:
        server.should_exit = True
        thread.join(10)
        segmenter.close()


def test_cli_serve_without_a_model(monkeypatch, caplog):
    """handseg serve without --model starts (it used to refuse) and says what it serves."""
    import handseg.app.serve as serve_module

    loaded = []

    class Loaded:
        def __init__(self, model, *, limits, device, **runtime):
            loaded.append(model)
            self.limits = limits
            self.facts = {"pipeline": "hand detector (mediapipe, accurate) + grabcut refiner"}

        def close(self):
            pass

    monkeypatch.setattr(serve_module, "Segmenter", Loaded)
    monkeypatch.setattr(serve_module, "create_app", lambda segmenter: segmenter)
    monkeypatch.setattr(serve_module, "run_server", lambda app, sock, limits: None)
    with caplog.at_level(logging.INFO, logger="handseg"):
        assert main(["serve", "--port", "0"]) == 0
    assert loaded == [None]
    assert "built-in hand detector (mediapipe, accurate) + grabcut refiner" in caplog.text


def test_refusals_are_one_line_handseg_errors_with_a_status():
    """What serve_api answers with its status (it handles HandsegError, not serve's class)."""
    from handseg.core.errors import HandsegError

    err = UploadError(422, "the uploaded image:\n   cannot be read")
    assert isinstance(err, HandsegError) and err.status == 422
    assert str(err) == err.message == "the uploaded image: cannot be read"
