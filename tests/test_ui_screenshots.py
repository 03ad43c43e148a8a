"""Screenshots of every page at 1440×900 and 390×844, light and dark (slow: 16 page loads).

Into ``artifacts/ui-screenshots/<test>/`` (or ``$LANSKAP_SCREENSHOTS``), with ``lanskap ui`` on the
tiny model in Debian's headless Chromium. Not marked e2e, so the default run (``not slow or e2e``)
leaves it out: ``pytest -m slow tests/test_ui_screenshots.py`` makes the set.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import test_ui_browser
from test_ui_browser import SIZES, _browser, _chromium, _is_dark, _need, _settle

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
