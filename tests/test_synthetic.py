"""Contracts of the built-in synthetic hand data set (handseg.synthetic)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from handseg.app.cli import main
from handseg.core.errors import HandsegError
from handseg.synth.backgrounds import BackgroundSource
from handseg.synth.hands import HAND_SHAPES, make_synthetic, render_hand, render_sample

SIZE = (64, 80)


def _rng(*seed: int) -> np.random.Generator:
    return np.random.default_rng(list(seed))


def _touches_edge(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


# --- determinism -------------------------------------------------------------------------


def test_same_seed_gives_identical_samples_and_different_seeds_differ():
    img_a, mask_a = render_sample(_rng(3, 1), SIZE)
    img_b, mask_b = render_sample(_rng(3, 1), SIZE)
    img_c, mask_c = render_sample(_rng(3, 2), SIZE)
    assert img_a.shape == (*SIZE, 3) and img_a.dtype == np.uint8
    assert mask_a.shape == SIZE and mask_a.dtype == np.uint8
    assert np.array_equal(img_a, img_b) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(img_a, img_c)
    assert not np.array_equal(mask_a, mask_c)


def test_sample_i_is_the_same_in_a_set_of_5_and_a_set_of_10(tmp_path):
    five = make_synthetic(tmp_path / "five", n=5, size=(48, 64), seed=7, progress=False)
    ten = make_synthetic(tmp_path / "ten", n=10, size=(48, 64), seed=7, progress=False)
    other = make_synthetic(tmp_path / "other", n=5, size=(48, 64), seed=8, progress=False)
    assert len(list((ten / "images").iterdir())) == 10
    for sub in ("images", "masks"):
        for p in sorted((five / sub).iterdir()):
            assert p.read_bytes() == (ten / sub / p.name).read_bytes(), p.name
    first = np.asarray(Image.open(five / "images" / "synth_0000.png"))
    assert not np.array_equal(first, np.asarray(Image.open(other / "images" / "synth_0000.png")))


# --- files on disk -----------------------------------------------------------------------


def test_files_pair_by_stem_and_masks_are_strictly_0_255(synth_dir: Path):
    images = sorted((synth_dir / "images").iterdir())
    masks = sorted((synth_dir / "masks").iterdir())
    assert [p.name for p in images] == [f"synth_{i:04d}.png" for i in range(20)]
    assert [p.name for p in masks] == [f"{p.stem}_mask.png" for p in images]
    for img_path, mask_path in zip(images, masks):
        with Image.open(img_path) as im, Image.open(mask_path) as m:
            assert im.mode == "RGB" and im.size == (80, 64)
            assert m.mode == "L" and m.size == (80, 64)
            values = set(np.unique(np.asarray(m)).tolist())
        assert values == {0, 255}, f"{mask_path.name}: {values}"


def test_every_image_has_a_hand_of_plausible_size(synth_dir: Path):
    shares = [
        (np.asarray(Image.open(p)) > 0).mean() for p in sorted((synth_dir / "masks").iterdir())
    ]
    assert len(shares) == 20
    assert min(shares) >= 0.02 and max(shares) <= 0.40, shares
    assert 0.05 <= float(np.mean(shares)) <= 0.30


def test_hand_share_holds_at_the_default_size():
    shares = [render_sample(_rng(11, i))[1].mean() for i in range(12)]
    assert min(shares) >= 0.02 and max(shares) <= 0.40, shares
    assert 0.05 <= float(np.mean(shares)) <= 0.30


# --- the hand and its arm ----------------------------------------------------------------


@pytest.mark.parametrize("shape", HAND_SHAPES)
def test_every_shape_renders_a_hand_with_a_background_sleeve_or_forearm(shape):
    for seed in range(3):
        layer, hand, arm = render_hand(_rng(5, seed), (96, 128), shape=shape)
        assert layer.shape == (96, 128, 3) and layer.dtype == np.uint8
        assert hand.dtype == np.uint8 and set(np.unique(hand)) <= {0, 1}
        assert set(np.unique(arm)) <= {0, 1}
        assert hand.sum() > 0.02 * hand.size
        assert arm.any(), "every hand has a sleeve or forearm"
        assert not (hand & arm).any(), "the arm is background: it never overlaps the hand"
        assert _touches_edge(arm), "the arm runs to the frame edge"
        # the layer holds colour exactly where the hand or arm is
        assert not layer[(hand | arm) == 0].any()
        # the arm is attached: hand and arm touch (after a one-pixel dilation)
        grown = cv2.dilate(hand, np.ones((3, 3), np.uint8))
        assert (grown & arm).any()


def _solidity(mask: np.ndarray) -> float:
    pts = cv2.findNonZero(mask)
    return float(mask.sum()) / max(cv2.contourArea(cv2.convexHull(pts)), 1.0)


def test_fingers_are_distinguishable_open_palm_is_far_less_convex_than_a_fist():
    open_palm = [
        _solidity(render_hand(_rng(9, i), (192, 256), shape="open_palm")[1]) for i in range(6)
    ]
    fist = [_solidity(render_hand(_rng(9, i), (192, 256), shape="fist")[1]) for i in range(6)]
    assert np.mean(fist) > 0.85
    assert np.mean(open_palm) < np.mean(fist) - 0.15


def test_given_skin_colour_is_used_with_shading():
    skin = np.array([200.0, 150.0, 120.0])
    layer, hand, _ = render_hand(_rng(2), (128, 160), skin=skin)
    pixels = layer[hand.astype(bool)].astype(np.float64)
    mean = pixels.mean(0)
    assert np.allclose(mean / mean.sum(), skin / skin.sum(), atol=0.02)  # same hue
    assert 0.7 * skin.mean() < mean.mean() < 1.15 * skin.mean()
    assert pixels[:, 0].std() > 2.0, "shading and texture, not a flat fill"


def test_skin_tones_vary_from_light_to_dark():
    lum = []
    for i in range(30):
        layer, hand, _ = render_hand(_rng(4, i), SIZE)
        lum.append(layer.max(axis=2)[hand > 0].mean())
    assert min(lum) < 90 and max(lum) > 170, (min(lum), max(lum))


def test_backgrounds_can_come_from_the_users_photos(tmp_path):
    folder = tmp_path / "bg"
    folder.mkdir()
    Image.new("RGB", (90, 70), (0, 0, 255)).save(folder / "blue.png")
    src = BackgroundSource(folder, families=[])
    for i in range(5):
        img, mask = render_sample(_rng(6, i), SIZE, backgrounds=src)
        bg = img[mask == 0].astype(int)
        blue = (bg[:, 2] > 150) & (bg[:, 0] < 60) & (bg[:, 1] < 60)
        assert blue.mean() > 0.4, "the photo shows around the hand (and its arm)"
        assert not ((img[..., 2] > 150) & (img[..., 0] < 60))[mask == 1].any()


# --- colour alone cannot solve it --------------------------------------------------------


def _best_ycrcb_box_iou(samples: list[tuple[np.ndarray, np.ndarray]], bins: int = 16) -> float:
    """Hand IoU of the best axis-aligned box in YCrCb (quantised to ``bins`` per axis)
    over the whole set, found exhaustively with a summed-volume table."""
    hist = np.zeros((2, bins, bins, bins))
    for img, mask in samples:
        ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb).reshape(-1, 3) // (256 // bins)
        for c in (0, 1):
            sel = ycc[mask.reshape(-1) == c]
            np.add.at(hist[c], (sel[:, 0], sel[:, 1], sel[:, 2]), 1)
    table = np.zeros((2, bins + 1, bins + 1, bins + 1))
    table[:, 1:, 1:, 1:] = hist.cumsum(1).cumsum(2).cumsum(3)
    lo, hi = np.triu_indices(bins)
    hi = hi + 1
    a0, a1 = lo[:, None, None], hi[:, None, None]
    b0, b1 = lo[None, :, None], hi[None, :, None]
    c0, c1 = lo[None, None, :], hi[None, None, :]

    def box(t):
        return (
            t[a1, b1, c1]
            - t[a0, b1, c1]
            - t[a1, b0, c1]
            - t[a1, b1, c0]
            + t[a0, b0, c1]
            + t[a0, b1, c0]
            + t[a1, b0, c0]
            - t[a0, b0, c0]
        )

    tp, fp = box(table[1]), box(table[0])
    return float((tp / (hist[1].sum() + fp)).max())


def test_box_search_finds_a_perfect_rule_when_colour_does_solve_it():
    # the checker itself: one skin colour on a blue background is solved exactly
    img = np.zeros((32, 32, 3), np.uint8)
    img[:] = (30, 60, 200)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 10:24] = 1
    img[mask == 1] = (220, 170, 140)
    assert _best_ycrcb_box_iou([(img, mask)]) == pytest.approx(1.0)


def test_no_single_ycrcb_skin_box_separates_hands_from_background():
    samples = [render_sample(_rng(21, i), SIZE) for i in range(40)]
    iou = _best_ycrcb_box_iou(samples)
    assert iou < 0.7, f"a colour box reaches hand IoU {iou:.2f}: colour alone solves the set"


# --- CLI and bad input -------------------------------------------------------------------


def test_cli_synth_writes_the_requested_set(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["synth", "--out", str(out), "-n", "3", "--size", "48", "64"]) == 0
    images = sorted((out / "images").iterdir())
    masks = sorted((out / "masks").iterdir())
    assert [p.name for p in images] == ["synth_0000.png", "synth_0001.png", "synth_0002.png"]
    assert len(masks) == 3
    with Image.open(images[0]) as im:
        assert im.size == (64, 48)
    assert "3 synthetic images" in capsys.readouterr().out


def test_bad_arguments_raise_clear_errors(tmp_path, capsys):
    with pytest.raises(HandsegError, match="fist"):
        render_hand(_rng(0), SIZE, shape="jazz_hands")
    with pytest.raises(HandsegError, match="at least 16"):
        render_sample(_rng(0), (8, 8))
    with pytest.raises(HandsegError, match="at least 1"):
        make_synthetic(tmp_path / "x", n=0, progress=False)
    with pytest.raises(HandsegError, match="non-negative"):
        make_synthetic(tmp_path / "x", n=1, seed=-1, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(HandsegError, match="is a file"):
        make_synthetic(blocker, n=1, progress=False)
    assert main(["synth", "--out", str(tmp_path / "y"), "--size", "8", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_make_synthetic_with_chosen_background_families(tmp_path):
    a = make_synthetic(tmp_path / "a", n=3, size=(48, 64), seed=5, progress=False,
                       families=("plain",))  # fmt: skip
    b = make_synthetic(tmp_path / "b", n=3, size=(48, 64), seed=5, progress=False,
                       families=("plain",))  # fmt: skip
    c = make_synthetic(tmp_path / "c", n=3, size=(48, 64), seed=5, progress=False)
    load = lambda d: np.stack(  # noqa: E731
        [np.asarray(Image.open(p)) for p in sorted((d / "images").iterdir())]
    )
    np.testing.assert_array_equal(load(a), load(b))  # deterministic
    assert not np.array_equal(load(a), load(c))  # the families change the backgrounds
    masks = [np.asarray(Image.open(p)) for p in sorted((a / "masks").iterdir())]
    assert all(set(np.unique(m)) <= {0, 255} and m.any() for m in masks)
