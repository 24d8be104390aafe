"""Speed of the network variants: output stride 16/32 x decoder width, CPU, batch 1 inference
(onnxruntime int8, the default CPU path) and bf16 training steps.

For each (output stride, decoder channels) an untrained, seeded HandSegNet is quantised with
handseg's own int8 path (:func:`handseg.infer.backends.make_backend`, calibration on synthetic
hands) and timed at each inference size (median of ``--repeats`` after 3 warm-up calls);
then ``--steps`` AdamW training steps (bf16 autocast where the CPU has it, channels_last)
are timed at batch 4. Speed does not depend on the weights; quality is measured by
training (BENCHMARKS.md, "Light network").

    OMP_NUM_THREADS=2 python benchmarks/architecture_speed.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

VARIANTS = ((16, 256), (16, 64), (32, 256), (32, 128), (32, 64))


def _median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--sizes", nargs="+", default=["240x320", "384x512"])
    ap.add_argument("--train-size", default="192x256")
    a = ap.parse_args()
    os.environ.setdefault("HANDSEG_CACHE_DIR", tempfile.mkdtemp(prefix="handseg-arch-"))

    from handseg.core.device import bf16_support
    from handseg.model.network import HandSegNet, model_config

    torch.set_num_threads(a.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes]
    th, tw = (int(v) for v in a.train_size.split("x"))
    bf16 = bf16_support()[0]
    rng = np.random.default_rng(0)
    head = [f"{h}x{w} int8 ms" for h, w in sizes] + [f"train step {th}x{tw} b4 ms"]
    print(f"{a.threads} threads; training {'bf16 autocast' if bf16 else 'fp32'}, channels_last")
    print("| output stride | decoder channels | " + " | ".join(head) + " |")
    print("|---:|---:|" + "---:|" * len(head))
    for stride, ch in VARIANTS:
        torch.manual_seed(0)
        net = HandSegNet(model_config(2, stride, ch)).eval()
        cells = [f"{ms:.1f}" for ms in _inference_ms(net, stride, ch, sizes, a, rng)]
        cells.append(f"{_train_step_ms(net, (th, tw), bf16, a.steps):.0f}")
        print(f"| {stride} | {ch} | " + " | ".join(cells) + " |", flush=True)


def _inference_ms(net, stride: int, ch: int, sizes, a, rng) -> list[float]:
    from handseg.infer.backends import make_backend
    from handseg.model.card import ModelCard
    from handseg.synth.hands import render_sample

    card = ModelCard(architecture=net.cfg, input_size=(384, 512))
    hands = np.random.default_rng(0)
    calibration = [render_sample(hands, (384, 512))[0] for _ in range(6)]
    backend = make_backend(net, card, "onnx", "int8", a.threads, calibration=calibration)
    out = []
    for hw in sizes:
        x = rng.standard_normal((1, 3, *hw)).astype(np.float32)
        out.append(_median_ms(lambda: backend(x), a.repeats))  # noqa: B023 (called at once)
    return out


def _train_step_ms(net, hw: tuple[int, int], bf16: bool, steps: int) -> float:
    net = net.train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.randn(4, 3, *hw).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (4, *hw))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _median_ms(step, steps, warmup=2)


if __name__ == "__main__":
    main()
