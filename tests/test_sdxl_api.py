"""SDXL through A1111's API (issue #36): families in sd-models, switching between SD 2.x and SDXL with
sd_model_checkpoint (webuiapi), the refiner fields, and the second prompt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import requests
import webuiapi

from test_api import _start

TXT = {"prompt": "a castle", "steps": 4, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler"}


def test_sd_models_families_switching_refiner_and_second_prompt(
    tiny_sd: Path, tiny_lora: Path, tiny_sdxl: Path, tiny_sdxl_refiner: Path, isolated_home: Path
) -> None:
    shutil.copytree(tiny_sdxl, isolated_home / "models" / "tiny-xl")
    shutil.copytree(tiny_sdxl_refiner, isolated_home / "models" / "tiny-xl-refiner")
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    try:
        api = webuiapi.WebUIApi(host="127.0.0.1", port=int(s.url.rsplit(":", 1)[1]), sampler="Euler", steps=4)
        models = {m["model_name"]: m["family"] for m in requests.get(s.url + "/sdapi/v1/sd-models", timeout=10).json()}
        assert models["tiny-xl"] == "SDXL" and models["tiny-xl-refiner"] == "SDXL refiner"
        assert models["tiny-sd"].startswith("SD 2.x")
        first = api.txt2img(prompt="a castle", width=64, height=64, seed=3)
        assert "Model: tiny-sd," in first.info["infotexts"][0]
        api.util_set_model("tiny-xl", find_closest=False)
        xl = api.txt2img(prompt="a castle", width=64, height=64, seed=3)
        assert "Model: tiny-xl," in xl.info["infotexts"][0]
        assert (
            requests.get(s.url + "/sdapi/v1/options", timeout=10).json()["sd_model_checkpoint"].startswith("tiny-xl [")
        )
        r = requests.post(
            s.url + "/sdapi/v1/txt2img",
            timeout=120,
            json={
                **TXT,
                "refiner_checkpoint": "tiny-xl-refiner",
                "refiner_switch_at": 0.5,
                "prompt_2": "oil, warm light",
            },
        )
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        text = info["infotexts"][0]
        assert "Refiner: tiny-xl-refiner [" in text and "Refiner switch at: 0.5" in text
        assert 'Prompt 2: "oil, warm light"' in text and not info["warnings"]
        assert info["extra_generation_params"]["Refiner switch at"] == 0.5
        none = requests.post(s.url + "/sdapi/v1/txt2img", json={**TXT, "refiner_checkpoint": "None"}, timeout=120)
        assert "Refiner" not in json.loads(none.json()["info"])["infotexts"][0]
        for bad in ({"refiner_checkpoint": "../etc"}, {"refiner_checkpoint": "tiny-xl-refiner", "refiner_switch_at": 2},
                    {"refiner_checkpoint": "tiny-sd"}):  # fmt: skip
            r = requests.post(s.url + "/sdapi/v1/txt2img", json={**TXT, **bad}, timeout=120)
            assert r.status_code == 422, (bad, r.text)
        api.util_set_model("tiny-sd", find_closest=False)
        r = requests.post(
            s.url + "/sdapi/v1/txt2img", json={**TXT, "refiner_checkpoint": "tiny-xl-refiner"}, timeout=120
        )
        assert r.status_code == 422 and "takes over from an SDXL base" in r.json()["detail"]
    finally:
        s.stop()
