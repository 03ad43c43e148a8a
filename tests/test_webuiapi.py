"""The ``webuiapi`` client from the package index, unchanged, against a real ``lanskap serve`` on 127.0.0.1.

It is what A1111 scripts and bots use: if it works here, they work with lanskap.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import pytest
import webuiapi
from PIL import Image

from test_api import _start


@pytest.fixture
def api(tiny_sd: Path, tiny_lora: Path, isolated_home: Path):  # type: ignore[no-untyped-def]
    (isolated_home / "styles.csv").parent.mkdir(parents=True, exist_ok=True)
    (isolated_home / "styles.csv").write_text("name,prompt,negative_prompt\nDusk,{prompt} at dusk,noon\n")
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    port = int(s.url.rsplit(":", 1)[1])
    yield webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)
    s.stop()


SMALL = {"width": 64, "height": 64, "seed": 5, "cfg_scale": 7}


def test_txt2img_img2img_inpaint_and_png_info(api) -> None:  # type: ignore[no-untyped-def]
    # A1111's own API test prompt: prompt editing, alternation, and a LoRA the server has.
    r = api.txt2img(prompt="[to:1], [from::2], [from:to:0.3], [alt|alt1] <lora:mist-style:0.5>", **SMALL)
    assert isinstance(r.image, Image.Image) and r.image.size == (64, 64)
    assert r.info["seed"] == 5 and r.info["sampler_name"] == "Euler a" and r.info["loras"][0]["name"] == "mist-style"
    r2 = api.img2img(images=[r.image], prompt="a castle", denoising_strength=0.5, **SMALL)
    assert r2.image.size == (64, 64) and "Denoising strength: 0.5" in r2.info["infotexts"][0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    r3 = api.img2img(images=[r.image], mask_image=mask, prompt="a tower", inpainting_fill=1, **SMALL)
    assert "Mask blur" in r3.info["infotexts"][0]
    info = api.png_info(r.image)
    assert info.info.startswith("[to:1], [from::2]") and info.parameters["Seed"] == "5"


def test_an_unknown_lora_is_left_out_with_a_note(api) -> None:  # type: ignore[no-untyped-def]
    r = api.txt2img(prompt="a lake <lora:no-such-style:0.8>", **SMALL)
    assert isinstance(r.image, Image.Image)
    assert any("no-such-style" in w and "without it" in w for w in r.info["warnings"])
    assert r.info["loras"] == []


def test_options_styles_and_listings(api) -> None:  # type: ignore[no-untyped-def]
    api.set_options({"CLIP_stop_at_last_layers": 2, "send_seed": False})
    opts = api.get_options()
    assert opts["CLIP_stop_at_last_layers"] == 2 and opts["send_seed"] is False
    r = api.txt2img(prompt="a lake", styles=["Dusk"], **SMALL)
    assert r.info["infotexts"][0].startswith("a lake at dusk\nNegative prompt: noon\n")
    assert "Clip skip: 2" in r.info["infotexts"][0]
    assert [s["name"] for s in api.get_prompt_styles()] == ["Dusk"]
    assert any(name.startswith("tiny-sd") for name in api.util_get_model_names())
    assert "DPM++ 3M SDE" in [s["name"] for s in api.get_samplers()]
    assert "Exponential" in [s["label"] for s in api.get_schedulers()]
    assert api.get_face_restorers() == [] and api.get_hypernetworks() == []
    assert [lo["name"] for lo in api.get_loras()] == ["mist-style"]


def _during(api, action: str, **kw) -> object:  # type: ignore[no-untyped-def]
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(r=api.txt2img(prompt="hills", **SMALL, **kw)))
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline and (progress := api.get_progress())["state"]["sampling_step"] < 2:
        time.sleep(0.02)
    getattr(api, action)()
    t.join(120)
    box["r"].progress = progress  # type: ignore[attr-defined]
    return box["r"]


def test_interrupt_and_skip(api) -> None:  # type: ignore[no-untyped-def]
    r = _during(api, "interrupt", steps=150)
    assert isinstance(r.image, Image.Image), "interrupt hands back the image as it stands"  # type: ignore[attr-defined]
    assert r.info["interrupted"]  # type: ignore[attr-defined]
    # the live preview while it ran: A1111's "Approx cheap", one pixel per latent (1/8 of the image)
    preview = Image.open(io.BytesIO(base64.b64decode(r.progress["current_image"])))  # type: ignore[attr-defined]
    assert isinstance(preview, Image.Image) and preview.size == (SMALL["width"] // 8, SMALL["height"] // 8)
    assert len(set(preview.getdata())) > 1, "the preview shows the latents, not a flat colour"
    r = _during(api, "skip", steps=150, n_iter=2)
    assert len(r.images) == 2 and r.info["skipped_images"] == [0]  # type: ignore[attr-defined]
