"""Contracts of handseg.transforms: one random draw for image and mask, masks never blended."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import handseg.data.transforms as T
from handseg.core.constants import IGNORE_INDEX
from handseg.core.errors import HandsegError
from handseg.data.dataset import SegDataset

H, W = 60, 80


def encoded_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A mask of blocks and blobs, and an image whose pixels encode it:
    image = mask * 200 + a gradient below 50, in all three channels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    mask = (((yy // 8) + (xx // 8)) % 2).astype(np.uint8)  # 8-pixel checkerboard
    for _ in range(3):  # plus a few discs
        cy, cx, r = rng.integers(0, H), rng.integers(0, W), rng.integers(5, 15)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 1
    gradient = (xx * 40 // W + yy * 9 // H).astype(np.uint8)  # 0..48
    image = np.repeat((mask * 200 + gradient)[:, :, None], 3, axis=2).astype(np.uint8)
    return image, mask


def mismatch(image: np.ndarray, mask: np.ndarray) -> float:
    """Share of labelled pixels where the image's encoded label disagrees with the mask."""
    valid = mask != IGNORE_INDEX
    return float(((image[..., 0] > 100) != (mask == 1))[valid].mean())


def test_alignment_check_detects_a_one_pixel_shift():
    image, mask = encoded_pair()
    assert mismatch(image, mask) == 0
    assert mismatch(image, np.roll(mask, 1, axis=1)) > 0.1


def test_seed_transform_keeps_image_and_mask_aligned():
    image, mask = encoded_pair()
    t = T.build_transform(["seed"])
    flips, shifts = 0, set()
    for seed in range(200):
        img2, m2 = t(image, mask, np.random.default_rng(seed))
        assert img2.shape == image.shape and img2.dtype == np.uint8
        assert m2.shape == mask.shape and m2.dtype == np.uint8
        assert set(np.unique(m2)) <= {0, 1, IGNORE_INDEX}
        assert mismatch(img2, m2) == 0  # exact: integer shifts and flips
        ignored = m2 == IGNORE_INDEX
        assert (img2[ignored] == 0).all()  # outside the frame: image 0, mask ignored
        # recover the draw: x shift = width of the ignored band at the left or right
        cols = ignored.all(axis=0)
        dx = int(cols[: W // 2].sum()) - int(cols[W // 2 :].sum())
        shifts.add(dx)
        # flipped iff the gradient (the image minus the encoded mask) now falls to the right
        g = np.where(m2 == 1, img2[..., 0].astype(int) - 200, img2[..., 0].astype(int))
        left, right = g[:, 15:25][~ignored[:, 15:25]], g[:, 55:65][~ignored[:, 55:65]]
        flips += int(left.mean() > right.mean())
    assert 60 < flips < 140
    assert min(shifts) == -10 and max(shifts) == 10 and len(shifts) > 15


def test_same_draw_same_result_and_torch_seeding():
    image, mask = encoded_pair()
    t = T.build_transform(["seed", "scale-rotate", "color", "blur-noise"])
    a = t(image, mask, np.random.default_rng(7))
    b = t(image, mask, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    torch.manual_seed(3)
    c = t(image, mask)
    torch.manual_seed(3)
    d = t(image, mask)
    np.testing.assert_array_equal(c[0], d[0])
    np.testing.assert_array_equal(c[1], d[1])
    outs = {t(image, mask)[1].tobytes() for _ in range(5)}
    assert len(outs) > 1  # torch's RNG advances between calls


def test_scale_rotate_keeps_alignment_and_never_blends_the_mask():
    image, mask = encoded_pair(1)
    t = T.RandomScaleRotate(scale=(0.75, 1.25), degrees=15)
    errors, saw_ignore = [], False
    for seed in range(50):
        img2, m2 = t(image, mask, np.random.default_rng(seed))
        assert set(np.unique(m2)) <= {0, 1, IGNORE_INDEX}  # nearest only
        saw_ignore |= bool((m2 == IGNORE_INDEX).any())
        errors.append(mismatch(img2, m2))
    # A bilinear image and a nearest mask disagree on some boundary pixels even when
    # aligned: ~2.6 % on average on this boundary-heavy checkerboard. Misaligned by a
    # quarter pixel that rises to ~4 %, by half a pixel to ~7 %, by one pixel to ~13 %.
    assert np.mean(errors) < 0.035 and max(errors) < 0.06
    assert saw_ignore


def test_color_jitter_changes_image_only():
    image, mask = encoded_pair()
    rgb = np.random.default_rng(0).integers(0, 256, image.shape, dtype=np.uint8)
    img2, m2 = T.ColorJitter()(rgb, mask, np.random.default_rng(1))
    assert m2 is mask and img2.dtype == np.uint8 and img2.shape == rgb.shape
    assert np.abs(img2.astype(int) - rgb).mean() > 1
    same, _ = T.ColorJitter(0, 0, 0, 0, 0)(rgb, mask, np.random.default_rng(1))
    assert np.abs(same.astype(int) - rgb).max() <= 1


def test_blur_noise_changes_image_only():
    image, mask = encoded_pair()
    t = T.RandomBlurNoise(p_blur=1, p_noise=1, p_jpeg=1)
    img2, m2 = t(image, mask, np.random.default_rng(0))
    assert m2 is mask and img2.shape == image.shape and img2.dtype == np.uint8
    assert not np.array_equal(img2, image)
    assert mismatch(img2, mask) < 0.1  # degraded, still the same picture


def test_build_transform_names_and_options():
    seed = T.build_transform(["seed"])
    assert isinstance(seed, T.Compose)
    assert [type(s) for s in seed.transforms] == [T.RandomHorizontalFlip, T.RandomTranslate]
    assert T.build_transform(["none"]) is None and T.build_transform([]) is None
    t = T.build_transform("seed,color,scale-rotate", max_shift=3, degrees=5)
    kinds = [type(s) for s in t.transforms]
    assert kinds == [T.RandomHorizontalFlip, T.RandomTranslate, T.ColorJitter, T.RandomScaleRotate]
    assert t.transforms[1].max_shift == 3 and t.transforms[3].degrees == 5
    assert len(T.build_transform(["seed", "flip"]).transforms) == 2  # flip applied once
    assert isinstance(T.build_transform(["flip"]), T.RandomHorizontalFlip)
    with pytest.raises(HandsegError) as err:
        T.build_transform(["seed", "zoom"])
    assert "'zoom'" in str(err.value)
    for name in ("seed", "flip", "translate", "scale-rotate", "color", "blur-noise", "none"):
        assert name in str(err.value)
    with pytest.raises(HandsegError, match="none"):
        T.build_transform(["none", "flip"])


def test_register_augmentation_hook(monkeypatch):
    monkeypatch.setattr(T, "AUGMENTATIONS", dict(T.AUGMENTATIONS))

    class Invert(T.PairedTransform):
        def apply(self, image, mask, rng):
            return 255 - image, mask

    T.register_augmentation("background", lambda **o: Invert())
    t = T.build_transform(["seed", "background"])
    assert isinstance(t.transforms[-1], Invert)
    with pytest.raises(ValueError, match="already"):
        T.register_augmentation("background", lambda **o: Invert())
    T.register_augmentation("background", lambda **o: None, overwrite=True)
    assert T.build_transform(["background"]) is None


def test_dataset_with_seed_augmentation_is_reproducible(tmp_path):
    image, mask = encoded_pair()
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    Image.fromarray(image).save(tmp_path / "i" / "a.png")
    Image.fromarray(mask * 255).save(tmp_path / "m" / "a.png")
    ds = SegDataset(
        [(tmp_path / "i" / "a.png", tmp_path / "m" / "a.png")], (H, W), T.build_transform(["seed"])
    )
    torch.manual_seed(0)
    x1, y1 = ds[0]
    torch.manual_seed(0)
    x2, y2 = ds[0]
    torch.testing.assert_close(x1, x2)
    assert torch.equal(y1, y2)
    # normalised image still encodes the mask wherever the mask is defined
    valid = y1 != IGNORE_INDEX
    assert torch.equal((x1[0] > 0)[valid], (y1 == 1)[valid])
