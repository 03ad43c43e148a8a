"""Web-app paths the browser test doesn't take, through Streamlit's AppTest (real pages, real Service, tiny model)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import REPO

APP = str(REPO / "src" / "lanskap" / "ui" / "app.py")


@pytest.fixture
def app_env(tiny_sd: Path, tiny_lora: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings as ``lanskap ui`` passes them, and a fresh Service for this test's LANSKAP_HOME."""
    from lanskap.ui.common import service

    monkeypatch.setenv("LANSKAP_MODEL", str(tiny_sd))
    import shutil

    (isolated_home / "loras").mkdir(parents=True)
    shutil.copy(tiny_lora, isolated_home / "loras" / tiny_lora.name)  # the LoRA folder holds just this one
    monkeypatch.setenv("LANSKAP_UI_PRELOAD", "0")
    service.clear()
    yield isolated_home
    service().queue.shutdown()
    service.clear()


def _app(page: str | None = None) -> AppTest:
    """A fresh browser session, on ``page`` (generate, gallery, training, evaluation)."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _wait_idle(timeout: float = 120) -> None:
    from lanskap.ui.common import service

    q = service().queue
    end = time.time() + timeout
    while (q.current is not None or q.pending()) and time.time() < end:
        time.sleep(0.05)
    assert q.current is None and not q.pending(), "the queue did not drain"


def _texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "warning", "error") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def _small(at: AppTest) -> None:
    at.number_input(key="g_width").set_value(64)
    at.number_input(key="g_height").set_value(64)
    at.slider(key="g_steps").set_value(2)


def test_generate_with_a_lora_then_reuse_and_use_settings_from_the_gallery(app_env: Path) -> None:
    from lanskap.gallery import Gallery

    at = _app()
    at.number_input(key="g_width").set_value(130).run()
    assert at.number_input(key="g_width").value == 128  # sizes snap to the latent grid
    at.button(key="go-txt2img").click().run()
    assert "Write a prompt first" in _texts(at)  # nothing is queued without a prompt
    assert Gallery(app_env).query()[1] == 0

    assert at.selectbox(key="g_lora").options == ["(none)", "mist-style"]
    at.text_area(key="g_prompt").input("ruins in a (misty:1.2) valley")
    at.selectbox(key="g_lora").set_value("mist-style")
    at.slider(key="g_lora_scale").set_value(0.7)
    at.number_input(key="g_seed").set_value(-1)  # random, and recorded
    at.number_input(key="g_clip_skip").set_value(2)
    at.number_input(key="g_ensd").set_value(31337)
    _small(at)
    at.button(key="go-txt2img").click().run()
    _wait_idle()
    at.run()
    assert "saved to the gallery" in _texts(at)
    (entry,), total = Gallery(app_env).query()
    assert total == 1 and entry.loras[0]["name"] == "mist-style" and entry.loras[0]["scale"] == 0.7
    assert entry.prompt == "ruins in a (misty:1.2) valley" and entry.source == "ui"
    assert entry.params["clip_skip"] == 2 and "Clip skip: 2" in entry.infotext
    assert entry.params["ensd"] == 31337 and "ENSD: 31337" in entry.infotext
    # "Reuse" puts the random seed that was used back in the seed box.
    at.button[[b.label for b in at.button].index(":material/replay: Reuse")].click().run()
    assert at.number_input(key="g_seed").value == entry.seed

    # Gallery: open it, "use these settings" fills the Generate page.
    at.switch_page("views/gallery.py").run()
    at.button(key=f"open-{entry.id}").click().run()
    at.button(key="v-use").click().run()
    assert at.text_area(key="g_prompt").value == entry.prompt
    assert at.selectbox(key="g_lora").value == "mist-style"
    assert at.slider(key="g_lora_scale").value == pytest.approx(0.7)
    assert at.number_input(key="g_seed").value == entry.seed
    assert (at.number_input(key="g_width").value, at.number_input(key="g_height").value) == (64, 64)
    assert at.number_input(key="g_clip_skip").value == 2 and at.number_input(key="g_ensd").value == 31337


def _add_images(home: Path, prompts: list[str], size: int = 64) -> list[int]:
    """Real generations through the core, as the CLI would record them."""
    from lanskap.config import load_settings
    from lanskap.gallery import Gallery
    from lanskap.gallery.record import save_result
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest

    settings = load_settings()
    engine = Engine(settings=settings)
    ids = []
    for i, prompt in enumerate(prompts):
        side = size if i % 2 == 0 else size + 32
        result = engine.generate(GenerationRequest(prompt, seed=i, steps=1, width=side, height=size, watermark=False))
        ids += [e.id for _, e in save_result(result, home / "outputs", "png", Gallery(home), source="cli")]
    return ids


def test_gallery_filters_pages_zip_and_delete_selected(app_env: Path) -> None:
    import io
    import json
    import zipfile

    from lanskap.gallery import Gallery

    prompts = [f"castle number {i}" if i % 3 else f"misty lake number {i}" for i in range(14)]
    ids = _add_images(app_env, prompts)
    at = _app("gallery")
    assert "14 image(s), newest first" in _texts(at)
    shown = [int(b.key[5:]) for b in at.button if b.key and b.key.startswith("open-")]
    # The newest 12 on page 1, in that order through the page (row by row: a phone stacks them so).
    assert shown == sorted(ids, reverse=True)[:12]
    at.text_input(key="gl_search").input("misty").run()
    lake_ids = [i for i, p in zip(ids, prompts, strict=True) if "misty" in p]
    assert f"{len(lake_ids)} image(s)" in _texts(at)
    assert sorted(int(b.key[5:]) for b in at.button if b.key and b.key.startswith("open-")) == sorted(lake_ids)
    at.selectbox(key="gl_size").set_value("96×64").run()
    wide_lakes = [i for i in lake_ids if ids.index(i) % 2 == 1]
    assert sorted(int(b.key[5:]) for b in at.button if b.key and b.key.startswith("open-")) == sorted(wide_lakes)
    at.text_input(key="gl_search").input("dragon").run()
    assert "No images match these filters." in _texts(at)
    at.text_input(key="gl_search").input("").run()
    at.selectbox(key="gl_size").set_value("All").run()
    # By seed, mode and model (every image here is a txt2img of tiny-sd with seed = its index).
    at.number_input(key="gl_seed").set_value(5).run()
    assert [int(b.key[5:]) for b in at.button if b.key and b.key.startswith("open-")] == [ids[5]]
    assert at.selectbox(key="gl_model").options == ["All", "tiny-sd"]
    at.selectbox(key="gl_mode").set_value("inpaint").run()
    assert "No images match these filters." in _texts(at)
    at.selectbox(key="gl_mode").set_value("All").run()
    at.number_input(key="gl_seed").set_value(None).run()

    # "Select all on page" ticks the page's 12, and again unticks them.
    at.button(key="gl-sel-page").click().run()
    assert "12 selected" in _texts(at)
    at.button(key="gl-sel-page").click().run()
    assert "0 selected" in _texts(at)
    # Select two, download them as a ZIP, then delete them after confirming.
    pick = sorted(ids, reverse=True)[:2]
    for i in pick:
        at.checkbox(key=f"sel-{i}").check().run()
    assert "2 selected" in _texts(at)
    zip_button = next(b for b in at.get("download_button") if b.proto.label.startswith(":material/folder_zip:"))
    assert "ZIP of 2 selected" in zip_button.proto.label
    from lanskap.gallery.export import zip_bytes

    data = zip_bytes([Gallery(app_env).get(i) for i in pick])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        rows = json.loads(zf.read("gallery.json"))
    assert sorted(r["id"] for r in rows) == sorted(pick)
    at.button(key="gl-del-sel").click().run()
    assert "Delete 2 images?" in _texts(at)
    assert Gallery(app_env).query()[1] == 14  # not before the confirmation
    at.button(key="gl-no").click().run()
    assert Gallery(app_env).query()[1] == 14
    at.button(key="gl-del-sel").click().run()
    at.button(key="gl-yes").click().run()
    remaining = {e.id for e in Gallery(app_env).query(limit=100)[0]}
    assert remaining == set(ids) - set(pick)
    assert Gallery(app_env).check() == {"missing_files": [], "unfinished": []}


def test_queue_is_visible_and_a_full_queue_is_a_friendly_message(app_env: Path, monkeypatch) -> None:
    import threading

    from lanskap.ui.common import service

    monkeypatch.setenv("LANSKAP_UI_MAX_QUEUE", "1")
    service.clear()
    svc = service()
    release = threading.Event()
    svc.queue.submit("train", "train someone-else", lambda job: release.wait(60))
    at = _app()
    at.text_area(key="g_prompt").input("a quiet harbour")
    _small(at)
    at.button(key="go-txt2img").click().run()
    assert "Waiting in the queue: number 1 in line" in _texts(at)
    other = _app()  # another browser tab: its status panel lists both jobs
    sidebar = "\n".join(str(c.value) for c in other.sidebar.get("caption"))
    assert other.sidebar.get("progress")[0].proto.text == "running: train someone-else"
    assert ":material/deployed_code:" in sidebar and "not loaded" in sidebar
    assert "1. :material/hourglass_top: txt2img: a quiet harbour" in sidebar
    at.button(key="go-txt2img").click().run()  # a second one doesn't fit: one place in the queue
    errors = [e.value for e in at.error]
    assert any("the queue is full" in e for e in errors), errors
    release.set()
    _wait_idle()
    at.run()
    assert "saved to the gallery" in _texts(at)


def _wait(predicate, timeout: float = 120, what: str = "condition") -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_training_page_starts_stops_resumes_and_publishes_the_lora(app_env: Path, tmp_path: Path) -> None:
    from lanskap.ui.common import service
    from test_training import write_imagefolder

    data = write_imagefolder(tmp_path / "set", n=6)
    mini_set = write_imagefolder(app_env / "datasets" / "verdigris" / "train", n=2).parent  # mini dataset's layout
    (app_env / "datasets" / "not-a-dataset").mkdir()
    at = _app("training")
    assert "No training runs yet" in _texts(at)
    assert at.selectbox(key="tr-dataset").options == [str(mini_set)]
    # A preset fills the form, so the form shows what will run (warm-up at most a tenth of the steps).
    at.selectbox(key="tr-preset").set_value("thesis").run()
    form = {k: at.number_input(key=k).value for k in ("tr-steps", "tr-lr", "tr-res", "tr-every", "tr-warmup")}
    assert form == {"tr-steps": 400, "tr-lr": 2e-5, "tr-res": 768, "tr-every": 100, "tr-warmup": 40}
    at.selectbox(key="tr-preset").set_value("default").run()
    assert at.number_input(key="tr-steps").value == 1500 and at.number_input(key="tr-warmup").value == 100
    at.text_input(key="tr-path").input(str(data))
    at.text_input(key="tr-name").input("striped-valley")
    at.number_input(key="tr-steps").set_value(40)
    at.number_input(key="tr-rank").set_value(4)
    at.number_input(key="tr-res").set_value(64)
    at.number_input(key="tr-every").set_value(5)
    at.number_input(key="tr-vsteps").set_value(1)
    at.text_input(key="tr-vprompt").input("a magenta striped landscape")
    at.button(key="tr-go").click().run()
    assert "striped-valley" in _texts(at), "the run shows right after Start"
    q = service().queue
    _wait(lambda: q.current is not None and q.current.kind == "train" and q.current.step >= 3, what="3 steps")
    at.run()
    assert "striped-valley" in _texts(at) and "running" in _texts(at)
    at.button(key="tr-stop").click().run()
    _wait(lambda: q.current is None, what="the stop")
    at.run()
    run_dir = app_env / "training" / "striped-valley"
    stopped = next(j for j in q.recent() if j.kind == "train")
    assert stopped.state == "cancelled" and stopped.result.result.interrupted
    assert "Stopped; the latest checkpoint is saved" in _texts(at)
    assert not (app_env / "loras" / "striped-valley.safetensors").exists()
    steps_at_stop = stopped.result.result.steps
    assert 3 <= steps_at_stop < 40 and (run_dir / f"checkpoint-{steps_at_stop}").is_dir()

    at.button(key="tr-resume").click().run()
    _wait(lambda: q.current is None and not q.pending(), timeout=300, what="the resumed run")
    at.run()
    done = next(j for j in q.recent() if j.kind == "train")
    assert done.state == "done", done.error
    assert done.result.result.steps == 40
    assert "finished" in _texts(at) and "LoRA ready: striped-valley" in _texts(at)
    assert (app_env / "loras" / "striped-valley.safetensors").is_file()
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 41))  # the resume redid no step
    assert sorted((run_dir / "validation").glob("step-*")), "validation images were rendered"
    import yaml

    assert yaml.safe_load((run_dir / "train_config.yaml").read_text())["lr_warmup_steps"] == 4  # 100, capped: 40 // 10
    # The new LoRA is offered on the Generate page, and "Try it in Generate" opens it there.
    gen = _app()
    assert "striped-valley" in gen.selectbox(key="g_lora").options
    at.button(key="tr-try").click().run()
    assert at.selectbox(key="g_lora").value == "striped-valley" and at.text_area(key="g_prompt")


def test_the_loss_chart_uses_real_steps_and_shows_eval_loss() -> None:
    from lanskap.ui.training_page import loss_table

    rows = [{"step": 101, "loss": 0.4}, {"step": 102, "loss": 0.2}, {"step": 102, "eval_loss": 0.3}]
    table = loss_table(rows)
    assert set(table["series"]) == {"loss", "loss (EMA 0.9)", "eval_loss"}
    assert list(table[table["series"] == "loss"]["step"]) == [101, 102]
    assert list(table[table["series"] == "eval_loss"]["value"]) == [0.3]


def test_evaluation_page_lists_and_shows_reports(app_env: Path, tmp_path: Path, models_dir: Path) -> None:
    from lanskap.config import load_settings
    from lanskap.evaluation import EvalConfig, evaluate
    from lanskap.models.tiny_aux import build_clip

    clip = models_dir / "tiny-clip-ui"
    if not clip.exists():
        build_clip(clip)
    real, gen = tmp_path / "real", tmp_path / "gen"
    from test_training import striped

    for folder, offset in ((real, 0), (gen, 2)):
        folder.mkdir()
        for i in range(4):
            striped(i + offset).save(folder / f"{i}.png")
    at = _app("evaluation")
    assert "No evaluation reports yet" in _texts(at)
    out = app_env / "evaluations" / "20261121-folders"
    evaluate(EvalConfig(out=out, real=real, generated=[gen], clip_model=str(clip)), load_settings())
    at = _app("evaluation")
    assert at.selectbox(key="ev_pick").options == ["20261121-folders"]
    text = _texts(at)
    assert "CMMD" in text and "lanskap evaluation" in text
    table = at.dataframe[0].value
    assert "CMMD ↓" in table.columns and list(table["N"]) == [4]  # one row per set compared with the real one


def test_ui_refuses_a_public_address_without_a_login(isolated_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import assert_one_line_error, main_cli

    proc = main_cli(capsys, "ui", "--host", "0.0.0.0", "--port", "8599")
    assert_one_line_error(proc, "refusing to serve the web app on 0.0.0.0 without a login", "lanskap users add")


PASSWORD = "a long enough passphrase"


def _login(at: AppTest, user: str, secret: str) -> AppTest:
    at.text_input(key="lk-login-user").input(user)
    at.text_input(key="lk-login-secret").input(secret)
    return at.button[0].click().run()  # the form's submit button


def test_the_login_shares_the_api_users_refuses_wrong_ones_expires_and_logs_out(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lanskap.auth import store_at
    from lanskap.ui import login

    store = store_at(app_env)
    store.add_user("ana", PASSWORD)
    key = store.add_key("tablet")
    monkeypatch.setenv("LANSKAP_UI_LOGIN", "1")
    monkeypatch.setenv("LANSKAP_UI_SESSION_MINUTES", "0.05")  # 3 s
    login._store.clear()
    login._failures.clear()

    at = _app()
    assert "Log in" in _texts(at) and not at.text_area  # no page before a login
    _login(at, "ana", "wrong password, long enough")
    assert "Wrong user name or password." in [e.value for e in at.error]
    assert not at.text_area
    _login(at, "ana", PASSWORD)
    assert not at.exception and at.text_area(key="g_prompt")  # the generate page
    assert "ana" in _texts(at)
    at.button(key="lk-logout").click().run()
    assert not at.text_area and "Log in" in _texts(at)

    _login(at, "", key)  # an API key logs in without a user name
    assert at.text_area(key="g_prompt") and "key:tablet" in _texts(at)
    time.sleep(3.2)
    at.run()
    assert not at.text_area and "Your session has ended" in _texts(at)

    _login(at, "ana", PASSWORD)
    assert at.text_area(key="g_prompt")
    store.remove("ana")  # a removed user is out at the next rerun
    at.run()
    assert not at.text_area and "Your session has ended" in _texts(at)


def test_the_login_form_backs_off_after_repeated_failures(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lanskap.auth import store_at
    from lanskap.ui import login

    store_at(app_env).add_user("ana", PASSWORD)
    monkeypatch.setenv("LANSKAP_UI_LOGIN", "1")
    login._store.clear()
    login._failures.clear()
    at = _app()
    for _ in range(5):  # the free tries, through the form
        _login(at, "ana", "not the password at all")
    for _ in range(5):  # five more failures from this client (AppTest has no address: "?") make a 16 s wait
        login._failures().failed("?")
    _login(at, "ana", PASSWORD)  # even the right one waits out the back-off
    assert any("Too many failed logins" in e.value for e in at.error)
    assert not at.text_area


def test_a_painted_mask_comes_back_full_size_and_binary() -> None:
    import base64
    import io

    from PIL import Image, ImageDraw

    from lanskap.errors import LanskapError
    from lanskap.ui.mask_canvas import decode_mask, image_data_url

    painted = Image.new("RGB", (100, 60), "black")
    ImageDraw.Draw(painted).ellipse((20, 10, 60, 50), fill=(200, 200, 200))
    buf = io.BytesIO()
    painted.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    mask = decode_mask(url, (200, 120))  # the browser canvas may be the displayed size; the mask is the picture's
    assert mask is not None and mask.size == (200, 120) and mask.mode == "L"
    assert set(mask.getdata()) == {0, 255}
    assert mask.getpixel((80, 60)) == 255 and mask.getpixel((5, 5)) == 0
    blank = io.BytesIO()
    Image.new("L", (10, 10), 0).save(blank, format="PNG")
    assert decode_mask("data:image/png;base64," + base64.b64encode(blank.getvalue()).decode(), (10, 10)) is None
    assert decode_mask(None, (10, 10)) is None
    with pytest.raises(LanskapError, match="PNG"):
        decode_mask("data:text/html;base64,PGI+", (10, 10))
    assert image_data_url(Image.new("RGB", (3000, 1000))).startswith("data:image/png;base64,")


def test_style_picker_expands_the_prompt(app_env: Path) -> None:
    from lanskap.gallery import Gallery

    (app_env / "styles.csv").write_text("name,prompt,negative_prompt\nDusk,{prompt} at dusk,noon\nInk,ink drawing,\n")
    at = _app()
    assert at.multiselect(key="g_styles").options == ["Dusk", "Ink"]
    at.text_area(key="g_prompt").input("a lake")
    at.text_area(key="g_negative").input("")
    at.multiselect(key="g_styles").set_value(["Dusk", "Ink"])
    _small(at)
    at.button(key="go-txt2img").click().run()
    _wait_idle()
    (entry,), _ = Gallery(app_env).query()
    assert entry.prompt == "a lake at dusk, ink drawing" and entry.negative_prompt == "noon"


def test_a_refused_setting_is_named_as_the_page_shows_it() -> None:
    """The core names the setting; the web app says it in words, never as a CLI flag."""
    from lanskap.errors import LanskapError, SettingError
    from lanskap.generation.prepare import outpaint_inputs
    from lanskap.ui.common import user_message

    with pytest.raises(SettingError) as info:
        outpaint_inputs(Image.new("RGB", (64, 64)), left=0, right=0, up=0, down=0, overlap=8)
    assert user_message(info.value) == "give at least one margin to extend (setting: left, right, up, down)"
    assert user_message(LanskapError("the queue is full")) == "the queue is full"


def test_the_web_app_refuses_pickles_as_serve_does(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LANSKAP_ALLOW_PICKLE is the CLI user's opt-in; a page's user never gets it."""
    from lanskap.ui.common import service

    monkeypatch.setenv("LANSKAP_ALLOW_PICKLE", "1")
    service.clear()
    assert service().settings.allow_pickle is False


def test_viewer_walks_with_arrows_and_sends_a_picture_to_inpaint(app_env: Path) -> None:
    """Gallery → viewer: next/previous (← →), reuse this seed, send to inpaint fills that tab's picture."""
    ids = _add_images(app_env, ["a red canyon", "a blue fjord", "a green valley"])
    at = _app("gallery")
    at.button(key=f"open-{ids[-1]}").click().run()  # newest first: the valley opens first
    caption = "\n".join(str(c.value) for c in at.caption)
    assert f"**#{ids[-1]}**" in caption and "1 of 3" in caption
    assert at.button(key="v-prev").disabled and at.button(key="v-next").proto.shortcut.lower() == "right"
    at.button(key="v-next").click().run()
    caption = "\n".join(str(c.value) for c in at.caption)
    assert f"**#{ids[1]}**" in caption and "2 of 3" in caption
    assert any("a blue fjord" in str(c.value) for c in at.code)  # the infotext, with its copy button
    at.button(key="v-seed").click().run()  # reuse this seed: the Generate page, seed filled in
    assert at.number_input(key="g_seed").value == 1
    at.switch_page("views/gallery.py").run()
    at.button(key=f"open-{ids[0]}").click().run()
    at.button(key="v-send-inpaint").click().run()
    assert at.session_state["g_tab"] == "Inpaint"
    # the picture is in the inpaint tab (no upload needed), with a way back to uploading
    assert at.button(key="inp-image-unsend").label.endswith("Use another picture")
    assert at.session_state["g_sent"] == {"tab": "Inpaint", "id": ids[0]}
    assert at.button(key="go-inpaint").disabled  # a mask is still missing
    assert at.button(key="go-inpaint").proto.shortcut.lower() == "ctrl+enter"  # Ctrl+Enter from anywhere


def test_jobs_belong_to_the_session_and_a_reload_reconnects(app_env: Path) -> None:
    """Two jobs from one session both show; a new session given the URL's job ids shows them again."""
    from lanskap.gallery import Gallery

    at = _app()
    at.text_area(key="g_prompt").input("first valley")
    _small(at)
    at.number_input(key="g_num").set_value(2)
    at.button(key="go-txt2img").click().run()
    at.text_area(key="g_prompt").input("second valley")
    at.number_input(key="g_num").set_value(1)
    at.button(key="go-txt2img").click().run()
    _wait_idle()
    at.run()
    jobs = at.session_state["g_jobs"]
    assert len(jobs) == 2 and at.query_params["jobs"] in (",".join(jobs), [",".join(jobs)])
    texts = _texts(at)
    assert "txt2img: first valley" in texts and "txt2img: second valley" in texts
    assert texts.count("saved to the gallery") == 2
    assert "Test model: this is a **tiny random-weight** model" in texts  # the plain, permanent banner
    assert "` · loaded · cpu/" in texts  # the header's live model state
    assert [b.label for b in at.get("download_button") if b.key.startswith("grid-")] == [
        ":material/grid_view: Grid of 2 (PNG)"
    ]  # a batch of two offers its grid
    assert Gallery(app_env).query()[1] == 3
    # A reload: a new session with only the URL. Both jobs come back, and the form shows the newest one.
    again = AppTest.from_file(APP, default_timeout=120)
    again.query_params["jobs"] = ",".join(jobs)
    again.run()
    assert not again.exception
    texts = _texts(again)
    assert "txt2img: first valley" in texts and "txt2img: second valley" in texts
    assert again.text_area(key="g_prompt").value == "second valley"
    assert again.number_input(key="g_width").value == 64
    # Someone else's guess at an id is nothing: ids carry a random part.
    stranger = AppTest.from_file(APP, default_timeout=120)
    stranger.query_params["jobs"] = "1-0000000000"
    stranger.run()
    assert "first valley" not in _texts(stranger)
    # The prompt history offers both prompts, newest first; picking one fills the prompt.
    history = again.selectbox(key="g_history")
    assert history.options[:2] == ["second valley", "first valley"]
    history.set_value(("first valley", again.text_area(key="g_negative").value)).run()
    assert again.text_area(key="g_prompt").value == "first valley"
    again.button(key="g-clear").click().run()  # finished jobs leave the page (not the gallery)
    assert again.session_state["g_jobs"] == [] and "txt2img: first valley" not in _texts(again)


def test_lanskap_mini_gets_its_size_and_a_plain_banner_before_it_loads(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With lanskap-mini chosen, the very first page says it is a 128 px demo model and where real
    weights go, and the form already shows 128x128 (not the thesis's 768x512) before any job."""
    from lanskap.ui.common import service

    monkeypatch.setenv("LANSKAP_MODEL", "lanskap-mini")
    monkeypatch.setenv("LANSKAP_UI_PRELOAD", "0")
    service.clear()
    try:
        at = _app()
        assert not service().engine.loaded
        texts = _texts(at)
        assert "Demo model: **lanskap-mini**" in texts and str(isolated_home / "models") in texts
        assert (at.number_input(key="g_width").value, at.number_input(key="g_height").value) == (128, 128)
    finally:
        service().queue.shutdown()
        service.clear()


def test_hires_fix_controls_and_upscale_from_the_gallery_with_before_and_after(app_env: Path) -> None:
    """Text to image with hires fix on; then the viewer sends a gallery picture to Upscale, which shows
    the picture before and after and records the result, linked to its source."""
    from lanskap.gallery import Gallery

    at = _app()
    at.text_area(key="g_prompt").input("a frozen lake")
    _small(at)
    at.button_group(key="g_tiling").set_value("x")
    at.selectbox(key="g_speed").set_value("quality")  # the speed level, with one lever set by hand
    at.number_input(key="g_cache").set_value(2)
    at.toggle(key="g_hr").set_value(True).run()
    at.selectbox(key="g_hr_upscaler").set_value("Lanczos")
    at.slider(key="g_hr_scale").set_value(1.5)
    at.slider(key="g_hr_denoise").set_value(0.4).run()
    assert "From 64×64 to 96×96." in _texts(at)
    at.button(key="go-txt2img").click().run()
    _wait_idle()
    at.run()
    (made,), _ = Gallery(app_env).query()
    assert (made.width, made.height) == (96, 96) and made.params["hires"]["upscaler"] == "Lanczos"
    assert "Hires upscale: 1.5" in made.infotext and "Hires upscaler: Lanczos" in made.infotext
    assert made.params["tiling"] == "x" and "Tiling: x" in made.infotext
    assert "Cache interval: 2" in made.infotext and made.params["token_merging"] == 0  # quality: no merging
    at.number_input(key="g_cache").set_value(None)
    at.toggle(key="g_hr").set_value(False).run()
    at.switch_page("views/gallery.py").run()
    at.button(key=f"open-{made.id}").click().run()
    at.button(key="v-use").click().run()  # "use these settings" restores the hires fix
    assert at.toggle(key="g_hr").value is True and at.slider(key="g_hr_scale").value == pytest.approx(1.5)
    assert at.number_input(key="g_cache").value == 2, "the levers come back with the other settings"

    at.switch_page("views/gallery.py").run()
    at.button(key=f"open-{made.id}").click().run()
    at.button(key="v-send-upscale").click().run()
    assert at.session_state["g_tab"] == "Upscale"
    at.switch_page("views/generate.py").run()  # AppTest reruns the page it was last told to, not the app's
    at.selectbox(key="u-upscaler").set_value("Nearest")
    at.radio(key="u-how").set_value("Scale to").run()
    at.number_input(key="u-w").set_value(200)
    at.number_input(key="u-h").set_value(120).run()
    assert "From 96×96 to 200×120." in _texts(at)  # covered, then cropped to the asked size
    at.radio(key="u-how").set_value("Scale by").run()
    at.slider(key="u-scale").set_value(2.0).run()
    assert "From 96×96 to 192×192." in _texts(at)
    at.button(key="go-upscale").click().run()
    _wait_idle()
    at.run()
    assert "upscaled to 192×192" in _texts(at)
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert "Before · 96×96" in captions and "After · 192×192" in captions
    entries, _ = Gallery(app_env).query(mode="upscale")
    assert len(entries) == 1 and entries[0].params["source_id"] == made.id
    assert (entries[0].width, entries[0].height) == (192, 192)
    assert "Postprocess upscaler: Nearest" in entries[0].infotext and "a frozen lake" in entries[0].infotext


def test_panorama_tab_and_region_editor_restore_and_run_a_recorded_layout(app_env: Path) -> None:
    """A panorama with regions, made elsewhere, comes back through "use these settings": the Panorama
    tab opens on its shape and windows, the editor holds its regions (drawn over the canvas), and
    Generate makes the same layout again. The viewer pans it and shows it repeated 2×2."""
    from PIL import Image

    from lanskap.gallery import Gallery
    from lanskap.generation.panorama import Panorama
    from lanskap.generation.params import GenerationRequest
    from lanskap.generation.regions import Layout, Region, parse
    from lanskap.ui.common import service

    painted = Image.new("L", (192, 64), 0)
    painted.paste(255, (40, 0, 150, 20))
    layout = Layout((parse("0,0,0.5,1:a castle on a cliff;fog"), parse("0.5,0,1,1,1.5:a waterfall"),
                     Region("storm clouds", mask=painted)), base=0.3)  # fmt: skip
    first = GenerationRequest("a wide valley", seed=3, steps=2, width=192, height=64, regions=layout,
                              panorama=Panorama(window=64, stride=32), tiling="x")  # fmt: skip
    job = service().submit_generation(first, source="cli")
    assert job.wait(120) and job.state == "done", job.error
    (made,), _ = Gallery(app_env).query()
    at = _app("gallery")
    at.button(key=f"open-{made.id}").click().run()
    at.button_group(key=f"v-pano-{made.id}-how").set_value("Pan").run()  # a wide picture can be panned
    assert any("overflow-x:auto" in h.proto.body for h in at.get("html"))
    at.button_group(key=f"v-pano-{made.id}-how").set_value("Repeat 2×2").run()
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert any("Repeated 2×2" in c for c in captions)
    at.button(key="v-use").click().run()
    at.switch_page("views/generate.py").run()
    assert at.session_state["g_tab"] == "Panorama" and at.button_group(key="g_pano_preset").value == "3:1"
    assert at.toggle(key="g_pano_wrap").value is True and at.number_input(key="g_pano_window").value == 64
    assert at.toggle(key="g_regions_on").value is True and at.slider(key="g_region_base").value == 0.3
    assert "Makes 192×64" in _texts(at) and "Painted 3. storm clouds" in _texts(at)
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert "The regions on the 192×64 canvas" in captions
    at.button(key="go-panorama").click().run()
    _wait_idle()
    newest = Gallery(app_env).query()[0][0]
    assert newest.id != made.id and (newest.width, newest.height) == (192, 64)
    assert newest.params["regions"] == made.params["regions"] and newest.params["region_base"] == 0.3
    assert newest.params["panorama"] == made.params["panorama"] and newest.params["tiling"] == "x"
    at.button_group(key="g_pano_preset").set_value("360°").run()
    assert "Makes 128×64 · a 360° sky" in _texts(at)
    at.session_state["g_sent"] = {"tab": "Outpaint", "id": made.id}  # as the viewer's "Send to outpaint" does
    at.session_state["g_tab"] = "Outpaint"
    at.run()
    at.number_input(key="o-left").set_value(0)
    at.number_input(key="o-right").set_value(64)
    at.toggle(key="o-pano").set_value(True).run()
    at.button(key="go-outpaint").click().run()  # a picture extended sideways, in windows
    _wait_idle()
    wider = Gallery(app_env).query()[0][0]
    assert wider.mode == "outpaint" and (wider.width, wider.height) == (256, 64)
    assert wider.params["panorama"] is not None and "Panorama window:" in wider.infotext


def test_controlnet_units_preview_run_and_come_back_with_use_these_settings(app_env: Path, models_dir: Path) -> None:
    """A unit on the image-to-image tab takes the tab's picture, shows its canny map, steers the job, and
    "use these settings" restores it; the Depth tab says when the model can't run depth2img."""
    import shutil

    from lanskap.gallery import Gallery
    from lanskap.models.tiny import make_tiny

    cn = models_dir / "ui-controlnet"
    if not cn.exists():
        make_tiny(cn, "controlnet")
    shutil.copytree(cn, app_env / "controlnet" / "control_sd21_canny")
    (first,) = _add_images(app_env, ["a square keep"])
    at = _app()
    at.session_state["g_sent"] = {"tab": "Image to image", "id": first}  # as the viewer's "send to" does
    at.session_state["g_tab"] = "Image to image"
    at.run()
    at.text_area(key="g_prompt").input("a fortress")
    _small(at)
    at.toggle(key="cn_show").set_value(True).run()
    at.toggle(key="cn0_on").set_value(True).run()
    at.radio(key="cn0_src").set_value("The tab's picture").run()
    assert at.selectbox(key="cn0_model").options[1].startswith("control_sd21_canny [")
    at.slider(key="cn0_weight").set_value(0.8)
    at.checkbox(key="cn0_pp").check()
    at.radio(key="cn0_mode").set_value("ControlNet is more important").run()
    at.button(key="cn0_preview").click().run()
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert "Unit 0: canny map" in captions
    assert at.get("download_button")[0].proto.label.endswith("Save the map")
    at.button(key="go-img2img").click().run()
    _wait_idle()
    newest = Gallery(app_env).query()[0][0]
    assert newest.id != first and newest.mode == "img2img"
    (unit,) = newest.params["control"]
    assert unit["pixel_perfect"] is True
    assert unit["module"] == "canny" and unit["weight"] == 0.8 and unit["model"].startswith("control_sd21_canny [")
    assert 'ControlNet 0: "Module: canny' in newest.infotext and "ControlNet is more important" in newest.infotext
    at.toggle(key="cn0_on").set_value(False).run()
    at.switch_page("views/gallery.py").run()
    at.button(key=f"open-{newest.id}").click().run()
    at.button(key="v-use").click().run()
    assert at.session_state["cn_show"] is True and at.session_state["cn0_on"] is True
    assert at.session_state["cn0_weight"] == 0.8 and at.session_state["cn0_pp"] is True
    assert at.session_state["cn0_mode"] == "ControlNet is more important"
    at.switch_page("views/generate.py").run()
    at.session_state["g_tab"] = "Depth"
    at.run()
    assert "is not a depth model" in _texts(at)
    assert at.button(key="go-depth").disabled


def test_the_embedding_and_hypernetwork_pickers_insert_into_the_prompt(app_env: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from test_hypernetworks import _a1111_file

    (app_env / "embeddings").mkdir()
    save_file({"emb_params": torch.randn(2, 32)}, str(app_env / "embeddings" / "verdigris.safetensors"))
    save_file({"emb_params": torch.randn(1, 768)}, str(app_env / "embeddings" / "sd1thing.safetensors"))
    _a1111_file(app_env / "hypernetworks" / "etching.pt", [32], zero_out=False)
    at = _app()
    assert at.selectbox(key="g_embedding").options == ["verdigris"]  # the 768-wide one doesn't fit this model
    at.text_area(key="g_prompt").set_value("a castle").run()
    at.button(key="g_embedding_add").click().run()
    at.button(key="g_hypernet_add").click().run()
    assert at.text_area(key="g_prompt").value == "a castle, verdigris, <hypernet:etching:1>"


def test_training_page_trains_an_embedding_and_offers_it_in_generate(app_env: Path, tmp_path: Path) -> None:
    from lanskap.ui.common import service
    from test_training import write_imagefolder

    data = write_imagefolder(tmp_path / "set", n=2)
    at = _app("training")
    at.selectbox(key="tr-method").set_value("textual-inversion").run()
    assert at.number_input(key="tr-rank").disabled
    at.text_input(key="tr-path").input(str(data))
    at.text_input(key="tr-name").input("ap-style")
    at.text_input(key="tr-token").input("<ap-style>")
    for key, value in (("tr-steps", 3), ("tr-res", 64), ("tr-every", 3), ("tr-vsteps", 1), ("tr-vectors", 2)):
        at.number_input(key=key).set_value(value)
    at.button(key="tr-go").click().run()
    q = service().queue
    _wait(lambda: q.current is None and not q.pending(), timeout=300, what="the run")
    at.run()
    done = next(j for j in q.recent() if j.kind == "train")
    assert done.state == "done", done.error
    assert "Embedding ready: write ap-style" in _texts(at)
    assert (app_env / "embeddings" / "ap-style.safetensors").is_file()
    assert "ap-style" in _app().selectbox(key="g_embedding").options


def test_an_sdxl_base_shows_its_family_size_second_prompt_and_refiner(
    tiny_sdxl: Path, tiny_sdxl_refiner: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an SDXL base the form takes SDXL's size, offers the second prompt and the refiner, records
    both, and "use these settings" restores them."""
    import shutil

    from lanskap.gallery import Gallery
    from lanskap.ui.common import service

    shutil.copytree(tiny_sdxl_refiner, isolated_home / "models" / "tiny-xl-refiner")
    monkeypatch.setenv("LANSKAP_MODEL", str(tiny_sdxl))
    monkeypatch.setenv("LANSKAP_UI_PRELOAD", "0")
    service.clear()
    try:
        at = _app()
        assert (at.number_input(key="g_width").value, at.number_input(key="g_height").value) == (1216, 832)
        assert "SDXL · 1024 px" in _texts(at)
        at.text_area(key="g_prompt").input("a castle on a hill")
        at.text_area(key="g_prompt_2").input("an oil painting, warm light")
        assert "tiny-xl-refiner" in at.selectbox(key="g_refiner").options
        at.selectbox(key="g_refiner").set_value("tiny-xl-refiner").run()
        at.slider(key="g_refiner_switch").set_value(0.5)
        _small(at)
        at.button(key="go-txt2img").click().run()
        _wait_idle()
        at.run()
        (entry,), _ = Gallery(isolated_home).query()
        assert 'Prompt 2: "an oil painting, warm light"' in entry.infotext
        assert "Refiner: tiny-xl-refiner [" in entry.infotext and "Refiner switch at: 0.5" in entry.infotext
        at.text_area(key="g_prompt_2").input("")
        at.selectbox(key="g_refiner").set_value("(none)").run()
        at.switch_page("views/gallery.py").run()
        at.button(key=f"open-{entry.id}").click().run()
        at.button(key="v-use").click().run()
        assert at.text_area(key="g_prompt_2").value == "an oil painting, warm light"
        assert at.selectbox(key="g_refiner").value == "tiny-xl-refiner"
        assert at.slider(key="g_refiner_switch").value == pytest.approx(0.5)
    finally:
        service().queue.shutdown()
        service.clear()


def test_the_gallery_page_shows_a_postgresql_gallery(
    app_env: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LANSKAP_GALLERY_URL reaches the web app as it reaches the CLI and the API (issue #38)."""
    from lanskap.gallery import Gallery
    from lanskap.ui.common import service
    from test_gallery import png, record

    monkeypatch.setenv("LANSKAP_GALLERY_URL", postgres_url)
    service.clear()
    shared = Gallery(app_env, url=postgres_url)
    for seed, prompt in ((1, "a castle made on another machine"), (2, "a lake made on another machine")):
        shared.add(png(seed), app_env / "outputs", "png", record(seed, prompt))
    at = _app("gallery")
    assert "2 image(s), newest first" in _texts(at)
    host_db = postgres_url.split("@")[-1]
    assert f"gallery in PostgreSQL: {host_db}" in _texts(at)  # the sidebar says which database
    at.text_input(key="gl_search").input("lake").run()
    assert "1 image(s)" in _texts(at)
    assert not (app_env / "gallery.sqlite3").exists(), "nothing went to the home's SQLite file"
