"""A1111's API route by route, with A1111's request bodies, over real HTTP on 127.0.0.1.

Options (the whole key set; the honoured keys take effect), override_settings, model
switching, prompt styles, and the listing and refresh routes.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
import requests
from PIL import Image

from test_api import _start

TXT = {"prompt": "a castle", "steps": 2, "width": 64, "height": 64, "seed": 21}


@pytest.fixture
def server(tiny_sd: Path, tiny_lora: Path, isolated_home: Path):  # type: ignore[no-untyped-def]
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    yield s
    s.stop()


def _txt2img(url: str, **extra: object) -> dict:
    r = requests.post(url + "/sdapi/v1/txt2img", json={**TXT, **extra}, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    out["info"] = json.loads(out["info"])
    return out


def test_options_have_a1111s_keys_and_the_honoured_ones_take_effect(server, isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    u = server.url
    opts = requests.get(u + "/sdapi/v1/options", timeout=10).json()
    assert len(opts) > 250, "A1111's whole option set"
    assert opts["send_seed"] is True and opts["CLIP_stop_at_last_layers"] == 1 and opts["eta_noise_seed_delta"] == 0
    assert opts["samples_format"] == "png" and opts["jpeg_quality"] == 80
    assert opts["sd_model_checkpoint"].startswith("tiny-sd")
    # clip skip and ENSD from the options reach the image
    r = requests.post(u + "/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2, "jpeg_quality": 91}, timeout=10)
    assert r.status_code == 200 and r.json() is None  # A1111 answers null
    assert "jpeg_quality" in r.headers["x-lanskap-warnings"] and "CLIP" not in r.headers["x-lanskap-warnings"]
    after = requests.get(u + "/sdapi/v1/options", timeout=10).json()
    assert after["CLIP_stop_at_last_layers"] == 2 and after["jpeg_quality"] == 91
    out = _txt2img(u)
    assert "Clip skip: 2" in out["info"]["infotexts"][0] and out["info"]["clip_skip"] == 2
    # bad values of honoured keys: a clear 422, nothing changes
    for bad in ({"CLIP_stop_at_last_layers": 0}, {"eta_noise_seed_delta": "x"}, {"samples_format": "bmp"}):
        r = requests.post(u + "/sdapi/v1/options", json=bad, timeout=10)
        assert r.status_code == 422, (bad, r.text)
    assert requests.get(u + "/sdapi/v1/options", timeout=10).json()["CLIP_stop_at_last_layers"] == 2
    # saved like A1111's config.json, and read back by the next server
    saved = json.loads((isolated_home / "a1111-options.json").read_text())
    assert saved["CLIP_stop_at_last_layers"] == 2 and saved["jpeg_quality"] == 91


def test_override_settings_apply_per_request_and_restore(server, isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    u = server.url
    override = {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337, "samples_format": "jpg", "tiling": True,
                "token_merging_ratio": 0.4}  # fmt: skip
    out = _txt2img(u, sampler_name="Euler a", override_settings=override, cache_interval=2)
    text = out["info"]["infotexts"][0]
    assert "Clip skip: 2" in text and "ENSD: 31337" in text
    assert "Token merging ratio: 0.4" in text and "Cache interval: 2" in text  # A1111's option, lanskap's field
    assert out["info"]["extra_generation_params"]["Token merging ratio"] == "0.4"
    assert any("'tiling'" in w and "no effect" in w for w in out["info"]["warnings"])
    from lanskap.gallery import Gallery

    (entry,), _ = Gallery(isolated_home).query()
    assert entry.path.suffix == ".jpg"
    opts = requests.get(u + "/sdapi/v1/options", timeout=10).json()
    assert opts["CLIP_stop_at_last_layers"] == 1 and opts["eta_noise_seed_delta"] == 0, "restored afterwards"
    _txt2img(u, override_settings={"CLIP_stop_at_last_layers": 2}, override_settings_restore_afterwards=False)
    assert requests.get(u + "/sdapi/v1/options", timeout=10).json()["CLIP_stop_at_last_layers"] == 2
    # deeper than the tiny model's 2 text-encoder layers: found while running, still the caller's error
    r = requests.post(u + "/sdapi/v1/txt2img", json={**TXT, "override_settings": {"CLIP_stop_at_last_layers": 3}})
    assert r.status_code == 422 and "text-encoder layers" in r.json()["detail"]
    r = requests.post(u + "/sdapi/v1/txt2img", json={**TXT, "override_settings": {"CLIP_stop_at_last_layers": 99}})
    assert r.status_code == 422 and "CLIP_stop_at_last_layers" in r.json()["detail"]
    r = requests.post(u + "/sdapi/v1/txt2img", json={**TXT, "override_settings": {"token_merging_ratio": 0.9}})
    assert r.status_code == 422 and "token_merging_ratio must be between 0 and 0.75" in r.json()["detail"]
    r = requests.post(u + "/sdapi/v1/txt2img", json={**TXT, "speed": "warp"})
    assert r.status_code == 422
    quality = _txt2img(u, speed="quality")["info"]["infotexts"][0]
    assert "Cache interval" not in quality and "Token merging" not in quality


def test_sd_model_checkpoint_switches_among_installed_models(
    tiny_sd: Path, tiny_lora: Path, isolated_home: Path
) -> None:
    shutil.copytree(tiny_sd, isolated_home / "models" / "tiny-two")
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    u = s.url
    try:
        models = requests.get(u + "/sdapi/v1/sd-models", timeout=10).json()
        assert [m["model_name"] for m in models] == ["tiny-sd", "lanskap-mini", "tiny-two"]
        assert all("/" not in m["filename"] for m in models), "names, never server paths"
        assert "Model: tiny-sd" in _txt2img(u)["info"]["infotexts"][0]
        r = requests.post(u + "/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-two"}, timeout=10)
        assert r.status_code == 200
        assert "Model: tiny-two" in _txt2img(u)["info"]["infotexts"][0]
        assert requests.get(u + "/sdapi/v1/options", timeout=10).json()["sd_model_checkpoint"].startswith("tiny-two [")
        # per request, then back
        out = _txt2img(u, override_settings={"sd_model_checkpoint": "tiny-sd"})
        assert "Model: tiny-sd" in out["info"]["infotexts"][0]
        assert "Model: tiny-two" in _txt2img(u)["info"]["infotexts"][0]
        r = requests.post(u + "/sdapi/v1/options", json={"sd_model_checkpoint": "../../etc"}, timeout=10)
        assert r.status_code == 422 and "not installed" in r.json()["detail"]
        assert requests.post(u + "/sdapi/v1/refresh-checkpoints", timeout=10).status_code == 200
        assert requests.post(u + "/sdapi/v1/unload-checkpoint", timeout=10).status_code == 200
        assert requests.post(u + "/sdapi/v1/reload-checkpoint", timeout=10).status_code == 200
    finally:
        s.stop()


def test_prompt_styles(server, isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    (isolated_home / "styles.csv").write_text(
        'name,prompt,negative_prompt\n"Painterly","oil painting of {prompt}, brush strokes","photo"\n'
        '"Misty","misty, soft light",""\n',
        encoding="utf-8",
    )
    u = server.url
    styles = requests.get(u + "/sdapi/v1/prompt-styles", timeout=10).json()
    assert styles == [
        {"name": "Painterly", "prompt": "oil painting of {prompt}, brush strokes", "negative_prompt": "photo"},
        {"name": "Misty", "prompt": "misty, soft light", "negative_prompt": ""},
    ]
    out = _txt2img(u, negative_prompt="blurry", styles=["Painterly", "Misty", "Nope"])
    # as A1111's Processed: "prompt" is the request's, "all_prompts" what the images used
    assert out["info"]["prompt"] == "a castle"
    assert out["info"]["all_prompts"] == ["oil painting of a castle, brush strokes, misty, soft light"]
    assert out["info"]["all_negative_prompts"] == ["blurry, photo"]
    assert out["info"]["infotexts"][0].startswith("oil painting of a castle, brush strokes, misty, soft light\n")
    assert any("'Nope'" in w for w in out["info"]["warnings"]), "an unknown style is skipped, as A1111 does"
    assert out["info"]["styles"] == ["Painterly", "Misty", "Nope"]
    # the image sent back is the very file the gallery keeps (encoded once, not again for the answer)
    (gid,) = out["info"]["gallery_ids"]
    kept = requests.get(u + f"/api/v1/gallery/{gid}/image", timeout=10).content
    assert base64.b64decode(out["images"][0]) == kept


def test_listing_and_refresh_routes_answer_with_a1111_shapes(server, isolated_home: Path, tiny_lora: Path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file, save_file

    save_file(
        load_file(str(tiny_lora)),
        str(isolated_home / "loras" / "tagged.safetensors"),
        metadata={"ss_output_name": "Tagged Style", "ss_tag_frequency": json.dumps({"set": {"castle": 3}})},
    )
    u = server.url
    for name in ("hypernetworks", "face-restorers", "realesrgan-models", "sd-vae", "sd-modules", "script-info",
                 "extensions"):  # fmt: skip
        r = requests.get(u + f"/sdapi/v1/{name}", timeout=10)
        assert r.status_code == 200 and r.json() == [], name
    assert requests.get(u + "/sdapi/v1/embeddings", timeout=10).json() == {"loaded": {}, "skipped": {}}
    assert requests.get(u + "/sdapi/v1/scripts", timeout=10).json() == {
        "txt2img": ["controlnet"],
        "img2img": ["sd upscale", "controlnet"],
    }
    ups = requests.get(u + "/sdapi/v1/upscalers", timeout=10).json()
    assert [x["name"] for x in ups] == ["None", "Lanczos", "Nearest"] and set(ups[0]) >= {"name", "model_path", "scale"}
    assert len(requests.get(u + "/sdapi/v1/latent-upscale-modes", timeout=10).json()) == 6
    flags = requests.get(u + "/sdapi/v1/cmd-flags", timeout=10).json()
    assert flags["api"] is True and flags["api_auth"] is None
    mem = requests.get(u + "/sdapi/v1/memory", timeout=10).json()
    assert mem["ram"]["total"] > 0 and ("error" in mem["cuda"] or "system" in mem["cuda"])
    loras = {lo["name"]: lo for lo in requests.get(u + "/sdapi/v1/loras", timeout=10).json()}
    assert loras["tagged"]["alias"] == "Tagged Style"
    assert loras["tagged"]["metadata"]["ss_tag_frequency"] == {"set": {"castle": 3}}, "JSON values decoded"
    for name in ("refresh-checkpoints", "refresh-loras", "refresh-vae", "refresh-embeddings"):
        r = requests.post(u + f"/sdapi/v1/{name}", timeout=10)
        assert r.status_code == 200 and r.json() is None, name


def test_cli_style_and_unknown_style(
    tiny_sd: Path, tmp_path: Path, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import assert_one_line_error, main_cli

    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "styles.csv").write_text("name,prompt,negative_prompt\nDusk,{prompt} at dusk,noon\n")
    args = ("--model", str(tiny_sd), "-W", "64", "-H", "64", "--steps", "1", "--no-watermark", "-q")
    out = tmp_path / "out"
    proc = main_cli(capsys, "generate", "a lake", "--style", "Dusk", "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    (png,) = out.glob("*.png")
    with Image.open(png) as im:
        text = im.info["parameters"]
    assert text.startswith("a lake at dusk\nNegative prompt: noon\n")
    assert_one_line_error(
        main_cli(capsys, "generate", "a lake", "--style", "Dawn", *args), "unknown style 'Dawn'", "Dusk"
    )


def _while_generating(url: str, body: dict, action: str, at_step: int = 2) -> requests.Response:
    """Post ``body``, call ``action`` (interrupt or skip) once sampling reaches ``at_step``, return the answer."""
    import threading
    import time

    box: dict = {}
    t = threading.Thread(target=lambda: box.update(r=requests.post(url + "/sdapi/v1/txt2img", json=body, timeout=300)))
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        p = requests.get(url + "/sdapi/v1/progress", timeout=10).json()
        if p["state"]["sampling_step"] >= at_step:
            break
        time.sleep(0.02)
    requests.post(url + f"/sdapi/v1/{action}", timeout=10)
    t.join(120)
    return box["r"]


def test_skip_ends_the_current_image_and_goes_on(server, isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    """Skip stops the first of two images where it stands; the second is made in full and saved."""
    body = {**TXT, "steps": 150, "n_iter": 2, "batch_size": 1}
    r = _while_generating(server.url, body, "skip")
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert len(r.json()["images"]) == 2 and info["skipped_images"] == [0] and not info["interrupted"]
    from lanskap.gallery import Gallery

    (entry,), _ = Gallery(isolated_home).query()
    assert entry.seed == 22, "the second image (seed + 1) ran every step and was saved; the skipped one was not"


def _b64_png(text: str | None = None, size: tuple[int, int] = (8, 8), fmt: str = "PNG") -> str:
    import base64
    import io

    from PIL import PngImagePlugin

    buf = io.BytesIO()
    im = Image.new("RGB", size, (10, 20, 30))
    if fmt == "PNG":
        meta = PngImagePlugin.PngInfo()
        if text is not None:
            meta.add_text("parameters", text)
        meta.add_text("Software", "some tool")
        im.save(buf, format="PNG", pnginfo=meta)
    else:
        im.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


A1111_TEXT = (
    "a castle, (misty:1.2)\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, "
    'CFG scale: 7, Seed: 1, Size: 512x768, Model hash: abc123, Model: v2-1_768, Lora hashes: "mist: 0123", '
    "Version: v1.10.1"
)


def test_png_info_answers_as_a1111(server) -> None:  # type: ignore[no-untyped-def]
    u = server.url
    r = requests.post(u + "/sdapi/v1/png-info", json={"image": _b64_png(A1111_TEXT)}, timeout=10)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["info"] == A1111_TEXT and out["items"] == {"Software": "some tool"}
    params = out["parameters"]
    assert params["Prompt"] == "a castle, (misty:1.2)" and params["Negative prompt"] == "blurry"
    assert params["Size-1"] == "512" and params["Size-2"] == "768" and "Size" not in params
    assert params["Steps"] == "20" and params["Lora hashes"] == "mist: 0123"
    assert params["Clip skip"] == "1" and params["RNG"] == "GPU", "A1111's defaults for what is left out"
    # a lanskap JPEG keeps its infotext in EXIF, as A1111 writes it
    out = _txt2img(u, override_settings={"samples_format": "jpg"})
    from lanskap.gallery import Gallery

    (entry,), _ = Gallery(server.service.settings.home).query()
    import base64

    jpg = base64.b64encode(entry.path.read_bytes()).decode()
    r = requests.post(u + "/sdapi/v1/png-info", json={"image": jpg}, timeout=10)
    assert r.json()["info"] == entry.infotext and r.json()["parameters"]["Seed"] == "21"
    # no parameters: A1111's empty answer; not a picture: a plain message
    assert requests.post(u + "/sdapi/v1/png-info", json={"image": _b64_png()}, timeout=10).json()["info"] == ""
    r = requests.post(u + "/sdapi/v1/png-info", json={"image": "aGVsbG8gd29ybGQ="}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"] == "image is not a picture lanskap can read (PNG, JPEG or WebP)"


def test_img2img_token_merging_ratio_follows_a1111s_order(server) -> None:  # type: ignore[no-untyped-def]
    """A1111's get_token_merging_ratio: a request's override wins, then the img2img option, then txt2img's."""
    u = server.url
    picture = _b64_png(size=(64, 64))
    body = {**TXT, "init_images": [picture], "denoising_strength": 0.5}
    requests.post(u + "/sdapi/v1/options", json={"token_merging_ratio_img2img": 0.2}, timeout=10)

    def ratio(**extra: object) -> str:
        r = requests.post(u + "/sdapi/v1/img2img", json={**body, **extra}, timeout=120)
        assert r.status_code == 200, r.text
        return json.loads(r.json()["info"])["infotexts"][0]

    assert "Token merging ratio: 0.2" in ratio()
    assert "Token merging ratio: 0.4" in ratio(override_settings={"token_merging_ratio": 0.4})
