"""Background compositing (handseg.augment_bg) and the synthetic training set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handseg.core.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from handseg.core.errors import HandsegError
from handseg.synth.backgrounds import BackgroundSource
from handseg.synth.compositing import (
    SKIN_TONES,
    BackgroundComposite,
    background_factory,
    build_transform,
    camouflage,
    composite,
    skin_tone,
)

H, W = 72, 96
SKIN = (205, 150, 120)
OLD_BG = (0, 0, 255)  # pure blue: any trace of it in the composite is visible in blue


def _sample() -> tuple[np.ndarray, np.ndarray]:
    """A skin-coloured hand-like blob (ellipse + finger) on blue, with an ignore strip."""
    yy, xx = np.mgrid[:H, :W]
    hand = ((yy - 45) / 16.0) ** 2 + ((xx - 48) / 12.0) ** 2 <= 1
    hand |= (np.abs(xx - 52) <= 3) & (yy >= 12) & (yy <= 40)
    image = np.empty((H, W, 3), np.uint8)
    image[:] = OLD_BG
    rng = np.random.default_rng(0)
    texture = rng.integers(-12, 13, (H, W, 1))
    image[hand] = np.clip(np.array(SKIN) + texture[hand], 0, 255).astype(np.uint8)
    mask = hand.astype(np.uint8)
    mask[:, :4] = IGNORE_INDEX  # e.g. the border a translation left behind
    return image, mask


def _solid_folder(tmp_path: Path, color: tuple[int, int, int]) -> Path:
    folder = tmp_path / "bgs"
    folder.mkdir()
    Image.fromarray(np.full((50, 70, 3), color, np.uint8)).save(folder / "wall.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_hand_pixels_and_labels_unchanged():
    image, mask = _sample()
    before_image, before_mask = image.copy(), mask.copy()
    t = BackgroundComposite(p=1.0, arm_prob=0.5)
    changed = 0
    for seed in range(8):
        out, out_mask = t(image, mask, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.uint8
        assert out_mask is mask  # labels returned as given
        np.testing.assert_array_equal(out[mask == 1], image[mask == 1])  # bit-identical hand
        changed += int((out[mask != 1] != image[mask != 1]).any())
    assert changed == 8  # the background really was replaced every time
    np.testing.assert_array_equal(image, before_image)  # inputs not modified in place
    np.testing.assert_array_equal(mask, before_mask)


def test_background_never_gets_hand_label():
    """A sample without hand gets a new background and keeps its all-background mask."""
    image, _ = _sample()
    mask = np.zeros((H, W), np.uint8)
    mask[-3:] = IGNORE_INDEX
    t = BackgroundComposite(p=1.0, arm_prob=1.0)
    for seed in range(4):
        out, out_mask = t(image, mask, np.random.default_rng(seed))
        assert not (out_mask == 1).any()
        np.testing.assert_array_equal(out_mask, mask)
        assert not np.array_equal(out, image)


def test_reproducible_for_a_seed():
    image, mask = _sample()
    t = BackgroundComposite(p=1.0, arm_prob=0.5, placement_prob=0.5)
    a = t(image, mask, np.random.default_rng(7))
    b = t(image, mask, np.random.default_rng(7))
    c = t(image, mask, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_reproducible_through_torch_seed():
    """Without an explicit generator the draw comes from torch's global RNG."""
    import torch

    image, mask = _sample()
    t = BackgroundComposite(p=1.0)
    torch.manual_seed(3)
    a, _ = t(image, mask)
    torch.manual_seed(3)
    b, _ = t(image, mask)
    np.testing.assert_array_equal(a, b)


def test_probability_zero_is_identity_and_p_is_respected():
    image, mask = _sample()
    out, out_mask = BackgroundComposite(p=0.0)(image, mask, np.random.default_rng(0))
    assert out is image and out_mask is mask
    t = BackgroundComposite(p=0.5)
    rng = np.random.default_rng(0)
    replaced = sum(not np.array_equal(t(image, mask, rng)[0], image) for _ in range(200))
    assert 70 < replaced < 130


def test_user_folder_used_and_no_trace_of_old_background(tmp_path):
    green = (0, 255, 0)
    folder = _solid_folder(tmp_path, green)
    image, mask = _sample()
    t = build_transform(
        ["background"], backgrounds=str(folder), background_families=(), background_prob=1.0,
        arm_prob=0.0,
    )  # fmt: skip
    assert isinstance(t, BackgroundComposite)
    assert len(t.source.files) == 1 and t.source.families == ()
    out, out_mask = t(image, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_array_equal(out[mask == 1], image[mask == 1])
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(mask != 1)  # (H, W) pixels from the hand
    far = dist > 12  # beyond the widest ring (sigma 3)
    assert (out[far] == green).all()  # the user's photo, exactly
    # the feathered ring blends hand colours into green: no blue from the old background
    ring = (dist > 0) & ~far
    assert out[ring][:, 2].max() <= max(SKIN[2] + 12, 0)
    assert (out[ring][:, 1] > 0).all()  # some of the new background everywhere outside


def test_feather_zero_gives_a_hard_edge(tmp_path):
    folder = _solid_folder(tmp_path, (10, 200, 30))
    image, mask = _sample()
    t = BackgroundComposite(BackgroundSource(folder, families=()), p=1.0, feather=(0, 0),
                            arm_prob=0.0)  # fmt: skip
    out, _ = t(image, mask, np.random.default_rng(1))
    assert (out[mask != 1] == (10, 200, 30)).all()


def test_arm_is_background_and_reaches_the_frame_edge(tmp_path):
    folder = _solid_folder(tmp_path, (0, 255, 0))
    image, mask = _sample()
    t = BackgroundComposite(
        BackgroundSource(folder, families=()), p=1.0, arm_prob=1.0, feather=(0.5, 1.5)
    )
    for seed in range(4):
        out, out_mask = t(image, mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(out_mask, mask)
        np.testing.assert_array_equal(out[mask == 1], image[mask == 1])
        painted = (out != (0, 255, 0)).any(axis=2) & (mask != 1)
        assert painted[-1].any()  # the arm leaves the frame at the bottom
        assert not painted[:5].any()  # and does not run through the fingers to the top


def test_placement_moves_hand_and_labels_new_border_background():
    image, mask = _sample()
    mask[:, :4] = 0
    t = BackgroundComposite(p=1.0, placement_prob=1.0, arm_prob=0.0)
    moved = 0
    for seed in range(6):
        out, out_mask = t(image, mask, np.random.default_rng(seed))
        assert set(np.unique(out_mask)) <= {0, 1}  # the uncovered border is new background
        area = int((out_mask == 1).sum())
        assert 0.4 * (mask == 1).sum() < area < 1.8 * (mask == 1).sum()
        moved += int(not np.array_equal(out_mask, mask))
        # hand pixels of the output are skin-coloured, not blue background
        assert out[out_mask == 1][:, 2].mean() < 160
    assert moved >= 5


def test_camouflage_brings_the_background_to_the_hand_colour(tmp_path):
    folder = _solid_folder(tmp_path, (0, 200, 40))  # green: far from skin
    image, mask = _sample()
    hand_colour = np.median(image[mask == 1], axis=0)
    t = BackgroundComposite(BackgroundSource(folder, families=()), p=1.0, feather=(0, 0),
                            arm_prob=0.0, camouflage_prob=1.0)  # fmt: skip
    for seed in range(4):
        out, out_mask = t(image, mask, np.random.default_rng(seed))
        assert out_mask is mask
        np.testing.assert_array_equal(out[mask == 1], image[mask == 1])
        bg = out[mask != 1].astype(np.float32).mean(0)
        # red rises from 0 and green falls from 200 towards the hand's colour
        assert np.abs(bg - hand_colour).max() < np.abs(np.float32((0, 200, 40)) - hand_colour).max()
        assert bg[0] > 60 and bg[1] < 190
    # the texture survives: a striped background stays striped, scaled per channel
    stripes = np.zeros((H, W, 3), np.float32)
    stripes[::2] = (40, 80, 120)
    stripes[1::2] = (80, 160, 240)
    out = camouflage(stripes, image[mask == 1], np.random.default_rng(0))
    assert out.shape == stripes.shape and (out[1::2] > out[::2]).all()


def test_ring_continues_the_masks_rim_not_the_skin():
    """Masks drawn a little larger than the skin hold a rim of old background; the ring
    continues that rim's colour outward, so the label edge is not a colour edge."""
    from scipy.ndimage import distance_transform_edt

    image, mask = _sample()
    hand = mask == 1
    depth = distance_transform_edt(hand)  # (H, W) pixels inside the hand
    grey = (120, 130, 135)
    image[hand & (depth <= 2)] = grey  # a 2-px rim of grey mat inside the mask
    green = np.zeros((H, W, 3), np.float32)
    green[:] = (0, 255, 0)
    out = composite(image, hand, green, sigma=2.0)
    np.testing.assert_array_equal(out[hand], image[hand])
    outside = distance_transform_edt(~hand)
    ring = out[(outside >= 1) & (outside <= 2)].astype(np.float32)  # (N, 3)
    # ring = a * edge colour + (1 - a) * green, so red / blue is the edge colour's: the
    # grey rim's 120 / 135 = 0.89, not the skin's 205 / 120 = 1.71
    red, blue = ring[:, 0].mean(), ring[:, 2].mean()
    assert blue > 20 and 0.75 < red / blue < 1.1
    far = out[outside > 12]
    assert (far == (0, 255, 0)).all()


def test_skin_tone_moves_the_hand_along_the_tones_and_keeps_its_shading():
    import cv2

    image, mask = _sample()
    hand = mask == 1
    k = np.ones((3, 3), np.uint8)
    inner = cv2.erode(hand.astype(np.uint8), k, iterations=3) > 0  # off the feathered rim
    far = cv2.dilate(hand.astype(np.uint8), k, iterations=4) == 0  # beyond the feather
    tones = []
    for seed in range(12):
        out = skin_tone(image, hand, np.random.default_rng(seed))
        assert (out[far] == image[far]).all()  # nothing away from the hand changes
        # shading kept: per channel, the hand's pixels are the old ones times one gain
        gains = out[inner].astype(np.float32) / image[inner].astype(np.float32)
        assert np.percentile(np.abs(gains - np.median(gains, 0)), 90, axis=0).max() < 0.05
        # the hand's median lies on the tones' range (within the 8 % tint)
        lum = float(np.median(out[inner].astype(np.float32), axis=0).mean())
        assert SKIN_TONES.mean(1).min() * 0.9 <= lum <= SKIN_TONES.mean(1).max() * 1.1
        tones.append(lum)
    assert max(tones) - min(tones) > 60  # light and dark tones both drawn
    assert skin_tone(image, np.zeros_like(hand), np.random.default_rng(0)) is image


def test_composite_function_keeps_hand_exact():
    image, mask = _sample()
    hand = mask == 1
    bg = np.full((H, W, 3), 99, np.float32)
    out = composite(image, hand, bg, sigma=1.0)
    np.testing.assert_array_equal(out[hand], image[hand])
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)


def test_registered_name_and_bad_options(tmp_path):
    t = build_transform(["seed", "background", "color"], background_prob=0.7)
    assert any(isinstance(s, BackgroundComposite) and s.p == 0.7 for s in t.transforms)
    with pytest.raises(HandsegError, match="within 0..1"):
        BackgroundComposite(p=1.5)
    with pytest.raises(HandsegError, match="camouflage_prob must be within 0..1"):
        BackgroundComposite(camouflage_prob=-0.1)
    with pytest.raises(HandsegError, match="does not exist"):
        build_transform(["background"], backgrounds=str(tmp_path / "missing"))


def test_extra_photometric_augmentations_exist():
    """Colour temperature and JPEG come from handseg.transforms; check they run paired."""
    image, mask = _sample()
    t = build_transform(["color", "blur-noise"], p_jpeg=1.0, temperature=0.3)
    out, out_mask = t(image, mask, np.random.default_rng(0))
    assert out.shape == image.shape and out_mask is mask


# --- SyntheticDataset ---------------------------------------------------------------------


def test_synthetic_dataset_shapes_and_determinism():
    import torch

    from handseg.synth.hands import SyntheticDataset, render_sample

    ds = SyntheticDataset(3, (48, 64), seed=5)
    assert len(ds) == 3
    x, y = ds[1]
    assert x.shape == (3, 48, 64) and x.dtype == torch.float32
    assert y.shape == (48, 64) and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) <= {0, 1} and (y == 1).any()
    image, mask = render_sample(np.random.default_rng([5, 1]), (48, 64))
    back = (
        x.numpy().transpose(1, 2, 0) * np.array(IMAGENET_STD) * 255 + np.array(IMAGENET_MEAN) * 255
    )
    np.testing.assert_allclose(back, image, atol=1e-3)
    np.testing.assert_array_equal(y.numpy(), mask)
    x2, y2 = SyntheticDataset(3, (48, 64), seed=5)[1]
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = SyntheticDataset(3, (48, 64), seed=6)[1]
    assert not torch.equal(x, x3)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(HandsegError):
        SyntheticDataset(0, (48, 64))


def test_synthetic_dataset_concat_with_transform():
    import torch

    from handseg.synth.hands import SyntheticDataset

    t = BackgroundComposite(p=1.0)
    ds = torch.utils.data.ConcatDataset([SyntheticDataset(2, (32, 48), 0, transform=t)])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch[0].shape == (2, 3, 32, 48) and batch[1].shape == (2, 32, 48)


def test_background_families_option_reaches_compositing_and_synthetic_hands():
    """--background-families restricts both the compositing backgrounds and the synthetic
    hands' backgrounds (so a benchmark can hold a family out of training)."""
    from handseg.core.config import resolve_config
    from handseg.synth.hands import SyntheticDataset, render_sample
    from handseg.train.run import SYNTHETIC_SEED_OFFSET
    from handseg.train.run import augment_options as _augment_options
    from handseg.train.run import with_synthetic as _with_synthetic

    cfg = resolve_config(
        {
            "preset": "scratch",
            "augment": ["seed", "background"],
            "background_families": ["plain", "gradient"],
            "synthetic_fraction": 0.5,
            "camouflage_prob": 0.25,
            "image_size": [32, 48],
        }
    )
    assert cfg.background_families == ("plain", "gradient")
    assert _augment_options(cfg)["background_families"] == ("plain", "gradient")
    composite = background_factory(**_augment_options(cfg))
    assert composite.source.families == ("plain", "gradient")
    assert composite.camouflage_prob == 0.25

    mixed = _with_synthetic(list(range(4)), cfg)  # 4 real samples -> 4 synthetic ones
    synth = mixed.datasets[1]
    assert len(synth) == 4
    image, mask = synth.load(2)
    # a seed stream of its own, not that of `handseg synth --seed 0` (no leak of test images)
    assert synth.seed == cfg.seed + SYNTHETIC_SEED_OFFSET
    ref = render_sample(
        np.random.default_rng([synth.seed, 2]),
        (32, 48),
        backgrounds=BackgroundSource(families=("plain", "gradient")),
    )
    assert np.array_equal(image, ref[0]) and np.array_equal(mask, ref[1])

    # synthetic hands get the real photos' augmentation
    class Real(list):
        transform = build_transform(["seed", "background"], background_prob=1.0)

    augmented = _with_synthetic(Real(range(4)), cfg).datasets[1]
    assert augmented.transform is Real.transform
    # a new background every time (probability 1)
    assert not np.array_equal(augmented[2][0].numpy(), synth[2][0].numpy())
    # the default (all families) draws different backgrounds for the same sample
    assert not np.array_equal(SyntheticDataset(4, (32, 48), synth.seed).load(2)[0], image)

    with pytest.raises(HandsegError, match="unknown background family carpet"):
        resolve_config({"background_families": ["plain", "carpet"]})
