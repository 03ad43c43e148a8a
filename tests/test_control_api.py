"""The sd-webui-controlnet extension's dialect on a real server on 127.0.0.1, through the ``webuiapi``
client unchanged: units in alwayson_scripts, the /controlnet routes, and depth2img over img2img."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image, ImageDraw

from test_api import _start

SMALL = {"width": 64, "height": 64, "seed": 5, "cfg_scale": 7, "steps": 2}


def _box() -> Image.Image:
    im = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(im).rectangle((16, 16, 47, 47), fill="white")
    return im


def _b64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def served(tiny_sd: Path, tiny_lora: Path, isolated_home: Path, models_dir: Path):  # type: ignore[no-untyped-def]
    from lanskap.models.tiny import make_tiny

    cn = models_dir / "api-controlnet"
    if not cn.exists():
        make_tiny(cn, "controlnet")
    shutil.copytree(cn, isolated_home / "controlnet" / "control_sd21_canny")
    make_tiny(isolated_home / "annotators" / "depth_midas", "depth-estimator")
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    port = int(s.url.rsplit(":", 1)[1])
    yield s, webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)
    s.stop()


def test_webuiapi_controlnet_units_round_trip(served) -> None:  # type: ignore[no-untyped-def]
    # Each call with units gets its own alwayson_scripts: webuiapi writes the units into that argument,
    # whose default is one dict shared by every later call in the process.
    _, api = served
    assert api.controlnet_version() == 2
    models = api.controlnet_model_list()
    assert models[0] == "None" and models[1].startswith("control_sd21_canny [")
    assert {"none", "canny", "depth_midas", "invert"} <= set(api.controlnet_module_list())
    unit = webuiapi.ControlNetUnit(image=_box(), module="canny", model=models[1], weight=0.9,
                                   threshold_a=100, threshold_b=200, control_mode=1)  # fmt: skip
    plain = api.txt2img(prompt="a castle", **SMALL)
    r = api.txt2img(prompt="a castle", controlnet_units=[unit], alwayson_scripts={}, **SMALL)
    assert len(r.images) == 2, "the image, then the unit's preprocessed map (the extension's habit)"
    assert np.abs(np.asarray(r.image, np.int16) - np.asarray(plain.image, np.int16)).mean() > 0.5
    text = r.info["infotexts"][0]
    assert f'ControlNet 0: "Module: canny, Model: {models[1]}, Weight: 0.9' in text
    assert "Threshold A: 100, Threshold B: 200" in text and "Control Mode: My prompt is more important" in text
    # the infotext goes back through png-info unchanged; the map is not an infotext carrier
    assert api.png_info(r.image).parameters["ControlNet 0"].startswith("Module: canny")
    # img2img: a unit without a picture takes the init picture, as the extension does
    r2 = api.img2img(images=[_box()], prompt="a tower", denoising_strength=0.8,
                     controlnet_units=[webuiapi.ControlNetUnit(module="canny", model=models[1])],
                     alwayson_scripts={}, **SMALL)  # fmt: skip
    assert len(r2.images) == 2 and "ControlNet 0" in r2.info["infotexts"][0]
    # the option that leaves the maps out
    api.set_options({"control_net_no_detectmap": True})
    assert len(api.txt2img(prompt="a castle", controlnet_units=[unit], alwayson_scripts={}, **SMALL).images) == 1


def test_detect_runs_each_preprocessor(served) -> None:  # type: ignore[no-untyped-def]
    server, api = served
    out = api.controlnet_detect([_box()], module="canny", processor_res=64, threshold_a=100, threshold_b=200)
    edges = np.asarray(out.image.convert("L"))  # webuiapi decodes the maps into pictures
    assert out.info == "Success" and edges.shape == (64, 64) and edges[14:19, 30].max() > 0 and edges[32, 32] == 0
    pictures = [_b64(_box())]
    body = {
        "controlnet_module": "depth_midas",
        "controlnet_input_images": pictures,
        "controlnet_processor_res": 64,
    }
    depth = requests.post(server.url + "/controlnet/detect", timeout=60, json=body)
    assert depth.status_code == 200, depth.text
    assert Image.open(io.BytesIO(base64.b64decode(depth.json()["images"][0]))).size == (64, 64)
    cases = (({"controlnet_module": "canny"}, "No image selected"),
             ({"controlnet_module": "sobel", "controlnet_input_images": pictures}, "unknown preprocessor"),
             ({"controlnet_module": "depth_anything", "controlnet_input_images": pictures},
              "annotators/depth_anything"))  # fmt: skip
    for body, needle in cases:
        r = requests.post(server.url + "/controlnet/detect", json=body, timeout=60)
        assert r.status_code == 422 and needle in r.json()["detail"], r.text


def test_bad_units_are_4xx_before_anything_runs(served) -> None:  # type: ignore[no-untyped-def]
    server, _ = served
    box = _b64(_box())
    cases = {
        "no control image": {"module": "canny"},
        "weight": {"image": box, "module": "canny", "weight": 2.5},
        "must be before end": {"image": box, "module": "canny", "guidance_start": 0.7, "guidance_end": 0.3},
        "unknown preprocessor": {"image": box, "module": "sobel"},
        "unknown ControlNet model": {"image": box, "module": "canny", "model": "nope [12345678]"},
        "stretched": {"image": _b64(Image.new("RGB", (200, 40))), "module": "canny", "resize_mode": "Just Resize"},
        "control mode": {"image": box, "module": "canny", "control_mode": 7},
    }
    for needle, unit in cases.items():
        body = {"prompt": "x", **SMALL, "alwayson_scripts": {"ControlNet": {"args": [unit]}}}
        r = requests.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=60)
        assert r.status_code == 422 and needle in r.json()["detail"], (needle, r.status_code, r.text)
    r = requests.post(server.url + "/sdapi/v1/txt2img", timeout=60,
                      json={"prompt": "x", **SMALL, "alwayson_scripts": {"ADetailer": {"args": []}}})  # fmt: skip
    assert r.status_code == 422 and "not found" in r.json()["detail"]
    # a disabled unit is dropped, as the extension drops it
    body = {"prompt": "x", **SMALL, "alwayson_scripts": {"controlnet": {"args": [{"enabled": False}]}}}
    r = requests.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=60)
    assert r.status_code == 200 and "ControlNet" not in json.loads(r.json()["info"])["infotexts"][0]
    assert json.loads(r.json()["info"])["infotexts"][0]
