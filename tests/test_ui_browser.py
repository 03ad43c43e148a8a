"""The web app end to end: ``lanskap ui`` on 127.0.0.1 with the tiny model, driven in Debian's headless Chromium.

Screenshots of every page go to ``artifacts/ui-screenshots/<test>/`` (or ``$LANSKAP_SCREENSHOTS``).
Without chromium or playwright the test is skipped, unless ``LANSKAP_REQUIRE_BROWSER=1``
(CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
PROMPT = "a castle in the mist above a glowing lake, fantasy landscape"


def _need(what: str) -> None:
    if os.environ.get("LANSKAP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} is required for the web-app test (LANSKAP_REQUIRE_BROWSER=1)")
    pytest.skip(f"{what} not available")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    _need("Debian's chromium")
    raise AssertionError  # unreachable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """This test's own folder of screenshots: tests on other xdist workers never clear each other's."""
    root = Path(os.environ.get("LANSKAP_SCREENSHOTS", REPO / "artifacts" / "ui-screenshots"))
    folder = root / request.node.originalname.removeprefix("test_")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


@contextlib.contextmanager
def _serve_ui(tiny_sd: Path, home: Path, tmp_path: Path, *extra: str):
    """The real ``lanskap ui`` command in a subprocess; yields its URL and the process."""
    port = _free_port()
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lanskap.cli.main", "ui", "--port", str(port), "--model", str(tiny_sd), *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LANSKAP_HOME": str(home)},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "ui.log").read_text())
            time.sleep(0.5)
        else:
            raise AssertionError("lanskap ui did not start:\n" + (tmp_path / "ui.log").read_text())
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone (the SIGTERM test)
            os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()


@pytest.fixture
def ui_server(tiny_sd: Path, tiny_lora: Path, isolated_home: Path, tmp_path: Path):
    """``lanskap ui`` with a LoRA in the LoRA folder."""
    loras = isolated_home / "loras"
    loras.mkdir(parents=True)
    shutil.copy(tiny_lora, loras / tiny_lora.name)
    with _serve_ui(tiny_sd, isolated_home, tmp_path) as (url, _):
        yield url


def test_generate_find_download_delete_in_a_real_browser(ui_server: str, isolated_home: Path, screenshots: Path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package")
    chromium = _chromium()
    from lanskap.gallery import Gallery
    from lanskap.generation.output import read_infotext

    downloads = screenshots.parent / "ui-downloads"
    shutil.rmtree(downloads, ignore_errors=True)
    downloads.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True).new_page()
        page.set_default_timeout(60_000)

        def shot(name: str) -> None:
            time.sleep(0.5)  # let Streamlit finish painting
            page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)

        try:
            # 1. Generate page: the base model is shown, and the LoRA folder feeds the dropdown.
            page.goto(ui_server)
            page.get_by_label("Prompt", exact=True).wait_for()
            page.get_by_text("tiny random-weight").first.wait_for()  # the demo-model banner
            page.get_by_text("tiny-sd").first.wait_for()
            shot("01-generate")
            page.get_by_label("Prompt", exact=True).fill(PROMPT)
            for side in ("Width", "Height"):
                box = page.get_by_role("spinbutton", name=side)
                box.fill("64")
                box.press("Enter")
            steps = page.get_by_role("slider", name="Steps")
            steps.focus()
            steps.press("Home")
            steps.press("ArrowRight")
            seed = page.get_by_role("spinbutton", name="Seed")
            seed.fill("4242")
            seed.press("Enter")
            page.get_by_text("tiny-sd · loaded").first.wait_for()  # the background load job is done
            page.locator(".st-key-go-txt2img button").click()
            page.get_by_text("saved to the gallery").wait_for(timeout=180_000)
            assert page.get_by_text("seed 4242").first.is_visible()
            shot("02-generated")

            entries, total = Gallery(isolated_home).query()
            assert total == 1
            entry = entries[0]
            assert (entry.prompt, entry.seed, entry.width, entry.height, entry.steps, entry.source) == (
                PROMPT,
                4242,
                64,
                64,
                2,
                "ui",
            )
            assert entry.path.is_file()

            # 2. Gallery: the image is there; open it.
            page.get_by_role("link", name="Gallery").click()
            page.get_by_text(f"#{entry.id} · 64×64 · seed 4242").wait_for()
            shot("03-gallery")
            page.get_by_role("button", name="Details", exact=True).click()
            page.get_by_role("dialog").get_by_role("button", name=re.compile("Use these settings")).wait_for()
            assert page.get_by_text(PROMPT).first.is_visible()
            shot("04-gallery-detail")

            # 3. Download as PNG and as JPG, and check both files.
            files = {}
            detail_buttons = page.locator("[data-testid=stDownloadButton] button")
            for fmt in ("PNG", "JPG"):
                with page.expect_download() as info:
                    detail_buttons.filter(has_text=re.compile(rf"{fmt}$")).first.click()
                files[fmt] = downloads / info.value.suggested_filename
                info.value.save_as(files[fmt])
            assert files["PNG"].suffix == ".png" and files["JPG"].suffix == ".jpg"
            assert files["PNG"].read_bytes() == entry.path.read_bytes()
            with Image.open(files["PNG"]) as im:
                assert (im.format, im.size) == ("PNG", (64, 64))
            with Image.open(files["JPG"]) as im:
                assert (im.format, im.size, im.mode) == ("JPEG", (64, 64), "RGB")
            for f in files.values():
                text = read_infotext(f)
                assert text is not None and text.startswith(PROMPT) and "Seed: 4242" in text

            # 4. Delete, with a confirmation step; the gallery then offers to go and generate.
            page.get_by_role("dialog").get_by_role("button", name=re.compile("Delete…")).click()
            page.get_by_text("can't be undone").wait_for()
            shot("05-confirm-delete")
            assert entry.path.is_file()  # nothing is deleted before the confirmation
            page.get_by_role("button", name="Yes, delete").click()
            page.get_by_text("No images yet").wait_for()
            assert page.get_by_role("button", name="Go and generate").is_visible()
            shot("06-gallery-empty")
            assert not entry.path.exists()
            assert Gallery(isolated_home).query()[1] == 0
            assert Gallery(isolated_home).check() == {"missing_files": [], "unfinished": []}

            # 5. The other pages render, with their empty states.
            page.get_by_role("link", name="Training").click()
            page.get_by_role("button", name="Start training").wait_for()
            shot("07-training")
            page.get_by_role("link", name="Evaluation").click()
            page.get_by_text("No evaluation reports yet").wait_for()
            shot("08-evaluation")
        except Exception:
            shot("zz-failure")  # what the browser showed when it went wrong
            raise
        browser.close()
    names = sorted(p.name for p in screenshots.glob("0*.png"))
    assert len(names) == 8 and not list(screenshots.glob("zz-*")), names


def _settle(page) -> None:
    """Wait for a running Streamlit rerun to end (the status widget hides); give up quietly after 15 s."""
    with contextlib.suppress(Exception):
        page.locator("[data-testid=stStatusWidget]").wait_for(state="hidden", timeout=15_000)


def _stroke(page, canvas, x: float, y: float, length: float) -> None:  # type: ignore[no-untyped-def]
    """A horizontal brush stroke with the mouse, from (x, y) in fractions of the canvas, ``length`` wide."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 50, box
    x0, y0 = box["x"] + box["width"] * x, box["y"] + box["height"] * y
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x0 + box["width"] * length * i / 10, y0, steps=2)
    page.mouse.up()


def test_inpaint_with_a_mask_painted_in_the_browser(ui_server: str, isolated_home: Path, screenshots: Path, tmp_path,
                                                    models_dir: Path):  # fmt: skip
    """Upload a picture, paint the mask with the mouse, draw a ControlNet scribble on the unit's canvas and
    see its map, inpaint: only the painted area changes, and the unit is recorded."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _need("the playwright package")
    chromium = _chromium()
    import numpy as np

    from lanskap.gallery import Gallery
    from lanskap.models.tiny import make_tiny

    if not (models_dir / "browser-controlnet").exists():
        make_tiny(models_dir / "browser-controlnet", "controlnet")
    shutil.copytree(models_dir / "browser-controlnet", isolated_home / "controlnet" / "control_sd21_canny")
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    source = tmp_path / "scene.png"
    picture.save(source)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1400, "height": 1200}).new_page()
        page.set_default_timeout(60_000)
        try:
            # Each attempt starts from a freshly loaded page: under a loaded CI a websocket that
            # dropped, or a rerun still in flight, can swallow an upload, and nothing recovers it
            # in place. Reloading is what a person would do too.
            seen = []
            for _attempt in range(4):
                page.goto(ui_server)
                page.get_by_label("Prompt", exact=True).fill("a ruined tower")
                steps = page.get_by_role("slider", name="Steps")
                steps.focus()
                steps.press("Home")
                for _ in range(3):  # 4 steps: at strength 0.75 that is 3 denoising steps
                    steps.press("ArrowRight")
                _settle(page)
                tab = page.get_by_role("tab", name="Inpaint")
                tab.click()
                expect(tab).to_have_attribute("aria-selected", "true")
                uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="Picture to repaint")
                uploader.wait_for(state="visible")
                uploader.locator("input[type=file]").set_input_files(str(source))
                try:  # the painting canvas appears once Python has the picture
                    page.locator("canvas.lk-view").wait_for(state="visible", timeout=45_000)
                    break
                except Exception:
                    seen.append(page.locator("body").inner_text()[-400:])
            else:
                shown = "\n---\n".join(seen)
                raise AssertionError(f"the picture never reached the inpaint canvas; the page showed:\n{shown}")
            canvas = page.locator("canvas.lk-view")
            page.wait_for_function(
                "() => { const c = document.querySelector('[data-testid] *') && [...document.querySelectorAll('*')]"
                ".map(e => e.shadowRoot && e.shadowRoot.querySelector('img.lk-img')).find(Boolean);"
                " return c && c.complete && c.naturalWidth > 0; }"
            )
            _stroke(page, canvas, 0.35, 0.5, 0.3)
            inpaint = page.locator(".st-key-go-inpaint button").first
            expect(inpaint).to_be_enabled()  # the stroke reached Python: a mask exists
            # A ControlNet unit whose picture is a scribble drawn on its own canvas; its map is shown.
            page.locator(".st-key-cn_show label").first.click()
            page.locator(".st-key-cn0_on label").first.wait_for(timeout=30_000)
            page.locator(".st-key-cn0_on label").first.click()
            page.locator(".st-key-cn0_src").get_by_text("Draw a scribble").click()
            scribble = page.locator(".st-key-cn0_canvas canvas.lk-view")
            scribble.wait_for(state="visible", timeout=45_000)
            _stroke(page, scribble, 0.2, 0.3, 0.6)
            _settle(page)
            page.locator(".st-key-cn0_preview button").click()
            page.get_by_text("Unit 0: canny map").wait_for(timeout=60_000)
            page.screenshot(path=str(screenshots / "09-inpaint-mask-painted.png"), full_page=True)
            inpaint.click()
            page.get_by_text("saved to the gallery").wait_for(timeout=180_000)
            time.sleep(0.5)
            page.screenshot(path=str(screenshots / "10-inpainted.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(screenshots / "zz-inpaint-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    (entry,), _ = Gallery(isolated_home).query()
    assert entry.mode == "inpaint" and (entry.width, entry.height) == (128, 128)
    assert 'ControlNet 0: "Module: canny, Model: control_sd21_canny [' in entry.infotext
    out = np.asarray(Image.open(entry.path).convert("RGB")).astype(int)
    src = np.asarray(picture).astype(int)
    changed = np.abs(out - src).max(axis=2) > 0
    assert changed[64, 64], "the painted stroke was repainted"
    # far from the stroke (brush 40 px on screen, plus the 4 px blur) the picture is kept bit for bit
    assert not changed[:20, :].any() and not changed[-20:, :].any() and not changed[:, :12].any()


def test_log_in_be_refused_and_log_out_in_a_real_browser(
    tiny_sd: Path, isolated_home: Path, tmp_path: Path, screenshots: Path
) -> None:
    """With a user in ``lanskap users``, the app asks for a login, refuses a wrong password, and logs out."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package")
    chromium = _chromium()
    from lanskap.auth import store_at

    password = "a long enough passphrase"
    store_at(isolated_home).add_user("ana", password)
    with _serve_ui(tiny_sd, isolated_home, tmp_path, "--no-preload") as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
        page.set_default_timeout(60_000)
        try:
            page.goto(url)
            page.get_by_role("button", name="Log in").wait_for()
            assert page.get_by_label("Prompt", exact=True).count() == 0  # nothing of the app before a login
            page.get_by_role("textbox", name="User name").fill("ana")
            page.get_by_role("textbox", name="Password or API key").fill("not the password, but long")
            page.get_by_role("button", name="Log in").click()
            page.get_by_text("Wrong user name or password.").wait_for()
            assert page.get_by_label("Prompt", exact=True).count() == 0
            page.screenshot(path=str(screenshots / "login-1-refused.png"))
            page.get_by_role("textbox", name="Password or API key").fill(password)
            page.get_by_role("button", name="Log in").click()
            page.get_by_label("Prompt", exact=True).wait_for()
            page.screenshot(path=str(screenshots / "login-2-in.png"))
            page.get_by_role("button", name="Log out").click()
            page.get_by_role("button", name="Log in").wait_for()
            assert page.get_by_label("Prompt", exact=True).count() == 0
            page.reload()  # a reload starts a new session: still logged out
            page.get_by_role("button", name="Log in").wait_for()
            page.screenshot(path=str(screenshots / "login-3-out.png"))
        except Exception:
            page.screenshot(path=str(screenshots / "zz-login-failure.png"))
            raise
        browser.close()


def test_the_web_app_refuses_foreign_hosts_and_sigterm_frees_its_port(
    tiny_sd: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """Only this machine's names get a websocket (no DNS rebinding); `kill PID` of `lanskap ui`
    (systemd, docker stop) stops the server itself, and nothing keeps the port."""
    import signal

    with _serve_ui(tiny_sd, isolated_home, tmp_path, "--no-preload") as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        assert _listener(port) is not None
        # DNS rebinding: a page under its own name, resolved to 127.0.0.1, gets no websocket to drive the app.
        assert _websocket_status(port, f"127.0.0.1:{port}") == 101
        assert _websocket_status(port, f"localhost:{port}") == 101
        assert _websocket_status(port, f"evil.example:{port}", origin=f"http://evil.example:{port}") != 101
        os.kill(proc.pid, signal.SIGTERM)  # the process `lanskap ui` started as, not its group
        assert proc.wait(30) is not None
        deadline = time.time() + 30
        while time.time() < deadline and _listener(port) is not None:
            time.sleep(0.2)
        assert _listener(port) is None, "something still serves the port after SIGTERM"


def _websocket_status(port: int, host: str, origin: str | None = None) -> int:
    """The status Streamlit's websocket answers a browser's upgrade with, for this Host (101: open)."""
    import base64

    lines = [
        "GET /_stcore/stream HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        f"Origin: {origin or 'http://' + host}",
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(s.recv(1024).split(b" ", 2)[1])


def _listener(port: int) -> int | None:
    """1 when something accepts connections on 127.0.0.1:port, else None."""
    with socket.socket() as s:
        s.settimeout(1)
        return 1 if s.connect_ex(("127.0.0.1", port)) == 0 else None


def _browser(p, chromium: str, **context):  # type: ignore[no-untyped-def]
    browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
    page = browser.new_context(**{"viewport": {"width": 1440, "height": 900}, **context}).new_page()
    page.set_default_timeout(60_000)
    return browser, page


def _set_steps(page, steps: int) -> None:  # type: ignore[no-untyped-def]
    """The Steps slider by keyboard: Home is 1, then one ArrowRight per step (End is the maximum, 150)."""
    slider = page.get_by_role("slider", name="Steps")
    slider.focus()
    if steps >= 150:
        slider.press("End")
        return
    slider.press("Home")
    for _ in range(steps - 1):
        slider.press("ArrowRight")


def _small_form(page, prompt: str, steps: int, images: int = 1) -> None:  # type: ignore[no-untyped-def]
    page.get_by_label("Prompt", exact=True).wait_for()
    for side in ("Width", "Height"):
        box = page.get_by_role("spinbutton", name=side)
        box.fill("64")
        box.press("Enter")
    count = page.get_by_role("spinbutton", name="Number of images")
    count.fill(str(images))
    count.press("Enter")
    _set_steps(page, steps)
    _settle(page)
    prompt_box = page.get_by_label("Prompt", exact=True)
    prompt_box.fill(prompt)


def test_jobs_from_two_tabs_survive_a_reload_and_cancel_keeps_finished_images(
    ui_server: str, isolated_home: Path, screenshots: Path, tmp_path: Path
) -> None:
    """Ctrl+Enter starts a long txt2img job; img2img queues a second; a reload reconnects to both;
    cancel stops the first after its first image, which is kept; the second still runs to its end."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _need("the playwright package")
    chromium = _chromium()
    from lanskap.gallery import Gallery

    picture = tmp_path / "start.png"
    Image.effect_noise((64, 64), 40).convert("RGB").save(picture)
    with sync_playwright() as p:
        browser, page = _browser(p, chromium)
        try:
            page.goto(ui_server)
            page.get_by_text("tiny-sd · loaded").first.wait_for(timeout=120_000)
            _small_form(page, "a long night over the dunes", 150, images=16)  # far longer than the test
            page.get_by_label("Prompt", exact=True).press("Control+Enter")  # generate from the prompt box
            page.get_by_text("txt2img: a long night over the dunes").first.wait_for()
            assert "jobs=" in page.url
            # A second job from another tab: img2img of an uploaded picture, a few steps.
            page.get_by_role("tab", name="Image to image").click()
            uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="Start from this picture")
            uploader.locator("input[type=file]").set_input_files(str(picture))
            go = page.locator(".st-key-go-img2img button").first
            expect(go).to_be_enabled(timeout=45_000)  # the picture reached Python
            _settle(page)
            _set_steps(page, 4)
            count = page.get_by_role("spinbutton", name="Number of images")
            count.fill("1")
            count.press("Enter")
            _settle(page)
            go.click()
            page.get_by_text("img2img: a long night over the dunes").first.wait_for()
            page.screenshot(path=str(screenshots / "jobs-1-two-jobs.png"), full_page=True)
            # A reload mid-job: both jobs come back from the URL, and so does the prompt.
            page.reload()
            page.get_by_text("txt2img: a long night over the dunes").first.wait_for()
            page.get_by_text("img2img: a long night over the dunes").first.wait_for()
            expect(page.get_by_label("Prompt", exact=True)).to_have_value("a long night over the dunes", timeout=60_000)
            # Cancel once a later image of the first job is under way: the finished ones are kept.
            page.get_by_text(re.compile(r"batch ([2-9]|1[0-6]) of 16")).first.wait_for(timeout=180_000)
            page.screenshot(path=str(screenshots / "jobs-2-reconnected.png"), full_page=True)
            running = page.locator("[class*='st-key-live-']").filter(has_text="txt2img:")
            running.get_by_role("button", name="Cancel").click()
            page.get_by_text("cancelled, the rest were not made").wait_for(timeout=120_000)
            done = page.locator("[class*='st-key-job-']").filter(has_text="saved to the gallery")
            expect(done).to_have_count(2, timeout=180_000)  # both jobs, both visible to the end
            page.screenshot(path=str(screenshots / "jobs-3-cancel-kept.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(screenshots / "zz-jobs-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    entries, _ = Gallery(isolated_home).query()
    kept = [e for e in entries if e.mode == "txt2img"]
    assert [e.mode for e in entries].count("img2img") == 1 and 1 <= len(kept) < 16
    assert all(e.steps == 150 for e in kept)  # the cancelled job's finished images, each run to its last step


SIZES = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


def _is_dark(page) -> bool:  # type: ignore[no-untyped-def]
    background = page.evaluate("getComputedStyle(document.querySelector('.stApp')).backgroundColor")
    return sum(int(v) for v in re.findall(r"\d+", background)[:3]) < 200
