"""Hires fix, Extras and SD upscale through A1111's request bodies, on a real ``lanskap serve`` on
127.0.0.1, with the ``webuiapi`` client where it has a call for them and plain HTTP otherwise."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image
from safetensors.torch import save_file

from test_api import _start
from test_upscale import ultrasharp_state


@pytest.fixture
def served(tiny_sd: Path, tiny_lora: Path, isolated_home: Path):  # type: ignore[no-untyped-def]
    (isolated_home / "upscalers").mkdir(parents=True)
    save_file(ultrasharp_state(), str(isolated_home / "upscalers" / "4x-UltraSharp.safetensors"))
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    port = int(s.url.rsplit(":", 1)[1])
    yield s, webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=3)
    s.stop()


def _picture(size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.fromarray((np.random.default_rng(4).random((size[1], size[0], 3)) * 255).astype(np.uint8))


def test_txt2img_hires_fix_with_a1111_fields(served) -> None:  # type: ignore[no-untyped-def]
    _, api = served
    r = api.txt2img(
        prompt="a river valley",
        width=64,
        height=64,
        seed=8,
        enable_hr=True,
        hr_scale=2,
        hr_upscaler=webuiapi.HiResUpscaler.Latent,
        hr_second_pass_steps=2,
        denoising_strength=0.5,
    )
    assert r.image.size == (128, 128)
    text = r.info["infotexts"][0]
    assert "Size: 64x64" in text and "Hires upscale: 2" in text and "Hires upscaler: Latent" in text
    assert "Hires steps: 2" in text and "Denoising strength: 0.5" in text
    assert r.info["extra_generation_params"]["Hires upscaler"] == "Latent"
    r2 = api.txt2img(
        prompt="a river valley",
        width=64,
        height=64,
        seed=8,
        enable_hr=True,
        hr_resize_x=96,
        hr_resize_y=80,
        hr_upscaler="4x-UltraSharp",
        denoising_strength=0.0,
    )
    assert r2.image.size == (96, 80) and "Hires resize: 96x80" in r2.info["infotexts"][0]
    r3 = api.txt2img(prompt="a stone wall texture", width=64, height=64, seed=8, tiling=True)  # A1111's tiling
    assert "Tiling: True" in r3.info["infotexts"][0] and r3.info["extra_generation_params"]["Tiling"] == "True"


def test_extras_single_and_batch(served, isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    server, api = served
    r = api.extra_single_image(_picture(), upscaler_1="4x-UltraSharp", upscaling_resize=2)
    assert r.image.size == (128, 96)
    assert "Postprocess upscale by: 2" in r.info and "4x-UltraSharp" in r.info
    r = api.extra_single_image(
        _picture(),
        resize_mode=1,
        upscaling_resize_w=100,
        upscaling_resize_h=100,
        upscaler_1="Lanczos",
        upscaler_2="Nearest",
        extras_upscaler_2_visibility=0.5,
    )
    assert r.image.size == (100, 100)
    r = api.extra_batch_images(
        [_picture(), _picture((40, 40))], upscaler_1="Nearest", upscaling_resize=3, codeformer_visibility=0.5
    )
    assert [im.size for im in r.images] == [(192, 144), (120, 120)]
    assert "face restoration" in r.info
    # A1111's own test_extras.py bodies: Lanczos by 2, and a bare image ("None" leaves its size).
    png = base64.b64encode(_png_bytes()).decode()
    body = {
        "resize_mode": 0,
        "upscaling_resize": 2,
        "upscaling_resize_w": 128,
        "upscaling_resize_h": 128,
        "upscaling_crop": True,
        "upscaler_1": "Lanczos",
        "upscaler_2": "None",
        "image": png,
    }
    r = requests.post(f"{server.url}/sdapi/v1/extra-single-image", json=body, timeout=60)
    assert r.status_code == 200 and Image.open(io.BytesIO(base64.b64decode(r.json()["image"]))).size == (128, 96)
    r = requests.post(f"{server.url}/sdapi/v1/extra-single-image", json={"image": png, "model": "clip"}, timeout=60)
    assert r.status_code == 200 and Image.open(io.BytesIO(base64.b64decode(r.json()["image"]))).size == (64, 48)
    items = requests.get(f"{server.url}/api/v1/gallery", params={"mode": "upscale"}).json()["items"]
    assert len(items) == 6 and all(i["params"]["upscale"]["upscaler"] for i in items)


def test_listings_and_refusals(served) -> None:  # type: ignore[no-untyped-def]
    server, api = served
    names = [u["name"] for u in api.get_upscalers()]
    assert names == ["None", "Lanczos", "Nearest", "4x-UltraSharp"]
    assert [m["name"] for m in api.get_latent_upscale_modes()][:2] == ["Latent", "Latent (antialiased)"]
    assert requests.get(f"{server.url}/sdapi/v1/scripts").json()["img2img"] == ["sd upscale", "controlnet"]
    u = server.url
    png = base64.b64encode(_png_bytes()).decode()
    bad = [
        ("/sdapi/v1/extra-single-image", {"image": png, "upscaler_1": "R-ESRGAN 4x+"}, "unknown upscaler"),
        ("/sdapi/v1/extra-single-image", {"image": png, "upscaling_resize": 9}, ""),
        (
            "/sdapi/v1/extra-single-image",
            {"image": png, "resize_mode": 1, "upscaling_resize_w": 8000, "upscaling_resize_h": 8000},
            "largest side",
        ),
        ("/sdapi/v1/extra-single-image", {"image": "not base64!"}, "base64"),
        ("/sdapi/v1/extra-batch-images", {"imageList": []}, "empty"),
        (
            "/sdapi/v1/txt2img",
            {"prompt": "x", "width": 1024, "height": 1024, "enable_hr": True, "hr_scale": 4},
            "at most",
        ),
        ("/sdapi/v1/txt2img", {"prompt": "x", "enable_hr": True, "hr_upscaler": "Bogus"}, "unknown upscaler"),
        ("/sdapi/v1/img2img", {"init_images": [png], "script_name": "Loopback"}, "not available"),
        (
            "/sdapi/v1/img2img",
            {"init_images": [png], "script_name": "SD upscale", "script_args": ["", 16, 99, 2]},
            "out of range",
        ),
    ]
    for path, body, needle in bad:
        r = requests.post(f"{u}{path}", json=body, timeout=60)
        assert 400 <= r.status_code < 500, (path, body, r.text)
        assert needle in r.text, (path, r.text)
    assert requests.get(f"{u}/api/v1/gallery").json()["total"] == 0  # nothing was written


def _png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    _picture(size).save(buf, format="PNG")
    return buf.getvalue()


def test_img2img_sd_upscale_script(served) -> None:  # type: ignore[no-untyped-def]
    _, api = served
    body = {"prompt": "a fortress", "width": 64, "height": 64, "seed": 21, "denoising_strength": 0.5}
    r = api.img2img(images=[_picture()], script_name="SD upscale", script_args=["", 16, "Lanczos", 2.0], **body)
    assert r.image.size == (128, 96)
    info = r.info
    assert info["seed"] == 21 and "SD upscale overlap: 16" in info["infotexts"][0]
    assert "SD upscale upscaler: Lanczos" in info["infotexts"][0] and "Size: 64x64" in info["infotexts"][0]
    assert info["gallery_ids"]
    by_index = api.img2img(images=[_picture()], script_name="SD upscale", script_args=["", 16, 1, 2.0], **body)
    assert np.array_equal(np.asarray(by_index.image), np.asarray(r.image))  # index 1 is Lanczos, as in A1111's list
