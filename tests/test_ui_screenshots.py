"""Screenshots of every page at 1440×900 and 390×844, light and dark (slow: 16 page loads).

Into ``artifacts/ui-screenshots/<test>/`` (or ``$LANSKAP_SCREENSHOTS``), with ``lanskap ui`` on the
tiny model in Debian's headless Chromium. Not marked e2e, so the default run (``not slow or e2e``)
leaves it out: ``pytest -m slow tests/test_ui_screenshots.py`` makes the set.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest

import test_ui_browser
from test_ui_browser import SIZES, _browser, _chromium, _is_dark, _need, _settle, _small_form

# The browser tests' fixtures, under their own names so pytest finds them here too.
ui_server = test_ui_browser.ui_server
screenshots = test_ui_browser.screenshots


@pytest.mark.slow
def test_screenshots_of_every_page_at_two_sizes_in_both_themes(
    ui_server: str,
    isolated_home: Path,
    screenshots: Path,
) -> None:
    """Every page at 1440×900 and 390×844, light and dark, into artifacts/ui-screenshots/ (slow: 16 page loads)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package")
    chromium = _chromium()
    from test_ui_apptest import _add_images

    _add_images(isolated_home, [f"a canyon at hour {i}" for i in range(5)])
    with sync_playwright() as p:
        for scheme in ("light", "dark"):
            for size_name, viewport in SIZES.items():
                browser, page = _browser(p, chromium, viewport=viewport, color_scheme=scheme)
                try:
                    for name in ("generate", "gallery", "training", "evaluation"):
                        page.goto(ui_server if name == "generate" else f"{ui_server}/{name}")
                        page.get_by_text("lanskap ·").first.wait_for()
                        if name == "generate":  # a fresh server's first run is slow: wait for the form itself
                            page.get_by_label("Prompt", exact=True).wait_for(timeout=120_000)
                        _settle(page)
                        time.sleep(0.5)
                        page.screenshot(path=str(screenshots / f"{name}-{size_name}-{scheme}.png"), full_page=True)
                        assert _is_dark(page) == (scheme == "dark")
                finally:
                    browser.close()
    assert len(list(screenshots.glob("*.png"))) == 16  # 4 pages x 2 sizes x 2 themes


# Slow since #34 kept the default run under ten minutes: its paths (the viewer's arrows and "send to",
# hires and upscale from the gallery, before and after) also run in tests/test_ui_apptest.py, and the
# phone layout in the dark in the screenshots above; this one drives them all in Chromium.
@pytest.mark.slow
def test_viewer_send_to_img2img_preset_and_the_phone_gallery_in_the_dark(
    ui_server: str, isolated_home: Path, screenshots: Path
) -> None:
    """The viewer walks with the arrow keys and sends a picture to img2img, which runs on it; its result
    is upscaled (before and after); the training preset fills the form; on a phone, in the dark theme,
    the gallery keeps newest-first."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _need("the playwright package")
    chromium = _chromium()
    from lanskap.gallery import Gallery
    from test_ui_apptest import _add_images

    ids = _add_images(isolated_home, [f"a canyon at hour {i}" for i in range(5)])
    with sync_playwright() as p:
        browser, page = _browser(p, chromium)
        try:
            page.goto(f"{ui_server}/gallery")
            picture = page.locator("[class*='st-key-lk-click-gl-']").first
            picture.wait_for()
            _settle(page)  # a click during the first run's end is lost, as it would be for a person
            dialog = page.get_by_role("dialog")
            for _ in range(3):  # a click that a busy rerun swallowed is repeated, never one that landed
                if dialog.count() == 0:
                    picture.click()  # a click on the picture opens it
                with contextlib.suppress(Exception):
                    dialog.wait_for(timeout=20_000)
                    break
            dialog.get_by_text(f"#{ids[-1]}").first.wait_for()  # newest first
            expect(dialog.get_by_text("1 of 5")).to_be_visible(timeout=30_000)
            page.keyboard.press("ArrowRight")
            expect(dialog.get_by_text("2 of 5")).to_be_visible(timeout=30_000)
            dialog.get_by_text(f"#{ids[-2]}").first.wait_for()
            page.screenshot(path=str(screenshots / "viewer-1-dialog.png"))
            dialog.locator(".st-key-v-send-img2img button").click()
            page.get_by_text(f"#{ids[-2]} from the gallery").wait_for()
            expect(page.get_by_role("tab", name="Image to image")).to_have_attribute(
                "aria-selected", "true", timeout=30_000
            )
            _small_form(page, "the canyon at dusk", 4)
            page.locator(".st-key-go-img2img button").first.click()
            done = page.locator("[class*='st-key-job-']").filter(has_text="saved to the gallery")
            expect(done).to_have_count(1, timeout=120_000)
            page.screenshot(path=str(screenshots / "viewer-2-sent-to-img2img.png"), full_page=True)

            # The result's Upscale button opens the Upscale tab with it; the upscale shows before and after.
            result_id = max(e.id for e in Gallery(isolated_home).query()[0])
            page.locator(f"[class*='st-key-ups-'][class*='-{result_id}'] button").first.click()
            page.get_by_text(f"#{result_id} from the gallery").wait_for(timeout=30_000)
            expect(page.get_by_role("tab", name="Upscale")).to_have_attribute("aria-selected", "true")
            page.get_by_text("From 64×64 to 128×128.").wait_for(timeout=30_000)
            _settle(page)
            page.locator(".st-key-go-upscale button").first.click()
            page.get_by_text("Before · 64×64").wait_for(timeout=120_000)
            page.get_by_text("After · 128×128").wait_for()
            page.screenshot(path=str(screenshots / "viewer-3-upscale-before-after.png"), full_page=True)

            # The training preset fills the form, so the form shows what will run.
            page.goto(f"{ui_server}/training")
            page.get_by_role("spinbutton", name="Steps", exact=True).wait_for()
            expect(page.get_by_role("spinbutton", name="Steps", exact=True)).to_have_value("1500")
            page.get_by_label("Preset", exact=True).click()
            page.get_by_role("option", name="thesis").click()
            expect(page.get_by_role("spinbutton", name="Steps", exact=True)).to_have_value("400")
            expect(page.get_by_role("spinbutton", name="Warm-up steps")).to_have_value("40")
        except Exception:
            page.screenshot(path=str(screenshots / "zz-viewer-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
        made = Gallery(isolated_home).query(mode="img2img")[0]
        assert len(made) == 1 and made[0].params["init"]["image_size"] == [96, 64]  # the sent picture (96×64)
        upscaled = Gallery(isolated_home).query(mode="upscale")[0]
        assert len(upscaled) == 1 and upscaled[0].params["source_id"] == made[0].id

        # On a phone, in the dark theme: the sidebar starts closed, the page is dark, and the
        # gallery's cards run newest first, top to bottom.
        browser, page = _browser(p, chromium, viewport=SIZES["phone"], color_scheme="dark")
        try:
            page.goto(f"{ui_server}/gallery")
            cards = page.get_by_text(re.compile(r"^#\d+ · \d+×\d+ · seed"))
            cards.first.wait_for()
            _settle(page)
            assert _is_dark(page)
            box = page.locator("[data-testid=stSidebar]").bounding_box()
            assert box is None or box["x"] + box["width"] <= 1, box  # off the screen
            tops = []
            for i in range(cards.count()):
                box = cards.nth(i).bounding_box()
                number = int(re.match(r"#(\d+)", cards.nth(i).inner_text()).group(1))
                tops.append((box["y"], number))
            shown = [n for _, n in sorted(tops)]
            assert shown == sorted(shown, reverse=True) and len(shown) == 7, shown
            page.screenshot(path=str(screenshots / "gallery-phone-dark.png"), full_page=True)
        finally:
            browser.close()
