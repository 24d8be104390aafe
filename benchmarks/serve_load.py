"""``handseg serve`` under load: 1, 4 and 16 concurrent clients on loopback, each sending
``--requests`` photos of 384 x 512 to ``POST /api/segment`` (mask PNG back).

The server is the real command (``python -m handseg.app.cli serve``) in its own process;
each client is a thread with its own HTTP connection (httpx). Reported per level:
requests/s, p50/p95 latency, errors (any answer but 200, or a failed connection), and the
server's resident memory: peak (VmHWM) after the first 10 requests and at the end, and the
current RSS at the end.

The default model is a fresh, untrained (seeded) light network, output stride 32 with a
64-channel ASPP and decoder, at a 48 x 64 input size: the benchmark measures the server
(decoding, queueing, encoding, HTTP), not the network, so that 4,200 requests fit in a few
minutes on 2 shared CPU cores. Pass ``--model RUN/model.pt`` to load a real one.

    python benchmarks/serve_load.py                  # 1, 4, 16 clients x 200 requests
    python benchmarks/serve_load.py --clients 4 --requests 50 --model runs/r1/model.pt
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image


def _light_model(folder: Path) -> Path:
    import torch

    from handseg.model.checkpoint import save_model_file
    from handseg.model.network import HandSegNet, ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(output_stride=32, aspp_channels=64, decoder_channels=64)
    path = folder / "model.pt"
    save_model_file(path, HandSegNet(config), input_size=(48, 64))
    return path


def _photo(folder: Path) -> bytes:
    """A synthetic hand photo of 384 x 512 (H x W) as a JPEG (quality 90)."""
    from handseg.synth.hands import make_synthetic

    out = make_synthetic(folder / "synth", n=1, size=(384, 512), seed=0, progress=False)
    image = Image.open(next((out / "images").iterdir())).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak) and VmRSS (now) of a process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _start_server(model: Path, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "handseg.app.cli", "serve", "--model", str(model),
           "--port", str(port), *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start within 300 s")


def _client(url: str, photo: bytes, n: int, latencies: list[float], errors: list[str]) -> None:
    with httpx.Client(timeout=120) as c:
        for _ in range(n):
            t = time.perf_counter()
            try:
                r = c.post(url, files={"image": ("photo.jpg", photo, "image/jpeg")})
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:80]}")
                    continue
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - t)


def _level(url: str, photo: bytes, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_client, args=(url, photo, requests, latencies, errors))
        for _ in range(clients)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = sorted(1000 * x for x in latencies)
    return {
        "clients": clients,
        "requests": clients * requests,
        "req_s": len(ms) / elapsed,
        "p50_ms": statistics.median(ms) if ms else float("nan"),
        "p95_ms": ms[int(0.95 * (len(ms) - 1))] if ms else float("nan"),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:3],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="model file (default: the light untrained one)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=200, help="requests per client")
    ap.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                    help="more handseg serve options, e.g. --workers 2 --queue 16")  # fmt: skip
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or _light_model(Path(tmp))
        photo = _photo(Path(tmp))
        port = _free_port()
        server = _start_server(model, port, args.server_args)
        url = f"http://127.0.0.1:{port}/api/segment"
        try:
            warm = _level(url, photo, 1, 10)
            after10 = _memory_mb(server.pid)
            print(f"model {model.name if args.model else 'light untrained (48 x 64)'}, photo "
                  f"384 x 512 JPEG {len(photo) / 1e3:.0f} kB, {os.cpu_count()} CPUs; warm-up "
                  f"10 requests ({warm['errors']} errors); server RSS after them "
                  f"{after10['VmRSS']:.0f} MB (peak {after10['VmHWM']:.0f} MB)")  # fmt: skip
            print(
                "| clients | requests | req/s | p50 ms | p95 ms | errors | RSS MB | peak RSS MB |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            for c in args.clients:
                r = _level(url, photo, c, args.requests)
                mem = _memory_mb(server.pid)
                print(f"| {c} | {r['requests']} | {r['req_s']:.1f} | {r['p50_ms']:.1f} | "
                      f"{r['p95_ms']:.1f} | {r['errors']} {' '.join(r['error_kinds'])} | "
                      f"{mem['VmRSS']:.0f} | {mem['VmHWM']:.0f} |", flush=True)  # fmt: skip
            end = _memory_mb(server.pid)
            print(f"server RSS: {after10['VmRSS']:.0f} MB after 10 requests, "
                  f"{end['VmRSS']:.0f} MB at the end; peak {after10['VmHWM']:.0f} MB after 10 "
                  f"requests, {end['VmHWM']:.0f} MB at the end")  # fmt: skip
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
