"""Contracts of the built-in background generators and BackgroundSource."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from handseg.core.constants import FAMILIES
from handseg.core.errors import HandsegError
from handseg.synth import backgrounds
from handseg.synth.backgrounds import BackgroundSource, random_skin_tone, render_background


def _rng(*seed: int) -> np.random.Generator:
    return np.random.default_rng(list(seed))


def _skin_box_share(img: np.ndarray) -> float:
    """Share of pixels inside the classic YCrCb skin box (Cr 133-173, Cb 77-127)."""
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)
    cr, cb = ycc[..., 1], ycc[..., 2]
    return float(((cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)).mean())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", [(48, 64), (37, 101)])
def test_every_family_renders_the_requested_size_deterministically(family, size):
    for seed in range(4):
        a = render_background(_rng(seed), size, family)
        b = render_background(_rng(seed), size, family)
        assert a.shape == (*size, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
    assert not np.array_equal(
        render_background(_rng(0), size, family), render_background(_rng(1), size, family)
    )


def test_random_family_when_none_given():
    imgs = [render_background(_rng(i), (32, 40)) for i in range(6)]
    assert all(im.shape == (32, 40, 3) for im in imgs)
    assert np.array_equal(imgs[0], render_background(_rng(0), (32, 40)))


def test_skin_family_is_full_of_skin_colours():
    skin = np.mean(
        [_skin_box_share(render_background(_rng(i), (60, 80), "skin")) for i in range(20)]
    )
    plain = np.mean(
        [_skin_box_share(render_background(_rng(i), (60, 80), "plain")) for i in range(20)]
    )
    assert skin > 0.2, skin
    assert skin > 2 * plain


def test_random_skin_tone_spans_light_to_dark_and_looks_like_skin():
    tones = np.array([random_skin_tone(_rng(i)) for i in range(400)])
    assert tones.shape == (400, 3) and tones.min() >= 0 and tones.max() <= 255
    lum = tones @ np.array([0.299, 0.587, 0.114])
    assert lum.min() < 60 and lum.max() > 210
    assert np.mean((tones[:, 0] > tones[:, 1]) & (tones[:, 1] > tones[:, 2])) > 0.95


def test_unknown_family_lists_the_valid_ones():
    with pytest.raises(HandsegError) as exc:
        render_background(_rng(0), (32, 32), "stripes")
    assert all(name in str(exc.value) for name in FAMILIES)
    with pytest.raises(HandsegError, match="indoor"):
        BackgroundSource(families=["plain", "moon"])
    with pytest.raises(HandsegError, match="positive"):
        render_background(_rng(0), (0, 32), "plain")


@pytest.fixture()
def photo_folder(tmp_path):
    """Three solid-colour 'photos' of odd sizes and modes, plus a file to ignore."""
    folder = tmp_path / "bg"
    folder.mkdir()
    Image.new("RGB", (53, 37), (255, 0, 0)).save(folder / "b2.png")
    Image.new("RGBA", (31, 100), (0, 255, 0, 255)).save(folder / "b10.png")
    Image.new("L", (211, 67), 128).save(folder / "b1.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_source_reads_the_users_photos_at_the_requested_size(photo_folder):
    src = BackgroundSource(photo_folder, families=[])
    assert [p.name for p in src.files] == ["b1.png", "b2.png", "b10.png"]  # natural order
    allowed = {(255, 0, 0), (0, 255, 0), (128, 128, 128)}
    seen = set()
    for i in range(30):
        img = src.sample(_rng(i), (40, 56))
        assert img.shape == (40, 56, 3) and img.dtype == np.uint8
        colours = {tuple(c) for c in np.unique(img.reshape(-1, 3), axis=0).tolist()}
        assert len(colours) == 1 and colours <= allowed, colours
        seen |= colours
    assert seen == allowed
    assert np.array_equal(src.sample(_rng(3), (40, 56)), src.sample(_rng(3), (40, 56)))


def test_source_mixes_folder_and_generators(photo_folder):
    src = BackgroundSource(photo_folder, families=["gradient"], folder_prob=0.5)
    from_folder = 0
    for i in range(40):
        img = src.sample(_rng(i), (24, 32))
        assert img.shape == (24, 32, 3)
        from_folder += len(np.unique(img.reshape(-1, 3), axis=0)) == 1
    assert 5 < from_folder < 35


def test_source_uses_only_the_chosen_families(monkeypatch):
    called = []
    for name in FAMILIES:
        real = backgrounds._RENDERERS[name]
        monkeypatch.setitem(
            backgrounds._RENDERERS,
            name,
            lambda rng, h, w, name=name, real=real: called.append(name) or real(rng, h, w),
        )
    src = BackgroundSource(families=["plain", "skin"])
    for i in range(30):
        assert src.sample(_rng(i), (24, 32)).shape == (24, 32, 3)
    assert set(called) == {"plain", "skin"}
    called.clear()
    for i in range(60):
        BackgroundSource().sample(_rng(i), (16, 16))
    assert set(called) == set(FAMILIES)


def test_source_bad_folders(tmp_path):
    with pytest.raises(HandsegError, match="does not exist"):
        BackgroundSource(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(HandsegError, match="holds no images"):
        BackgroundSource(empty)
    with pytest.raises(HandsegError, match="no backgrounds"):
        BackgroundSource(families=[])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.jpg").write_bytes(b"this is not a jpeg")
    src = BackgroundSource(broken, families=[])
    with pytest.raises(HandsegError, match="bad.jpg"):
        src.sample(_rng(0), (16, 16))
