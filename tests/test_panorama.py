"""Panoramas, 360° skies and regional prompts (#39): on lanskap-mini, where pictures have structure
to judge, and on the tiny random model for the modes, LoRAs and memory; through the CLI and the API."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import assert_one_line_error, main_cli
from lanskap.errors import LanskapError
from lanskap.generation.panorama import Panorama
from lanskap.generation.params import GenerationRequest, InitImage, LoraSpec
from lanskap.generation.regions import Layout, Region, parse
from lanskap.generation.replay import replay_from_infotext
from test_api import _start


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine

    home = tmp_path_factory.mktemp("pano-home")
    return Engine(settings=Settings(home=home, model="lanskap-mini", device="cpu", dtype="fp32"))


def _px(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), np.float32)


def _seam_ratio(im: Image.Image, seams: list[int]) -> float:
    """Mean column-to-column change at the seam columns over the mean everywhere."""
    d = np.abs(np.diff(_px(im), axis=1)).mean(axis=(0, 2))
    return float(d[[s - 1 for s in seams]].mean() / d.mean())


def test_panorama_windows_fuse_into_one_picture_without_seams(mini) -> None:  # type: ignore[no-untyped-def]
    """384x128 on a 128 px model: the windows are fused every step, so the columns where one
    window ends change no more than any others; windows side by side without overlap show a step."""
    req = {"prompt": "a landscape with hills, a day sky", "seed": 2, "steps": 5, "width": 384, "height": 128}
    fused = mini.generate(GenerationRequest(**req, panorama=Panorama(), watermark=False))
    apart = mini.generate(GenerationRequest(**req, panorama=Panorama(stride=128), watermark=False))
    assert fused.images[0].size == (384, 128)
    assert any("panorama: 5 window(s) of 128 px, 64 px apart" in n for n in fused.notices), fused.notices
    ratio, step = _seam_ratio(fused.images[0], [128, 256]), _seam_ratio(apart.images[0], [128, 256])
    assert ratio < 1.4 and step > 1.7, (ratio, step)
    assert not any("tends to repeat" in n for n in fused.notices)  # a panorama is the cure, not the problem
    text = fused.infotexts[0]
    assert "Panorama window: 128" in text and "Panorama stride: 64" in text and "Size: 384x128" in text
    assert replay_from_infotext(text).fields["panorama"] == Panorama(window=128, stride=64, batch=4)


def test_regions_put_each_prompt_in_its_region(mini) -> None:  # type: ignore[no-untyped-def]
    """A night sky asked on the left half and a day sky on the right come out there (lanskap-mini's
    detector reads each half); the same prompts without regions give one sky for both halves."""
    from lanskap.mini.detect import detect
    from lanskap.mini.scenes import DARK_SKIES

    layout = Layout((parse("0,0,0.5,1:a night sky over hills"), parse("0.5,0,1,1:a day sky over hills")))
    req = {"seed": 2, "steps": 6, "width": 256, "height": 128, "watermark": False}
    made = mini.generate(GenerationRequest("a landscape with hills", regions=layout, **req))
    plain = mini.generate(GenerationRequest("a landscape with hills, a night sky, a day sky", **req))

    def skies(im: Image.Image) -> tuple[str, str]:
        return str(detect(im.crop((0, 0, 128, 128)))["sky"]), str(detect(im.crop((128, 0, 256, 128)))["sky"])

    left, right = skies(made.images[0])
    assert left in DARK_SKIES and right not in DARK_SKIES, (left, right)
    p_left, p_right = skies(plain.images[0])
    assert (p_left in DARK_SKIES) == (p_right in DARK_SKIES), (p_left, p_right)
    replay = replay_from_infotext(made.infotexts[0])
    assert replay.fields["regions"] == layout and replay.fields["regions"].base == 0.2
    assert GenerationRequest(**replay.fields).validate().regions == layout


def test_equirectangular_sky_wraps_has_calm_poles_and_previews(mini, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    made = mini.generate(
        GenerationRequest(
            "a day sky over hills with a lake",
            seed=3,
            steps=8,
            height=128,
            panorama=Panorama(equirectangular=True),
            watermark=False,
        )
    )
    im = made.images[0]
    assert im.size == (256, 128)  # 2:1 at the model's height when no width is given
    a = _px(im)
    inner = float(np.median(np.abs(np.diff(a, axis=1)).mean(axis=(0, 2))))
    assert float(np.abs(a[:, 0] - a[:, -1]).mean()) <= 2 * inner + 1  # the right edge runs into the left
    assert a[0].std(axis=0).max() < 1.0 and a[-1].std(axis=0).max() < 1.0  # each pole is one colour
    assert a[64].std(axis=0).max() > 5  # the horizon keeps its detail
    assert "Equirectangular: True" in made.infotexts[0]
    assert replay_from_infotext(made.infotexts[0]).fields["panorama"].equirectangular
    path = tmp_path / "sky.png"
    im.save(path)
    proc = main_cli(capsys, "panorama", "preview", str(path), "--size", "64")
    assert proc.returncode == 0, proc.stderr
    sheet = Image.open(tmp_path / "sky-preview.png")
    assert sheet.size == (192, 128)
    views = _px(sheet)
    assert views[64:, 64:128].std() < views[:64, :64].std()  # looking straight up sees the calm pole
    assert_one_line_error(main_cli(capsys, "panorama", "preview", str(path)), "exists")
    Image.new("RGB", (300, 128)).save(tmp_path / "wide.png")
    assert_one_line_error(main_cli(capsys, "panorama", "preview", str(tmp_path / "wide.png")), "twice as wide")


def test_panorama_on_the_tiny_model_every_mode_a_lora_and_bounded_memory(engine, tiny_lora: Path) -> None:  # type: ignore[no-untyped-def]
    """img2img extends a picture into a panorama, outpainting runs in windows, a LoRA and prompt
    syntax work, and the UNet never sees more than the window batch (twice, for guidance)."""
    from lanskap.generation.params import InpaintMask

    unet = engine.load().pipe.unet
    seen: list[tuple[int, ...]] = []
    hook = unet.conv_in.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    try:
        pano = Panorama(window=64, stride=32, batch=2)
        out = engine.generate(GenerationRequest("(a wide valley:1.3)", seed=1, steps=2, width=256, height=64,
                                                loras=(LoraSpec(str(tiny_lora), 0.8),), panorama=pano))  # fmt: skip
    finally:
        hook.remove()
    assert out.images[0].size == (256, 64) and out.loras and out.loras[0].name == tiny_lora.stem
    assert seen and max(s[0] for s in seen) <= 2 * 2 and {s[2:] for s in seen} == {(8, 8)}
    picture = Image.new("RGB", (96, 64), (90, 120, 200))
    extended = engine.generate(GenerationRequest("a valley", seed=1, steps=2, width=256, height=64,
                                                 init=InitImage(picture, 0.6), panorama=pano))  # fmt: skip
    assert extended.images[0].size == (256, 64) and "Denoising strength: 0.6" in extended.infotexts[0]
    canvas, mask = Image.new("RGB", (256, 64), (90, 120, 200)), Image.new("L", (256, 64), 0)
    mask.paste(255, (96, 0, 256, 64))
    out = engine.generate(GenerationRequest("a valley", seed=1, steps=2, init=InitImage(canvas, 1.0),
                                            mask=InpaintMask(mask, blur=0), panorama=pano))  # fmt: skip
    kept = _px(out.images[0])[:, :80]
    assert out.images[0].size == (256, 64) and np.abs(kept - _px(canvas)[:, :80]).max() <= 2  # unmasked stays


def test_one_window_is_the_plain_picture(engine) -> None:  # type: ignore[no-untyped-def]
    """A panorama whose window is the whole canvas, and a region covering all of it with the base
    prompt's own words at full share, are the plain picture: the fusion adds nothing of its own."""
    req = {"prompt": "a valley", "seed": 5, "steps": 2, "width": 64, "height": 64, "watermark": False}
    plain = _px(engine.generate(GenerationRequest(**req)).images[0])
    one = _px(engine.generate(GenerationRequest(**req, panorama=Panorama(window=64))).images[0])
    same = Layout((Region("a valley"),), base=1.0)
    region = _px(engine.generate(GenerationRequest(**req, regions=same)).images[0])
    assert np.abs(one - plain).max() <= 1 and np.abs(region - plain).max() <= 1


def test_bad_layouts_are_one_line_errors(tiny_sd: Path, isolated_home: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (["--panorama", "512x128", "--panorama-window", "256"], "smaller than its 256 px window"),
        (["--region", "0,0,1.5,1:a castle"], "outside the canvas"),
        (["--region", "0.5,0,0.5,1:a castle"], "no area"),
        (["--equirectangular", "--panorama", "384x128"], "twice as wide"),
        (["--region", "a castle"], "LEFT,TOP,RIGHT,BOTTOM"),
        (["--panorama", "9000x128"], "between 64 and 8192"),
    ]
    for flags, needle in cases:
        proc = main_cli(capsys, "generate", "a valley", "--model", str(tiny_sd), "--steps", "1", *flags)
        assert_one_line_error(proc, needle)
    with pytest.raises(LanskapError, match="more than the limit of 8"):
        GenerationRequest("x", regions=Layout(tuple(Region("y") for _ in range(9)))).validate()
    with pytest.raises(LanskapError, match="cannot load a LoRA"):
        GenerationRequest("x", regions=Layout((Region("y <lora:mist:1>"),))).validate()


def test_cli_panorama_with_regions_round_trips_through_from(tiny_sd: Path, isolated_home: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = isolated_home / "out"
    proc = main_cli(capsys, "generate", "a wide valley", "--model", str(tiny_sd), "--steps", "1", "--seed", "4",
                    "--panorama", "192x64", "--panorama-window", "64", "--region", "0,0,0.5,1,2:a castle;fog",
                    "--region-base", "0.3", "-o", str(out), "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first = next(out.glob("*.png"))
    again = main_cli(capsys, "generate", "--from", str(first), "--model", str(tiny_sd), "-o", str(out), "-q")
    assert again.returncode == 0, again.stderr
    second = sorted(out.glob("*.png"))[-1]
    assert second != first and Image.open(second).size == (192, 64)
    assert np.array_equal(_px(Image.open(first)), _px(Image.open(second)))
    fields = replay_from_infotext(Image.open(second).info["parameters"]).fields
    assert fields["regions"] == Layout((Region("a castle", (0, 0, 0.5, 1), "fog", 2.0),), base=0.3)


@pytest.fixture
def server(tiny_sd: Path, tiny_lora: Path, isolated_home: Path):  # type: ignore[no-untyped-def]
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    yield s
    s.stop()


def _png(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_api_panorama_and_regions_a1111_body_and_native_job(server) -> None:  # type: ignore[no-untyped-def]
    mask = Image.new("L", (192, 64), 0)
    mask.paste(255, (0, 0, 64, 64))
    body = {"prompt": "a wide valley", "width": 192, "height": 64, "steps": 1, "seed": 3, "sampler_name": "Euler",
            "panorama": {"window": 64, "stride": 32}, "tiling": True,
            "regions": [{"box": [0.5, 0, 1, 1], "prompt": "a lake"},
                        {"prompt": "fog", "mask": _png(mask)}]}  # fmt: skip
    r = requests.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    text = info["infotexts"][0]
    assert "Panorama window: 64" in text and "Tiling: True" in text and '\\"prompt\\":\\"a lake\\"' in text
    assert not any("panorama" in w or "regions" in w for w in info.get("warnings", []))
    job = requests.post(server.url + "/api/v1/jobs/generation", json={**body, "tiling": False}, timeout=30)
    assert job.status_code == 202, job.text
    jid = job.json()["id"]
    for _ in range(600):
        state = requests.get(f"{server.url}/api/v1/jobs/{jid}", timeout=10).json()
        if state["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert state["state"] == "done", state
    gid = state["result"]["gallery_ids"][0]
    entry = requests.get(f"{server.url}/api/v1/gallery/{gid}", timeout=10).json()
    assert entry["width"] == 192 and entry["params"]["panorama"]["window"] == 64
    bad = [({"regions": [{"box": [0, 0, 2, 1], "prompt": "x"}]}, "outside the canvas"),
           ({"panorama": {"window": 128}}, "smaller than its 128 px window"),
           ({"panorama": {"equirectangular": True}}, "twice as wide"),
           ({"regions": [{"prompt": "x"}] * 9}, "more than the limit")]  # fmt: skip
    for extra, needle in bad:
        r = requests.post(server.url + "/sdapi/v1/txt2img", json={**body, **extra}, timeout=30)
        assert r.status_code == 422 and needle in r.text, r.text


@pytest.mark.slow
def test_a_subject_in_a_region_appears_once_across_the_panorama(mini) -> None:  # type: ignore[no-untyped-def]
    """Every window hears the whole prompt, so a subject named in it comes back window after window
    (MultiDiffusion's own habit); placed in a region, it appears once, where the region is."""
    base = {"seed": 1, "steps": 20, "width": 512, "height": 128, "panorama": Panorama(), "watermark": False}
    castle = Layout((parse("0.375,0,0.625,1:a castle on a cliff"),))
    placed = mini.generate(GenerationRequest("rolling hills under a day sky, a lake", **base, regions=castle))
    named = mini.generate(GenerationRequest("rolling hills under a day sky, a lake, a castle on a cliff", **base))

    def castles(im: Image.Image) -> list[int]:
        """The 64 px bands with a dark silhouette above the horizon (mini's castles are its dark shapes)."""
        sky = np.asarray(im.convert("L"), np.float32)[:70]
        return [x // 64 for x in range(0, im.width, 64) if float((sky[:, x : x + 64] < 70).mean()) > 0.03]

    assert castles(placed.images[0]) == [3, 4]  # the region spans 192-320 px
    assert len(castles(named.images[0])) >= 4
