"""Training speed and memory on the CPU: a plain fp32 PyTorch loop vs ``handseg train``.

Same network (the scratch preset's HandSegNet), same data (built-in synthetic hands, or
``--real DIR``, e.g. arsl-bg11), same batch size, same optimiser, schedule and augmentation
(the scratch preset's), same number of epochs; the test hand IoU of each result (the plain
loop's last network, handseg's model.pt) is scored with the exact fp32 network. The plain loop is
what a user would write: fp32, contiguous tensors, images decoded every epoch. handseg adds
bf16 autocast where the CPU has native bf16, channels_last, and the in-memory cache.
Each variant runs in its own process so its peak RSS is its own (``os.wait4``).

    python benchmarks/training_speed.py                 # speed + final test IoU
    python benchmarks/training_speed.py --real ../shared/data/arsl-bg11 --image-size 384 512 \
        --epochs 80 --skip-memory
    python benchmarks/training_speed.py --memory-only   # peak memory, 100 vs 1000 images
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plain_loop(data: Path, out: Path, size, epochs: int, batch: int, seed: int) -> dict:
    """The baseline: a hand-written fp32 loop over the same split."""
    import torch
    import torch.nn.functional as F

    from handseg.core.config import resolve_config
    from handseg.core.constants import IMAGENET_MEAN, IMAGENET_STD
    from handseg.data.dataset import SegDataset
    from handseg.data.pairs import find_pairs
    from handseg.data.split import make_split
    from handseg.data.transforms import build_transform
    from handseg.model.checkpoint import save_model_file
    from handseg.model.network import HandSegNet, model_config
    from handseg.train.module import build_optimizer, build_scheduler

    torch.manual_seed(seed)
    cfg = resolve_config({"preset": "scratch", "epochs": epochs, "batch_size": batch,
                          "image_size": size})  # fmt: skip
    split = make_split(find_pairs(data / "images", data / "masks"), cfg.split_fractions, seed)
    ds = SegDataset(split["train"], size, build_transform(list(cfg.augment)))
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True)
    net = HandSegNet(model_config(2, cfg.output_stride, cfg.decoder_channels)).train()
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, len(dl))["scheduler"]
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x, y in dl:
            loss = F.cross_entropy(net(x), y, ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    wall = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    save_model_file(out / "model.pt", net.eval(), classes=cfg.classes, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, input_size=size)  # fmt: skip
    return {"train_s": wall, "images": epochs * len(ds), "test": split["test"]}


def handseg_run(data: Path, out: Path, size, epochs: int, batch: int, seed: int, **kw) -> dict:
    from handseg.core.config import resolve_config
    from handseg.data.split import load_split
    from handseg.train.run import train

    cfg = resolve_config({
        "images": str(data / "images"), "masks": str(data / "masks"), "out": str(out),
        "preset": "scratch", "epochs": epochs, "batch_size": batch, "image_size": size,
        "seed": seed, "evaluate_test": False, "class_weighting": "none", "cache": True,
    } | kw)  # fmt: skip
    t0 = time.perf_counter()
    train(cfg, progress=False)
    wall = time.perf_counter() - t0
    import yaml

    n_train = len(load_split(out / "split.json")["train"])
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    fit_s = float(rows[-1].split(",")[-1])  # time_s of the last row: the fit loop alone
    return {"train_s": fit_s, "wall_s": wall, "images": epochs * n_train,
            "test": load_split(out / "split.json")["test"],
            "precision": yaml.safe_load((out / "config.yaml").read_text())["precision"]}  # fmt: skip


def child(args) -> None:
    """Run one variant in this process and print its result as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    data, out, size = Path(args.data), Path(args.out), tuple(args.image_size)
    if args.child == "plain":
        r = plain_loop(data, out, size, args.epochs, args.batch_size, args.seed)
    else:
        # speed runs use the cache (repeated epochs); memory runs leave it off (the default)
        kw = {"max_steps": args.max_steps, "cache": False} if args.max_steps > 0 else {}
        r = handseg_run(data, out, size, args.epochs, args.batch_size, args.seed, **kw)
    from handseg.eval.evaluate import evaluate_model
    from handseg.infer.predictor import load_model

    iou = None
    if args.max_steps <= 0:  # both scored with the exact fp32 network
        pred = load_model(out / "model.pt", runtime="torch", precision="fp32")
        res = evaluate_model(pred, r["test"], progress=False)
        iou = res["classes"]["hand"]["IoU"]
    r.pop("test")
    print("RESULT " + json.dumps(r | {"hand_iou": iou}))


def run_child(variant: str, data: Path, out: Path, a, max_steps: int = -1) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--data", str(data), "--out", str(out),
           "--image-size", *map(str, a.image_size), "--epochs", str(a.epochs),
           "--batch-size", str(a.batch_size), "--seed", str(a.seed), "--threads", str(a.threads),
           "--max-steps", str(max_steps)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{variant} failed:\n{stdout[-2000:]}")
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[7:]) | {"peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["plain", "handseg"])
    ap.add_argument("--data", default=str(ROOT / "bench-output" / "synth-train"))
    ap.add_argument("--out", default=str(ROOT / "bench-output" / "training_speed"))
    ap.add_argument("-n", type=int, default=150, help="synthetic images")
    ap.add_argument(
        "--real", metavar="DIR", help="time training on this photo/mask folder (e.g. arsl-bg11)"
    )
    ap.add_argument("--image-size", type=int, nargs=2, default=(128, 160))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    a = ap.parse_args()
    if a.child:
        return child(a)

    from handseg.synth.hands import make_synthetic

    out = Path(a.out)
    if not a.memory_only:
        if a.real:
            data = Path(a.real)
            what = f"{data.name} photos"
        else:
            data = Path(a.data) / f"n{a.n}"
            what = f"{a.n} synthetic images"
            if not (data / "images").is_dir():
                make_synthetic(data, n=a.n, size=tuple(a.image_size), seed=1, progress=False)
        res = {v: run_child(v, data, out / v, a) for v in ("plain", "handseg")}
        print(
            f"\n{what} (60/20/20 split, seed {a.seed}) at {a.image_size[0]}x"
            f"{a.image_size[1]}, batch {a.batch_size}, {a.epochs} epochs, {a.threads} threads; "
            "test hand IoU scored with the exact fp32 network"
        )
        print("| variant | images/s | speed-up | final test hand IoU | peak RSS |")
        print("|---|---|---|---|---|")
        base = res["plain"]["images"] / res["plain"]["train_s"]
        for v, r in res.items():
            ips = r["images"] / r["train_s"]
            name = "plain fp32 loop" if v == "plain" else f"handseg ({r.get('precision')})"
            print(
                f"| {name} | {ips:.1f} | {ips / base:.2f}x | {r['hand_iou']:.4f} | "
                f"{r['peak_rss_mib']:.0f} MiB |"
            )
    if a.skip_memory:
        return
    # memory: handseg training (cache off, the default) on 100 vs 1000 images, fixed steps
    print("\n| images in the set | peak RSS, handseg train (30 iterations, cache off) |")
    print("|---|---|")
    for n in (100, 1000):
        data = Path(a.data) / f"mem{n}"
        if not (data / "images").is_dir():
            make_synthetic(data, n=n, size=tuple(a.image_size), seed=2, progress=False)
        r = run_child("handseg", data, out / f"mem{n}", a, max_steps=30)
        print(f"| {n} | {r['peak_rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
