"""Clips with two hands, tracked against each frame as a photo (issue 26's goals).

A clip set that knows its answer (:mod:`handseg.synth.clips`): two real hands cut with
their masks (and black sleeves) from arsl-bg11 photos, the second mirrored, moved along the
scripts ``cross`` (they pass each other, one in front), ``touch`` (they meet and overlap)
and ``leave`` (one leaves the frame and comes back), over real hand-free photos
(../shared/data/backgrounds) and a built-in background, 640 x 480 at 30 fps, with fresh
sensor noise every frame; plus the same scripts with built-in synthetic hands (which
MediaPipe's detector finds poorly; reported apart). Each clip is written as a compressed
video (mp4v, as a camera writes it) and run through ``handseg predict``'s clip path (:func:`handseg.infer.clips.predict_clip`:
decode, track, refine, smooth, write masks, per-hand masks, .pose, .jsonl and the overlay
video) and, for comparison, every frame through the same detector settings and refiner as
a photo (fast detection, colour refiner, no tracking).

Per clip set: hands found (ground-truth hands with at least half their pixels visible,
matched by a predicted per-hand mask with IoU >= 0.3), identity swaps (a ground-truth hand
matched to another side than before: CLEAR-MOT's IDSW; for photos the detector's
handedness is the identity), hand IoU (counts over all frames) and mean per-frame hand IoU,
flicker (share of pixels changing label between frames minus the ground truth's share,
:mod:`handseg.eval.clips`), and frames per second end to end, all outputs written.

    OMP_NUM_THREADS=2 taskset -c 0,1 python benchmarks/video.py [--frames 48] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from handseg.core.imaging import read_image, resize_image
from handseg.core.outputs import clip_files
from handseg.eval.clips import evaluate_clip_masks
from handseg.infer.clip_io import read_mask_frames
from handseg.infer.clips import predict_clip
from handseg.infer.pipeline import HandPipeline, load_segmenter
from handseg.synth.backgrounds import render_background
from handseg.synth.clips import SCRIPTS, photo_sprites, render_clip, synthetic_sprites

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BACKGROUNDS = ("mcmaster_08.jpg", "urban100_026.jpg")  # real; plus one built-in family
HAND_PAIRS = ((12, 3), (0, 7))
MIN_VISIBLE = 0.5  # a hand counts as findable with this share of its pixels visible


def clip_set(frames: int) -> list[tuple[str, object]]:
    """(name, Clip) for every script x background x hand pair, then the synthetic hands."""
    size = (480, 640)
    backgrounds = [(b.split("_")[0], resize_image(read_image(DATA / "backgrounds" / "images" / b),
                                                  size)) for b in BACKGROUNDS]  # fmt: skip
    backgrounds.append(("indoor", render_background(np.random.default_rng(3), size, "indoor")))
    out = []
    for pair_index, pair in enumerate(HAND_PAIRS):
        sprites = photo_sprites(DATA / "arsl-bg11" / "images", DATA / "arsl-bg11" / "masks",
                                indices=pair)  # fmt: skip
        for script in SCRIPTS:
            name, bg = backgrounds[(pair_index + list(SCRIPTS).index(script)) % len(backgrounds)]
            out.append((f"photo/{script}/{name}", render_clip(sprites, bg, script=script,
                                                              frames=frames, seed=pair_index)))  # fmt: skip
    rng = np.random.default_rng(0)
    for script in SCRIPTS:
        bg = backgrounds[list(SCRIPTS).index(script) % len(backgrounds)][1]
        out.append((f"synthetic/{script}", render_clip(synthetic_sprites(rng), bg, script=script,
                                                       frames=frames)))  # fmt: skip
    return out


def write_video(path: Path, frames: np.ndarray, fps: float) -> Path:
    """As a camera or phone would: compressed (mp4v), so each frame has its own artefacts."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def match(ids: np.ndarray, hands: dict[str, np.ndarray]) -> dict[int, str]:
    """Ground-truth hand (1, 2) -> the predicted side whose mask covers it (IoU >= 0.3),
    for the hands with at least MIN_VISIBLE of their pixels in view."""
    sides = [s for s, m in hands.items() if m.any()]
    if not sides:
        return {}
    iou = np.zeros((2, len(sides)))
    for k in (1, 2):
        gt = ids == k
        for j, s in enumerate(sides):
            inter = (gt & (hands[s] > 0)).sum()
            iou[k - 1, j] = inter / max(1, (gt | (hands[s] > 0)).sum())
    rows, cols = linear_sum_assignment(-iou)
    return {r + 1: sides[c] for r, c in zip(rows, cols) if iou[r, c] >= 0.3}


class Tally:
    def __init__(self) -> None:
        self.findable = self.found = self.swaps = 0
        self.last: dict[int, str] = {}

    def frame(self, ids: np.ndarray, full: list[int], hands: dict[str, np.ndarray]) -> None:
        matched = match(ids, hands)
        for k in (1, 2):
            if (ids == k).sum() >= MIN_VISIBLE * full[k - 1]:
                self.findable += 1
                self.found += k in matched
            if k in matched:
                if k in self.last and self.last[k] != matched[k]:
                    self.swaps += 1
                self.last[k] = matched[k]


def decoded(video: Path) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(video)), []
    while (got := cap.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def run_clip(seg, clip, video: Path, out: Path, smooth_masks: bool = False) -> dict:
    info = predict_clip(seg, video, out, "c", instances=True, progress=False,
                        smooth_masks=smooth_masks)  # fmt: skip
    files = clip_files(out, "c")
    masks = list(read_mask_frames(files.masks))
    sides = {s: list(read_mask_frames(p)) for s, p in files.hands.items()}
    full = [max(1, int((clip.ids == k).sum(axis=(1, 2)).max())) for k in (1, 2)]
    tally = Tally()
    for i in range(len(masks)):
        tally.frame(clip.ids[i], full, {s: sides[s][i] for s in sides})
    result = evaluate_clip_masks(masks, list(clip.masks))
    return {"result": result, "tally": tally, "frames": info["frames"], "seconds": info["seconds"]}


def run_photos(pipeline: HandPipeline, clip, video: Path) -> dict:
    masks, tally = [], Tally()
    full = [max(1, int((clip.ids == k).sum(axis=(1, 2)).max())) for k in (1, 2)]
    for i, frame in enumerate(decoded(video)):
        r = pipeline(frame)
        masks.append(r.mask)
        by_side: dict[str, np.ndarray] = {}
        for hand, m in zip(r.hands, r.instances):
            by_side[hand.handedness] = by_side.get(hand.handedness, 0) | m
        tally.frame(clip.ids[i], full, by_side)
    return {"result": evaluate_clip_masks(masks, list(clip.masks)), "tally": tally}


def summarise(rows: list[dict]) -> dict:
    t = [r["tally"] for r in rows]
    per_frame = np.nanmean([im["hand_iou"] for r in rows for im in r["result"]["images"]])
    conf = np.sum([np.asarray(r["result"]["confusion"]) for r in rows], axis=0)
    hand_iou = conf[1, 1] / (conf[1, :].sum() + conf[:, 1].sum() - conf[1, 1])
    temporal = [r["result"]["temporal"] for r in rows]
    return {"found": sum(x.found for x in t), "findable": sum(x.findable for x in t),
            "swaps": sum(x.swaps for x in t), "hand_iou": hand_iou, "per_frame": per_frame,
            "flicker": np.mean([x["flicker"] for x in temporal]),
            "excess": np.mean([x["excess_change"] for x in temporal]),
            "error": np.mean([x["change_error"] for x in temporal]),
            "change": np.mean([x["pred_change"] for x in temporal]),
            "spurious": np.mean([x["spurious_change"] for x in temporal])}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--frames", type=int, default=48, help="frames per clip (default 48)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    seg = load_segmenter(None, detector="mediapipe", threads=args.threads)
    photo = HandPipeline(refine="color", mode="fast", detector=seg.pipeline.detector)
    clips = clip_set(args.frames)
    gt_change = {}
    groups: dict[str, dict[str, list]] = {}
    frames = seconds = 0.0
    for name, clip in clips:
        with tempfile.TemporaryDirectory() as tmp:
            video = write_video(Path(tmp) / "in.mp4", clip.frames, clip.fps)
            runs = {"tracked": run_clip(seg, clip, video, Path(tmp) / "a"),
                    "tracked, --smooth-masks": run_clip(seg, clip, video, Path(tmp) / "b", True),
                    "each frame as a photo": run_photos(photo, clip, video)}  # fmt: skip
        group = name.split("/")[0]
        for mode, run in runs.items():
            groups.setdefault(group, {}).setdefault(mode, []).append(run)
        if group == "photo":
            frames += runs["tracked"]["frames"]
            seconds += runs["tracked"]["seconds"]
        gt_change[name] = runs["tracked"]["result"]["temporal"]["gt_change"]
        line = [f"{name:24s}"]
        for mode, run in runs.items():
            x = summarise([run])
            line.append(f"{mode}: {x['found']}/{x['findable']} swaps {x['swaps']} IoU "
                        f"{x['hand_iou']:.3f} spurious {100 * x['spurious']:.3f} %")  # fmt: skip
        print(" | ".join(line), flush=True)
    print()
    print("| clips | mode | hands found | identity swaps | hand IoU | per-frame hand IoU | "
          "labels changing / frame | flicker | excess change per pair | change error per pair | "
          "changes where the truth holds still |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for group, modes in groups.items():
        for mode, rows in modes.items():
            s = summarise(rows)
            print(f"| {group} ({len(rows)}) | {mode} | {s['found']}/{s['findable']} | "
                  f"{s['swaps']} | {s['hand_iou']:.3f} | {s['per_frame']:.3f} | "
                  f"{100 * s['change']:.3f} % | {100 * s['flicker']:+.3f} % | "
                  f"{100 * s['excess']:.3f} % | {100 * s['error']:.3f} % | "
                  f"{100 * s['spurious']:.3f} % |")  # fmt: skip
    gc = np.mean([v for k, v in gt_change.items() if k.startswith("photo")])
    print(f"\nground truth's labels changing / frame (photo clips): {100 * gc:.3f} %")
    print(
        f"end to end (photo clips, all outputs written): {frames / seconds:.1f} frames/s "
        f"({int(frames)} frames of 640 x 480, {args.threads} threads)"
    )


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"benchmark took {time.perf_counter() - t0:.0f} s")
