"""Fixtures shared by the test modules: a tiny synthetic data set and the real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 synthetic 64 x 80 (H x W) samples: the folder holding images/ and masks/."""
    from handseg.synth.hands import make_synthetic

    return make_synthetic(
        tmp_path_factory.mktemp("data") / "synth", n=20, size=(64, 80), seed=0, progress=False
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The 30 real ArSL photos and masks in ../shared/data/arsl-bg11 (skip if absent)."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "arsl-bg11"
    if not (path / "images").is_dir() or not (path / "masks").is_dir():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture(scope="session")
def wild_data() -> Path:
    """The 75 hands-wild photos and masks in ../shared/data/hands-wild (evaluation only;
    skip if absent)."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "hands-wild"
    if not (path / "images").is_dir() or not (path / "masks").is_dir():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory):
    """Keep the int8/ONNX copies the tests make out of the user's ~/.cache/handseg."""
    old = os.environ.get("HANDSEG_CACHE_DIR")
    os.environ["HANDSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("handseg-cache"))
    yield
    if old is None:
        os.environ.pop("HANDSEG_CACHE_DIR", None)
    else:
        os.environ["HANDSEG_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """An untrained (randomly initialised, seeded) network in a valid model file, 64 x 80."""
    import torch

    from handseg.model.checkpoint import save_model_file
    from handseg.model.network import HandSegNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model_file(
        path,
        HandSegNet(),
        classes=("background", "hand"),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        input_size=(64, 80),
    )
    return path


@pytest.fixture(scope="session")
def live_server(model_file):
    """``handseg serve``'s app on a free loopback port (a real uvicorn in a thread), with
    the tiny model and small limits (1 MB uploads, 1 MP images); yields its base URL."""
    import socket
    import threading
    import time

    pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'handseg[serve]'")
    import uvicorn

    from handseg.app.serve import Segmenter, ServeLimits, create_app

    segmenter = Segmenter(model_file, limits=ServeLimits(max_upload_mb=1, max_megapixels=1))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # the kernel picks a free port; uvicorn serves this socket
    server = uvicorn.Server(uvicorn.Config(create_app(segmenter), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    segmenter.close()


# Skips the CI machine accepts (HANDSEG_CI=1, set by .ci/run): reasons that name hardware or
# the operating system. Any other skip there (data, extras, model files, a browser missing)
# fails the run, since CI has them all.
HARDWARE_REASONS = ("hardware:", "PyTorch without oneDNN", "no int8 here", "no /dev/full",
                    "needs Linux")  # fmt: skip


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and os.environ.get("HANDSEG_CI")) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(HARDWARE_REASONS):
        report.outcome = "failed"
        report.longrepr = f"skipped on CI without a hardware reason: {reason}"
