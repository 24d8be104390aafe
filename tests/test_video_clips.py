"""Clips (issue 26): per-frame outputs aligned with the input, the .pose file, hands that
keep their identity, smoothing that lowers flicker, evaluation on clips, bad input, and
videos in collection mode.

Most tests run the real tracker, refiner and writers with a stand-in for MediaPipe's
networks (:class:`TruthDetector`): it finds the hands of a generated clip from the clip's
own answer, and follows a hand the way the landmark model does (onto whichever hand lies
nearest the previous position, the other hand too when they cross), so the identity logic
is tested on known answers without the models; one test runs the real detector."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from handseg.core.outputs import clip_files, frame_file
from handseg.eval.clips import evaluate_clip, evaluate_clip_masks
from handseg.eval.evaluate import evaluate_mask_folders
from handseg.infer.clip_io import read_mask_frames, write_pose
from handseg.infer.clips import predict_clip
from handseg.infer.collection import predict_collection
from handseg.infer.detect import Hand
from handseg.infer.media import predict_inputs
from handseg.infer.pipeline import HandPipeline, HandSegmenter
from handseg.infer.tracking import HandTracker, MaskSmoother, TrackedHand
from handseg.synth.backgrounds import render_background
from handseg.synth.clips import render_clip, synthetic_sprites

# an upright hand's 21 landmarks (MediaPipe order) in palm lengths, wrist at the origin
TEMPLATE = np.float32([
    (0, 0), (-0.35, -0.1), (-0.55, -0.3), (-0.7, -0.45), (-0.85, -0.6),
    (-0.25, -0.8), (-0.3, -1.1), (-0.32, -1.35), (-0.34, -1.55),
    (0, -0.85), (0, -1.2), (0, -1.45), (0, -1.65),
    (0.22, -0.8), (0.25, -1.1), (0.27, -1.35), (0.28, -1.5),
    (0.4, -0.7), (0.45, -0.95), (0.48, -1.1), (0.5, -1.25),
])  # fmt: skip
SIDE_OF_SPRITE = ("right", "left")  # render_clip's first sprite as unmirrored: a right hand


class TruthDetector:
    """MediaPipe's two networks, played from a clip's answer (``ids``: (T, H, W)).

    Palm detection finds every hand with at least ``min_share`` of its pixels visible
    (MediaPipe misses a hand that is mostly hidden); following
    returns the visible hand nearest the previous one (so during a crossing both followed
    hands can land on the front one). Handedness is right for sprite 1, left for sprite 2,
    except that every ``flip_every``-th frame says the opposite with low confidence. The
    palm score tells the sprite (0.9 + k / 100), so a test can check whose hand it got."""

    def __init__(self, frames: np.ndarray, ids: np.ndarray, *, min_share: float = 0.5,
                 flip_every: int = 4) -> None:  # fmt: skip
        self.index = {f.tobytes(): i for i, f in enumerate(frames)}
        self.ids, self.flip_every = ids, flip_every
        self.full = [max(1, max((f == k).sum() for f in ids)) for k in (1, 2)]
        self.min_area = [min_share * a for a in self.full]

    def _hands(self, rgb: np.ndarray) -> list[tuple[int, Hand]]:
        i = self.index[np.ascontiguousarray(rgb).tobytes()]
        found = []
        for k in (1, 2):
            ys, xs = np.nonzero(self.ids[i] == k)
            if len(xs) < self.min_area[k - 1]:
                continue
            size = np.sqrt(self.full[k - 1]) / 1.6
            centre = np.float32([xs.mean(), ys.mean()]) - TEMPLATE.mean(0) * size
            lm = np.column_stack([TEMPLATE * size + centre, np.zeros(21, np.float32)])
            side = SIDE_OF_SPRITE[k - 1]
            score = 0.95
            if i % self.flip_every == self.flip_every - 1:
                side, score = {"left": "right", "right": "left"}[side], 0.6
            box = (float(lm[:, 0].min()), float(lm[:, 1].min()),
                   float(lm[:, 0].max()), float(lm[:, 1].max()))  # fmt: skip
            found.append((k, Hand(lm.astype(np.float32), box, side, score, 0.9 + k / 100, 0.9)))
        return found

    def __call__(self, rgb: np.ndarray, **options) -> list[Hand]:
        return [h for _, h in self._hands(rgb)]

    def follow(self, rgb, previous: Hand, **options) -> Hand | None:
        hands = [h for _, h in self._hands(rgb)]
        if not hands:
            return None
        at = previous.landmarks[:, :2].mean(0)
        near = min(hands, key=lambda h: np.linalg.norm(h.landmarks[:, :2].mean(0) - at))
        reach = 1.5 * (previous.box[3] - previous.box[1])
        return near if np.linalg.norm(near.landmarks[:, :2].mean(0) - at) < reach else None


def _clip(script: str = "cross", frames: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    sprites = synthetic_sprites(rng, height=44)
    background = render_background(rng, (120, 160), "plain")
    return render_clip(sprites, background, script=script, frames=frames, seed=seed)


def _segmenter(clip) -> HandSegmenter:
    detector = TruthDetector(clip.frames, clip.ids)
    return HandSegmenter(HandPipeline(refine="landmarks", mode="fast", detector=detector))


def _frame_folder(clip, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(clip.frames):
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


def _gt_folder(clip, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(clip.masks):
        cv2.imwrite(str(folder / f"f{i}.png"), m * 255)
    return folder


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _sprite_by_mask(ids: np.ndarray, mask: np.ndarray) -> int:
    """The sprite (1, 2) a per-hand mask covers best by IoU; 0 when neither reaches 0.3."""
    ious = [((mask > 0) & (ids == k)).sum() / max(1, ((mask > 0) | (ids == k)).sum())
            for k in (1, 2)]  # fmt: skip
    return int(np.argmax(ious)) + 1 if max(ious) >= 0.3 else 0


def _sprite_of(hand: dict) -> int:
    """The sprite a TruthDetector hand came from (its palm score)."""
    return round((hand["score"] - 0.9) * 100)


@pytest.mark.parametrize("script", ["cross", "leave"])
def test_two_hands_keep_their_identity(script, tmp_path):
    clip = _clip(script, frames=30)
    folder = _frame_folder(clip, tmp_path / "frames")
    info = predict_clip(_segmenter(clip), folder, tmp_path / "out", "c", progress=False)
    lines = _lines(clip_files(tmp_path / "out", "c").frames)
    assert len(lines) == len(clip.frames) == info["frames"]
    owner: dict[str, int] = {}
    offered = found = 0
    truth = TruthDetector(clip.frames, clip.ids)
    for i, line in enumerate(lines):
        offered += len(truth(clip.frames[i]))
        found += len(line["hands"])
        for hand in line["hands"]:
            sprite = _sprite_of(hand)
            assert (clip.ids[i] == sprite).sum() >= 100, f"frame {i}: a hand that is not there"
            assert owner.setdefault(hand["side"], sprite) == sprite, f"frame {i}: sides swapped"
    assert set(owner) == {"left", "right"} and owner["left"] != owner["right"]
    # a followed hand that lands on the other one is dropped, not doubled: at most a
    # frame or two of a crossing go without the hidden hand
    assert found >= offered - 4


def test_frame_folder_with_a_corrupt_frame_stays_aligned(tmp_path, caplog):
    clip = _clip(frames=8)
    folder = _frame_folder(clip, tmp_path / "frames")
    (folder / "f3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # frame 3 unreadable
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        info = predict_clip(_segmenter(clip), folder, out, "c", instances=True, progress=False)
    files = clip_files(out, "c")
    masks = list(read_mask_frames(files.masks))
    assert len(masks) == 8 and info["bad_frames"] == [3]
    assert not masks[3].any() and all(masks[i].any() for i in (2, 4))
    lines = _lines(files.frames)
    assert [line["frame"] for line in lines] == list(range(8))
    assert [line["ok"] for line in lines] == [i != 3 for i in range(8)]
    assert "f3.png" in lines[3]["error"] and lines[3]["hands"] == []
    for side in ("left", "right"):
        assert len(list(read_mask_frames(files.hands[side]))) == 8
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "unreadable" in r.message]
    assert len(warnings) == 1 and "3" in warnings[0].message


def test_a_frame_the_numbering_skips_is_recorded_as_dropped(tmp_path):
    clip = _clip(frames=8)
    folder = _frame_folder(clip, tmp_path / "frames")
    (folder / "f5.png").unlink()  # frame 5 dropped: f4.png is followed by f6.png
    out = tmp_path / "out"
    info = predict_clip(_segmenter(clip), folder, out, "c", progress=False)
    masks = list(read_mask_frames(clip_files(out, "c").masks))
    assert len(masks) == 8 and info["bad_frames"] == [5]  # frame i is still input frame i
    assert not masks[5].any() and masks[6].any()
    lines = _lines(clip_files(out, "c").frames)
    assert "dropped" in lines[5]["error"] and lines[6]["ok"]


def test_numbered_slots_only_where_the_names_are_frame_numbers(tmp_path):
    from handseg.infer.clip_io import numbered_slots

    def paths(*names):
        return [tmp_path / n for n in names]

    assert numbered_slots(paths("f1.png", "f2.png", "f4.png")) == [*paths("f1.png", "f2.png"),
                                                                   None, *paths("f4.png")]  # fmt: skip
    for names in (("a.png", "b.png"), ("f1.png", "g3.png"), ("f1.png", "f900.png"),
                  ("f1.png", "f3.jpg")):  # fmt: skip
        assert numbered_slots(paths(*names)) == paths(*names)  # not a numbering: as they are


def test_pose_file_round_trips_through_pose_format(tmp_path):
    from pose_format import Pose

    rng = np.random.default_rng(1)
    data = rng.uniform(0, 100, (5, 1, 42, 3)).astype(np.float32)
    conf = rng.uniform(0.5, 1, (5, 1, 42)).astype(np.float32)
    conf[2, 0, :21] = 0  # the left hand not seen in frame 2
    write_pose(tmp_path / "a.pose", data, conf, 25.0, (120, 160), ("left", "right"))
    pose = Pose.read((tmp_path / "a.pose").read_bytes())
    assert [c.name for c in pose.header.components] == [
        "LEFT_HAND_LANDMARKS",
        "RIGHT_HAND_LANDMARKS",
    ]
    assert [len(c.points) for c in pose.header.components] == [21, 21]
    assert pose.body.fps == 25.0 and pose.body.data.shape == (5, 1, 42, 3)
    np.testing.assert_array_equal(pose.body.confidence, conf)
    seen = conf > 0
    np.testing.assert_array_equal(np.asarray(pose.body.data)[seen], data[seen])


def test_clip_pose_matches_the_frames_file(tmp_path):
    from pose_format import Pose

    clip = _clip(frames=10)
    folder = _frame_folder(clip, tmp_path / "frames")
    predict_clip(_segmenter(clip), folder, tmp_path / "out", "c", fps=12.5, progress=False)
    files = clip_files(tmp_path / "out", "c")
    pose = Pose.read(files.pose.read_bytes())
    assert pose.body.data.shape[:3] == (10, 1, 42) and pose.body.fps == 12.5
    conf = np.asarray(pose.body.confidence)[:, 0]
    for i, line in enumerate(_lines(files.frames)):
        sides = {h["side"]: h for h in line["hands"]}
        for k, side in enumerate(("left", "right")):
            part = slice(21 * k, 21 * (k + 1))
            if side not in sides:
                assert not conf[i, part].any()
                continue
            assert conf[i, part] == pytest.approx(sides[side]["presence"], abs=1e-3)
            got = np.asarray(pose.body.data)[i, 0, part]
            np.testing.assert_allclose(got, sides[side]["landmarks"], atol=0.006)


def test_evaluate_on_a_clip_equals_its_frames_as_photos(tmp_path):
    clip = _clip(frames=10)
    folder = _frame_folder(clip, tmp_path / "frames")
    gt = _gt_folder(clip, tmp_path / "gt")
    seg = _segmenter(clip)
    predict_clip(seg, folder, tmp_path / "out", "c", progress=False)
    pred = clip_files(tmp_path / "out", "c").masks
    as_clip = evaluate_clip(gt=gt, pred=pred, progress=False)
    as_photos = evaluate_mask_folders(pred, gt, progress=False)
    assert as_clip["num_images"] == as_photos["num_images"] == 10
    for a, b in zip(as_clip["images"], as_photos["images"]):
        assert a["hand_iou"] == pytest.approx(b["hand_iou"], nan_ok=True)
        assert a["bf"] == pytest.approx(b["bf"], nan_ok=True)
        assert a["accuracy"] == pytest.approx(b["accuracy"])
    assert as_clip["dataset"] == pytest.approx(as_photos["dataset"])
    # running the model on the clip scores what predict wrote
    run = evaluate_clip(gt=gt, clip=folder, predictor=_segmenter(clip), progress=False)
    assert run["dataset"] == pytest.approx(as_clip["dataset"])
    assert run["temporal"]["pairs"] == 9
    t = as_clip["temporal"]
    assert t["flicker"] == pytest.approx(t["pred_change"] - t["gt_change"])


def test_a_ground_truth_folder_with_a_gap_in_its_numbering_is_scored_by_frame_number(tmp_path):
    """gt/m_0002.png is missing: frame 2 has no ground truth. The other frames are scored
    against their own numbers (read in file order, frame 2's prediction would meet m_0003
    and every later frame would be one off), and no stability pair spans the gap."""
    masks = []
    for i in range(5):
        m = np.zeros((24, 32), np.uint8)
        m[4:12, 2 + 5 * i : 10 + 5 * i] = 1  # a hand that moves 5 px a frame
        masks.append(m)
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    for i, m in enumerate(masks):
        cv2.imwrite(str(pred / f"p_{i:04d}.png"), 255 * m)
        if i != 2:
            cv2.imwrite(str(gt / f"m_{i:04d}.png"), 255 * m)
    result = evaluate_clip(gt=gt, pred=pred, progress=False)
    assert result["num_frames"] == 4 and result["unscored_frames"] == [2]
    assert [im["image"] for im in result["images"]] == [f"frame {i:06d}" for i in (0, 1, 3, 4)]
    assert all(im["hand_iou"] == pytest.approx(1.0) for im in result["images"])
    assert result["temporal"]["pairs"] == 2 and result["temporal"]["spurious_change"] == 0
    # a prediction folder with a gap: that frame is an empty prediction, scored as a miss
    (pred / "p_0003.png").unlink()
    result = evaluate_clip(gt=gt, pred=pred, progress=False)
    assert [round(im["hand_iou"], 3) for im in result["images"]] == [1.0, 1.0, 0.0, 1.0]


class _ScriptedDetector:
    """The hands of each frame as scripted (frame i: a photo whose first pixel is i)."""

    def __init__(self, script: dict[int, list[Hand]]) -> None:
        self.script = script

    def __call__(self, rgb, **options) -> list[Hand]:
        return list(self.script.get(int(rgb[0, 0, 0]), []))

    def follow(self, rgb, previous: Hand, **options) -> Hand | None:
        at = previous.landmarks[:, :2].mean(0)
        near = [h for h in self(rgb) if np.linalg.norm(h.landmarks[:, :2].mean(0) - at) < 30]
        return near[0] if near else None


def _hand_at(x: float, y: float, side: str = "left") -> Hand:
    lm = np.column_stack([TEMPLATE * 20 + (x, y), np.zeros(21)]).astype(np.float32)
    box = (float(lm[:, 0].min()), float(lm[:, 1].min()), float(lm[:, 0].max()),
           float(lm[:, 1].max()))  # fmt: skip
    return Hand(lm, box, side, 0.95, 0.9, 0.9)


@pytest.mark.parametrize("back_at, same_track", [((150, 60), True), ((60, 60), False)])
def test_a_locked_track_takes_its_side_back_only_at_the_frame_border(back_at, same_track):
    """A left hand seen for 8 frames walks out through the right edge; 3 frames later a
    hand that also says "left" is found. At the right border it is the same hand coming
    back (the same track); in the middle of the frame, 90 px away, it is another hand that
    the detector had missed there (a new track; it takes the free side)."""
    script = {i: [_hand_at(110 + 5 * i, 60)] for i in range(8)}
    script[11] = [_hand_at(*back_at)]
    tracker = HandTracker(_ScriptedDetector(script), fps=30.0, lock_after=5)
    seen = {}
    for i in range(12):
        frame = np.full((120, 160, 3), i, np.uint8)
        seen[i] = tracker(frame)
    first, back = seen[0][0], seen[11][0]
    assert (back.track == first.track) is same_track
    assert back.side == ("left" if same_track else "right")


def test_flicker_figure_on_known_masks():
    on = np.zeros((10, 10), np.uint8)
    on[:5] = 1
    gt = [on, on, on]
    pred = [on, 1 - on, on]  # every pixel flips twice
    t = evaluate_clip_masks(pred, gt)["temporal"]
    assert t == {"pairs": 2, "pred_change": 1.0, "gt_change": 0.0, "flicker": 1.0,
                 "flicker_ratio": None, "excess_change": 1.0, "change_error": 1.0,
                 "spurious_change": 1.0}  # fmt: skip
    moved = np.roll(on, 1, axis=0)  # the truth moves one row; the prediction lags a frame
    t = evaluate_clip_masks([on, on, moved], [on, moved, moved])["temporal"]
    assert t["pred_change"] == t["gt_change"] == pytest.approx(0.1)
    assert t["flicker"] == 0 and t["spurious_change"] == pytest.approx(0.1)
    # per pair the lag shows: no change where the truth moved, a change where it held still
    assert t["excess_change"] == pytest.approx(0.1) and t["change_error"] == pytest.approx(0.2)


def test_mask_smoothing_lowers_flicker_on_a_moving_hand():
    rng = np.random.default_rng(0)
    smoother = MaskSmoother()
    raw_frames, smooth_frames, true_frames = [], [], []
    yy, xx = np.mgrid[:100, :120]
    for i in range(20):
        centre = np.float32([40 + 2 * i, 50])
        lm = np.column_stack([TEMPLATE * 20 + centre, np.zeros(21)]).astype(np.float32)
        hand = Hand(lm, (0, 0, 1, 1), "left", 0.9, 0.9, 0.9)
        d2 = (xx - centre[0]) ** 2 + (yy - centre[1] + 20) ** 2
        true_frames.append((d2 < 18**2).astype(np.uint8))
        r = 18 + rng.normal(0, 1.5, (100, 120))  # the same disc, its edge jittering
        raw = (d2 < r**2).astype(np.uint8)
        mask, sides = smoother([TrackedHand("left", 0, hand, hand)], [raw], (100, 120))
        assert set(sides) == {"left"} and (sides["left"] == mask).all()
        raw_frames.append(raw)
        smooth_frames.append(mask)
    raw_t = evaluate_clip_masks(raw_frames, true_frames)
    smooth_t = evaluate_clip_masks(smooth_frames, true_frames)
    assert smooth_t["temporal"]["flicker"] < 0.5 * raw_t["temporal"]["flicker"]
    assert smooth_t["temporal"]["spurious_change"] < raw_t["temporal"]["spurious_change"]
    assert smooth_t["classes"]["hand"]["IoU"] >= raw_t["classes"]["hand"]["IoU"] - 0.01


def _write_video(path: Path, frames: np.ndarray, fourcc: str = "MJPG") -> Path:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_bad_videos_give_one_line_and_outputs_for_what_can_be_read(tmp_path, caplog):
    frames = _clip(frames=20).frames
    good = _write_video(tmp_path / "good.avi", frames)
    data = good.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 6 // 10])  # truncated
    (tmp_path / "empty.mp4").write_bytes(b"")  # zero length
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        info = predict_clip(_Blank(), tmp_path / "cut.avi", out, "cut", progress=False)
    assert 0 < info["frames"] < 20 and info["ok"] and info["truncated"]
    assert len(list(read_mask_frames(clip_files(out, "cut").masks))) == info["frames"]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "truncated" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING"):
        records = predict_inputs(_Blank(), [tmp_path / "empty.mp4"], out, progress=False)
    assert records == [{"input": tmp_path / "empty.mp4", "ok": False, "error": records[0]["error"]}]
    assert "empty.mp4" in records[0]["error"]
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


class _Blank:
    """A whole-image 'network': the hand is wherever the frame is bright red."""

    classes = ("background", "hand")

    def predict(self, image, *, out_size=None):
        return (image[..., 0] > 200).astype(np.uint8)

    def predict_many(self, images, *, batch_size=1):
        for image in images:
            yield self.predict(image)


def test_collection_takes_videos_and_resumes(tmp_path):
    frames = _clip(frames=6).frames
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_video(inputs / "a.avi", frames)
    cv2.imwrite(str(inputs / "b.png"), frames[0])
    out = tmp_path / "out"
    r = predict_collection(_Blank(), [inputs], out, workers=0, progress=False)
    assert r["counts"] == {"ok": 2}
    rows = (out / "manifest.csv").read_text().splitlines()
    assert rows[1].startswith(str(inputs / "a.avi")) and rows[1].endswith(",6")
    summary = clip_files(out, "a").summary
    first = summary.stat().st_mtime_ns
    assert len(list(read_mask_frames(clip_files(out, "a").masks))) == 6
    again = predict_collection(_Blank(), [inputs], out, workers=0, skip_existing=True,
                               progress=False)  # fmt: skip
    assert again["counts"] == {"ok": 2}  # the rows of the first run, kept
    assert summary.stat().st_mtime_ns == first  # not redone
    summary.unlink()  # as a run killed inside the clip leaves it
    frame_file(clip_files(out, "a").masks, 5).unlink()
    third = predict_collection(_Blank(), [inputs], out, workers=0, skip_existing=True,
                               progress=False)  # fmt: skip
    assert third["counts"] == {"ok": 1, "existing": 1} and summary.is_file()  # the clip redone
    assert frame_file(clip_files(out, "a").masks, 5).is_file()  # redone whole


@pytest.mark.realdata
def test_real_detector_tracks_two_photo_hands(shared_data, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from handseg.infer.hand_models import find_hand_models
    from handseg.infer.pipeline import load_segmenter
    from handseg.synth.clips import photo_sprites

    try:
        find_hand_models()
    except Exception:
        pytest.skip("MediaPipe's hand models are not fetched")
    sprites = photo_sprites(shared_data / "images", shared_data / "masks", indices=(12, 3))
    rng = np.random.default_rng(0)
    clip = render_clip(sprites, render_background(rng, (480, 640), "plain"), frames=20)
    folder = _frame_folder(clip, tmp_path / "frames")
    seg = load_segmenter(None, detector="mediapipe", threads=2)
    predict_clip(seg, folder, tmp_path / "out", "c", instances=True, progress=False)
    files = clip_files(tmp_path / "out", "c")
    owner: dict[str, int] = {}
    found = 0
    per_side = {side: list(read_mask_frames(files.hands[side])) for side in ("left", "right")}
    for i in range(len(clip.frames)):
        for side, masks in per_side.items():
            sprite = _sprite_by_mask(clip.ids[i], masks[i])
            if sprite:
                assert owner.setdefault(side, sprite) == sprite, f"frame {i}: sides swapped"
                found += 1
    assert found >= 30  # of 40 hands


def test_webcam_stream_is_tracked_as_a_clip(monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from handseg.app import serve as serve_module

    clip = _clip(frames=30)
    monkeypatch.setattr(serve_module, "load_segmenter", lambda model, **kw: _segmenter(clip))
    segmenter = serve_module.Segmenter(None)
    try:
        client = TestClient(serve_module.create_app(segmenter))
        owner: dict[str, int] = {}
        for i, frame in enumerate(clip.frames):
            png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
            r = client.post("/api/segment?format=json&stream=cam-1",
                            files={"image": ("f.png", png)})  # fmt: skip
            assert r.status_code == 200, r.text
            for hand in r.json()["hands"]:
                assert owner.setdefault(hand["side"], _sprite_of(hand)) == _sprite_of(hand), i
        assert set(owner) == {"left", "right"}
        # a single photo (no stream) is not tracked: no sides, no state
        r = client.post("/api/segment?format=json", files={"image": ("f.png", png)})
        assert r.status_code == 200 and all("side" not in h for h in r.json()["hands"])
        bad = client.post("/api/segment?stream=a/b", files={"image": ("f.png", png)})
        assert bad.status_code == 422
    finally:
        segmenter.close()
