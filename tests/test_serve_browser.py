"""``handseg serve``'s page in a real browser: Playwright driving Debian's chromium
(``/usr/bin/chromium``; ``.ci/run`` installs it where missing) against a real uvicorn on a
free loopback port (the ``live_server`` fixture)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'handseg[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the test extra)")
if not CHROMIUM.exists():
    pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium", allow_module_level=True)

from handseg.app.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory, synth_dir) -> Path:
    """Two photos (PNG, JPEG) and their masks, named as people name them."""
    root = tmp_path_factory.mktemp("browser")
    (root / "photos").mkdir()
    (root / "masks").mkdir()
    for i, name in enumerate(["hand 1.png", "hand 2.jpg"]):
        Image.open(synth_dir / "images" / f"synth_{i:04d}.png").convert("RGB").save(
            root / "photos" / name, quality=90
        )
        Image.open(synth_dir / "masks" / f"synth_{i:04d}_mask.png").save(
            root / "masks" / f"{Path(name).stem}_mask.png"
        )
    return root


@pytest.fixture(scope="module")
def page(live_server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
        )
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1200, "height": 900}
        )
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(live_server)
        yield pg
        browser.close()
        assert not errors, f"the page's script failed: {errors}"


def _wait_done(page, n: int) -> None:
    page.wait_for_function(
        "n => document.getElementById('progress-text').textContent.startsWith(`${n} / ${n} done`)",
        arg=n,
        timeout=60_000,
    )


def test_two_photos_overlays_and_zip_equal_handseg_predict(page, data, model_file, tmp_path):
    photos = sorted((data / "photos").iterdir())
    page.set_input_files("#photos", [str(p) for p in photos])
    _wait_done(page, 2)
    rows = page.locator("#results tbody tr")
    assert rows.count() == 2
    for i in range(2):  # photo, overlay and mask shown, decoded by the browser
        for sel in ("td.name img", "td.overlay img", "td.mask img"):
            img = rows.nth(i).locator(sel)
            assert img.evaluate("i => i.complete && i.naturalWidth > 0"), sel
    with page.expect_download() as info:
        page.click("#download")
    archive = zipfile.ZipFile(info.value.path())

    assert main(["predict", str(data / "photos"), "--model", str(model_file),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    expected = {p.name: p.read_bytes() for p in tmp_path.glob("*_mask.png")}
    assert sorted(archive.namelist()) == sorted(expected) == ["hand 1_mask.png", "hand 2_mask.png"]
    for name, png in expected.items():
        assert archive.read(name) == png, name  # byte for byte
    assert archive.testzip() is None


def test_photos_with_masks_show_handseg_evaluates_scores(page, data, model_file, tmp_path):
    page.click("#clear")
    masks = sorted((data / "masks").iterdir())
    page.set_input_files("#masks", [str(masks[0])])  # one mask before the photos,
    page.set_input_files("#photos", [str(p) for p in sorted((data / "photos").iterdir())])
    page.set_input_files("#masks", [str(masks[1])])  # one after: that photo is scored again
    page.wait_for_function("() => document.getElementById('set-n').textContent === '2'")
    _wait_done(page, 2)
    assert "2 paired" in page.inner_text("#masks-count")

    assert main(["evaluate", "--model", str(model_file), "--images", str(data / "photos"),
                 "--masks", str(data / "masks"), "--out", str(tmp_path)]) == 0  # fmt: skip
    expected = json.loads((tmp_path / "metrics.json").read_text())
    per_image = {r["image"]: r for r in expected["images"]}
    rows = page.locator("#results tbody tr")
    for i in range(rows.count()):
        name = rows.nth(i).locator("td.name").inner_text().strip()
        record = per_image[name]
        for cls, key in (("iou", "hand_iou"), ("bf", "bf")):
            cell = rows.nth(i).locator(f"td.{cls}")
            assert float(cell.get_attribute("data-value")) == pytest.approx(record[key], abs=1e-12)
            assert cell.inner_text() == f"{record[key]:.4f}"
    hand_iou = expected["classes"]["hand"]["IoU"]
    mean_bf = expected["dataset"]["MeanBFScore"]
    assert float(page.get_attribute("#set-iou", "data-value")) == pytest.approx(hand_iou, abs=1e-12)
    assert page.inner_text("#set-iou") == f"{hand_iou:.4f}"
    assert float(page.get_attribute("#set-bf", "data-value")) == pytest.approx(mean_bf, abs=1e-12)
    assert page.inner_text("#set-n") == "2"


def test_a_bad_file_shows_its_error_and_the_rest_go_on(page, data, tmp_path):
    page.click("#clear")
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#photos", [str(bad), str(sorted((data / "photos").iterdir())[0])])
    _wait_done(page, 2)
    assert "1 failed" in page.inner_text("#progress-text")
    assert "the uploaded image" in page.locator("td.error").inner_text()


def test_model_card_and_webcam(page):
    card = page.inner_text("#model-card")
    assert "input size (H x W)" in card and "64 x 80" in card and "resnet18" in card
    page.click("#cam-start")  # chromium's fake camera
    page.wait_for_function(
        "() => Number(document.getElementById('cam-fps').dataset.value) > 0", timeout=30_000
    )
    assert "frames/s" in page.inner_text("#cam-fps")
    overlay = page.locator("#cam-overlay")
    assert overlay.evaluate("i => i.naturalWidth > 0")
    page.click("#cam-stop")
    Image.open(io.BytesIO(page.screenshot()))  # the page still renders
