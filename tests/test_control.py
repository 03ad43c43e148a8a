"""Structure control on tiny models: ControlNet units (preprocessors, models, the extension's rules)
and depth2img, through the engine and the CLI."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import assert_one_line_error, main_cli

SIZE = 64


def _box(size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    """A white square on black: its edges are known."""
    im = Image.new("RGB", size, "black")
    ImageDraw.Draw(im).rectangle((16, 16, 47, 47), fill="white")
    return im


@pytest.fixture(scope="session")
def tiny_controlnet(models_dir: Path, tiny_sd: Path) -> Path:
    from lanskap.models.tiny import make_tiny

    return make_tiny(models_dir / "tiny-controlnet", "controlnet")


@pytest.fixture(scope="session")
def tiny_depth(models_dir: Path) -> Path:
    from lanskap.models.tiny import make_tiny

    return make_tiny(models_dir / "tiny-sd-depth", "sd-depth")


@pytest.fixture(scope="session")
def cn_home(models_dir: Path, tiny_controlnet: Path) -> Path:
    """A home with the tiny ControlNet as a diffusers folder, the same weights as an A1111 single file,
    and a ControlNet made for a base of another text width."""
    from safetensors.torch import load_file, save_file

    from lanskap.models.convert import controlnet_to_ldm
    from lanskap.models.tiny import make_tiny

    home = models_dir / "cn-home"
    folder = home / "controlnet"
    shutil.copytree(tiny_controlnet, folder / "tiny-canny")
    cfg = json.loads((tiny_controlnet / "config.json").read_text())
    state = load_file(str(tiny_controlnet / "diffusion_pytorch_model.safetensors"))
    save_file({k: v.contiguous() for k, v in controlnet_to_ldm(state, cfg).items()},
              str(folder / "control_sd21_scribble_single.safetensors"))  # fmt: skip
    make_tiny(folder / "other-base-depth", "controlnet", cross_attention_dim=24)
    make_tiny(home / "annotators" / "depth_midas", "depth-estimator")
    return home


@pytest.fixture(scope="module")
def cn_engine(tiny_sd: Path, cn_home: Path):  # type: ignore[no-untyped-def]
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine

    return Engine(settings=Settings(home=cn_home, model=str(tiny_sd), speed_level="quality"))


def _req(**kw):  # type: ignore[no-untyped-def]
    from lanskap.generation.params import GenerationRequest

    base = {"prompt": "a castle", "seed": 5, "steps": 4, "width": SIZE, "height": SIZE, "watermark": False,
            "scheduler": "Euler"}  # fmt: skip
    return GenerationRequest(**{**base, **kw})


def _unit(**kw):  # type: ignore[no-untyped-def]
    from lanskap.control.units import ControlUnit

    return ControlUnit(kw.pop("image", _box()), **{"module": "canny", "model": "tiny-canny", **kw})


def _pixels(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(result.images[0], dtype=np.int16)


def test_canny_finds_the_edges_of_a_known_picture() -> None:
    from lanskap.control.preprocess import run

    edges = np.asarray(run(_box(), "canny", res=SIZE).convert("L")) > 0
    ring = np.zeros_like(edges)
    ring[15:49, 15:49] = True
    ring[18:46, 18:46] = False  # the square's border, a pixel or two either side
    assert edges.any() and edges[ring].mean() > 0.2, "edges lie on the square's border"
    assert not edges[~ring].any(), "nothing away from the border"
    # thresholds above any gradient find nothing; the map is RGB at the processor resolution
    assert not (np.asarray(run(_box(), "canny", res=SIZE, threshold_a=2000, threshold_b=3000)) > 0).any()
    assert run(_box((64, 32)), "canny", res=48).size == (96, 48)


def test_model_free_preprocessors_and_their_names() -> None:
    from lanskap.control.preprocess import PREPROCESSORS, canonical, fit, run
    from lanskap.errors import LanskapError

    sketch = Image.new("RGB", (SIZE, SIZE), "white")
    ImageDraw.Draw(sketch).line((0, 32, 63, 32), fill="black", width=3)
    for module in ("invert", "binary", "scribble_xdog", "lineart_standard", "softedge_opencv"):
        out = np.asarray(run(sketch, module, res=SIZE).convert("L"))
        line = out[28:37].max(axis=0).mean()  # soft edges lie either side of the stroke
        assert line > out[5].mean() + 50, f"{module}: the drawn line is bright, the paper dark"
    assert canonical("invert (from white bg & black line)") == "invert" and canonical("Depth") == "depth_midas"
    with pytest.raises(LanskapError, match="unknown preprocessor 'sobel'"):
        canonical("sobel")
    assert set(PREPROCESSORS) >= {"none", "canny", "depth_midas", "depth_anything", "invert", "lineart_standard"}
    wide = Image.new("RGB", (128, 64), "white")
    assert fit(wide, 64, 64, "Crop and Resize").getpixel((0, 32)) == (255, 255, 255)
    assert fit(wide, 64, 64, "Resize and Fill").getpixel((32, 2)) == (0, 0, 0), "padded black"


def test_a_unit_changes_the_picture_and_weight_zero_gives_the_same_pixels(cn_engine) -> None:  # type: ignore[no-untyped-def]
    plain = _pixels(cn_engine.generate(_req()))
    controlled = cn_engine.generate(_req(control=(_unit(),)))
    assert np.abs(_pixels(controlled) - plain).mean() > 2
    assert np.array_equal(_pixels(cn_engine.generate(_req(control=(_unit(weight=0.0),)))), plain)
    # the map the unit used is kept, and the infotext records the unit as the extension does
    assert "ControlNet 0" in controlled.maps and controlled.maps["ControlNet 0"].size == (512, 512)
    text = controlled.infotexts[0]
    assert 'ControlNet 0: "Module: canny, Model: tiny-canny [' in text
    assert "Weight: 1, Resize Mode: Crop and Resize" in text and "Control Mode: Balanced" in text


def _count_runs(engine, model: str):  # type: ignore[no-untyped-def]
    calls = []
    net = engine.controls.net(engine.controls.resolve(_unit(model=model)), engine.model.pipe.unet)
    return net.register_forward_hook(lambda *a: calls.append(1)), calls


def test_start_and_end_limit_the_steps_where_the_unit_acts(cn_engine) -> None:  # type: ignore[no-untyped-def]
    cn_engine.generate(_req(control=(_unit(),)))  # loads the network
    handle, calls = _count_runs(cn_engine, "tiny-canny")
    try:
        cn_engine.generate(_req(steps=8, control=(_unit(guidance_start=0.5, guidance_end=1.0),)))
        assert len(calls) == 4, "steps 4-7 of 8 (i/8 in [0.5, 1])"
        calls.clear()
        cn_engine.generate(_req(steps=8, control=(_unit(guidance_start=0.0, guidance_end=0.25),)))
        assert len(calls) == 3, "steps 0-2 (0, 1/8, 2/8)"
    finally:
        handle.remove()
    late = _pixels(cn_engine.generate(_req(steps=8, control=(_unit(guidance_start=0.9, guidance_end=1.0),))))
    full = _pixels(cn_engine.generate(_req(steps=8, control=(_unit(),))))
    assert np.abs(late - full).mean() > 1


def test_control_modes_follow_the_extension(cn_engine) -> None:  # type: ignore[no-untyped-def]
    from lanskap.control.hook import scales

    soft = scales(_unit(control_mode="My prompt is more important", weight=0.5), 13)
    assert soft[-1] == 0.5 and soft[0] == pytest.approx(0.5 * 0.825**12)
    assert scales(_unit(weight=0.5), 13) == [0.5] * 13
    prompt, control = "My prompt is more important", "ControlNet is more important"
    # without guidance there is no unconditional half, so "ControlNet is more important" is the soft mode
    a = _pixels(cn_engine.generate(_req(guidance=1.0, control=(_unit(control_mode=prompt),))))
    b = _pixels(cn_engine.generate(_req(guidance=1.0, control=(_unit(control_mode=control),))))
    assert np.array_equal(a, b)
    c = _pixels(cn_engine.generate(_req(control=(_unit(control_mode=prompt),))))
    d = _pixels(cn_engine.generate(_req(control=(_unit(control_mode=control),))))
    assert np.abs(c - d).mean() > 0.5, "with guidance, the control acts on the conditional half only"


def test_a1111_single_file_controlnet_matches_its_diffusers_folder(cn_engine) -> None:  # type: ignore[no-untyped-def]
    folder = _pixels(cn_engine.generate(_req(control=(_unit(),))))
    single = cn_engine.generate(_req(control=(_unit(model="control_sd21_scribble_single"),)))
    assert np.array_equal(_pixels(single), folder)
    # no model named: the one whose name matches the preprocessor's kind
    auto = cn_engine.generate(_req(control=(_unit(module="invert", model=""),)))
    assert "Model: control_sd21_scribble_single [" in auto.infotexts[0]


def test_units_work_with_img2img_inpainting_loras_and_two_units(cn_engine, tiny_lora: Path) -> None:  # type: ignore[no-untyped-def]
    from lanskap.generation.params import InitImage, InpaintMask, LoraSpec

    picture = Image.new("RGB", (SIZE, SIZE), (90, 120, 60))
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 40, 40), fill=255)
    cases = {
        "img2img": {"init": InitImage(picture, 0.8)},
        "inpaint": {"init": InitImage(picture, 0.9), "mask": InpaintMask(mask, blur=0)},
        "lora": {"loras": (LoraSpec(str(tiny_lora), 0.8),)},
    }
    for name, fields in cases.items():
        plain = _pixels(cn_engine.generate(_req(**fields)))
        steered = _pixels(cn_engine.generate(_req(**fields, control=(_unit(),))))
        assert np.abs(steered - plain).mean() > 0.5, name
    one = _pixels(cn_engine.generate(_req(control=(_unit(),))))
    two = _pixels(cn_engine.generate(_req(control=(_unit(), _unit(module="invert", weight=0.7)))))
    assert np.abs(two - one).mean() > 0.5


def test_infotext_round_trip_restores_every_unit_field(cn_engine) -> None:  # type: ignore[no-untyped-def]
    from lanskap.generation.replay import replay_from_infotext

    unit = _unit(weight=0.6, guidance_start=0.1, guidance_end=0.9, control_mode="ControlNet is more important",
                 resize_mode="Resize and Fill", processor_res=256, threshold_a=80, threshold_b=160)  # fmt: skip
    result = cn_engine.generate(_req(control=(unit,)))
    restored = replay_from_infotext(result.infotexts[0]).fields["control"]
    assert len(restored) == 1 and restored[0].image is None
    assert restored[0] == replace(result.request.control[0], image=None)
    again = cn_engine.generate(_req(control=(replace(restored[0], image=_box()),)))
    assert np.array_equal(_pixels(again), _pixels(result))


def test_bad_units_are_one_line_errors_before_any_model_loads(cn_home: Path, tiny_sd: Path) -> None:
    from lanskap.config import Settings
    from lanskap.errors import LanskapError
    from lanskap.jobs.generation import check_generation

    settings = Settings(home=cn_home, model=str(tiny_sd))
    bad = {
        "no control image": _unit(image=None),
        "weight must be between 0 and 2": _unit(weight=2.5),
        "start (0.6) must be before end (0.4)": _unit(guidance_start=0.6, guidance_end=0.4),
        "unknown preprocessor": _unit(module="hed_v9"),
        "unknown ControlNet model 'nope'": _unit(model="nope"),
        "would be stretched": _unit(image=_box((128, 40)), resize_mode="Just Resize"),
        "is made for 24-wide, but model": _unit(model="other-base-depth"),
    }
    for needle, unit in bad.items():
        with pytest.raises(LanskapError, match=re.escape(needle)) as err:
            check_generation(_req(control=(unit,)), settings)
        assert "\n" not in str(err.value)
    check_generation(_req(control=(_unit(image=_box((66, 64)), resize_mode="Just Resize"),)), settings)


def test_depth2img_uses_a_given_map_deterministically(tiny_depth: Path, isolated_home: Path) -> None:
    from lanskap.config import Settings
    from lanskap.errors import LanskapError
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import DepthInput, InitImage

    engine = Engine(settings=Settings(home=isolated_home, model=str(tiny_depth), speed_level="quality"))
    picture = Image.new("RGB", (SIZE, SIZE), (140, 110, 90))
    near_left = Image.fromarray(np.tile(np.linspace(255, 0, SIZE, dtype=np.uint8), (SIZE, 1)), "L")
    near_top = near_left.transpose(Image.Transpose.ROTATE_270)
    req = _req(init=InitImage(picture, 0.9), depth=DepthInput(near_left))
    a, b = engine.generate(req), engine.generate(req)
    assert np.array_equal(_pixels(a), _pixels(b))
    other = engine.generate(replace(req, depth=DepthInput(near_top)))
    assert np.abs(_pixels(other) - _pixels(a)).mean() > 0.5, "the map steers the picture"
    assert np.array_equal(np.asarray(a.maps["Depth"]), np.asarray(near_left))
    assert "Depth map: given" in a.infotexts[0]
    estimated = engine.generate(replace(req, depth=DepthInput()))
    assert "Depth map: estimated" in estimated.infotexts[0] and estimated.maps["Depth"].size == (SIZE, SIZE)
    with pytest.raises(LanskapError, match="SD 2 depth model"):
        engine.generate(_req())


def test_depth2img_needs_a_depth_model(engine) -> None:  # type: ignore[no-untyped-def]
    from lanskap.errors import LanskapError
    from lanskap.generation.params import DepthInput, InitImage

    with pytest.raises(LanskapError, match="depth2img needs an SD 2 depth model"):
        engine.generate(_req(init=InitImage(_box()), depth=DepthInput()))


def test_cli_control_depth2img_and_maps(capsys, tmp_path: Path, tiny_sd: Path, tiny_depth: Path, cn_home: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("LANSKAP_HOME", str(cn_home))
    box = tmp_path / "box.png"
    _box().save(box)
    out = tmp_path / "out"
    common = ["-m", str(tiny_sd), "--steps", "2", "-W", "64", "-H", "64", "--no-gallery", "-q", "-o", str(out)]
    spec = f"canny:{box}:0.8:0:0.8:prompt:model=tiny-canny:pixel=on:hr=high"
    proc = main_cli(capsys, "generate", "a castle", *common, "--seed", "3", "--control", spec, "--save-maps")
    assert proc.returncode == 0, proc.stderr
    made = Path(proc.stdout.split()[0])
    assert "Pixel Perfect: True" in Image.open(made).info["parameters"]
    assert "Hr Option: High res only" in Image.open(made).info["parameters"]
    assert (out / f"{made.stem}-controlnet0.png").is_file()
    # --from restores the unit; its picture is given again
    proc = main_cli(capsys, "generate", "--from", str(made), *common[:1], str(tiny_sd), "-q", "--no-gallery")
    assert_one_line_error(proc, "1 ControlNet unit", "--control-image")
    again = main_cli(capsys, "generate", "--from", str(made), "-m", str(tiny_sd), "-q", "--no-gallery",
                     "-o", str(tmp_path / "again"), "--control-image", str(box))  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert np.array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(again.stdout.split()[0])))
    bad = {f"canny:{box}:3": "weight must be between 0 and 2", "canny:missing.png": "not found",
           f"canny:{box}:1:0.5:0.5": "must be before end", f"sobel:{box}": "unknown preprocessor"}  # fmt: skip
    for spec, needle in bad.items():
        assert_one_line_error(main_cli(capsys, "generate", "x", *common, "--control", spec), needle)
    proc = main_cli(capsys, "depth2img", str(box), "a cliff", "-m", str(tiny_depth), "--steps", "2", "--save-depth",
                    "--no-gallery", "-q", "-o", str(tmp_path / "depth"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "depth" / f"{Path(proc.stdout.split()[0]).stem}-depth.png").is_file()
    proc = main_cli(capsys, "control", "detect", str(box), "--module", "canny", "-o", str(tmp_path / "c.png"))
    assert proc.returncode == 0 and Image.open(tmp_path / "c.png").size == (512, 512)
    # A single-file depth checkpoint loads with a depth model's configs; its depth comes from depth_midas.
    from lanskap.models.convert import export_single_file

    single = export_single_file(tiny_depth, tmp_path / "depth.safetensors")
    flags = ["--steps", "1", "--no-gallery", "-q", "-o", str(tmp_path / "single")]
    proc = main_cli(
        capsys, "depth2img", str(box), "a cliff", "-m", str(single), "--model-config", str(tiny_depth), *flags
    )
    assert proc.returncode == 0, proc.stderr
    proc = main_cli(capsys, "depth2img", str(box), "a cliff", "-m", str(single), "--model-config", str(tiny_sd), *flags)
    assert_one_line_error(proc, "an SD 2 depth checkpoint", "takes 4 channels")
    missing = main_cli(capsys, "depth2img", str(box), "a cliff", "--no-gallery", "-q")  # the hub is unreachable here
    assert_one_line_error(missing, "sd2-community/stable-diffusion-2-depth", "not available")
    listed = main_cli(capsys, "control", "list").stdout
    assert "tiny-canny [" in listed and "control_sd21_scribble_single [" in listed


def test_make_tiny_builds_the_control_kinds(capsys, tmp_path: Path) -> None:
    from diffusers import ControlNetModel

    for kind in ("controlnet", "depth-estimator"):
        proc = main_cli(capsys, "models", "make-tiny", str(tmp_path / kind), "--kind", kind)
        assert proc.returncode == 0, proc.stderr
    net = ControlNetModel.from_pretrained(str(tmp_path / "controlnet"))
    assert float(net.controlnet_mid_block.weight.detach().abs().sum()) > 0, "not zero-initialised: it changes pictures"
    from transformers import AutoModelForDepthEstimation

    est = AutoModelForDepthEstimation.from_pretrained(str(tmp_path / "depth-estimator"))
    assert est.config.model_type == "dpt"


def test_units_follow_the_hires_fix_passes_and_regional_prompts(cn_engine) -> None:  # type: ignore[no-untyped-def]
    from lanskap.generation.params import HiresFix
    from lanskap.generation.regions import Layout, parse

    cn_engine.generate(_req(steps=1, control=(_unit(),)))  # loads the network
    hires = HiresFix(scale=1.5, steps=2, denoise=1.0)
    handle, calls = _count_runs(cn_engine, "tiny-canny")
    counts = {}
    try:
        for option in ("Both", "Low res only", "High res only"):
            calls.clear()
            result = cn_engine.generate(_req(steps=2, hires=hires, control=(_unit(hr_option=option),)))
            counts[option] = len(calls)
    finally:
        handle.remove()
    assert result.images[0].size == (96, 96), "the map is resized for the second pass"
    assert counts == {"Both": 4, "Low res only": 2, "High res only": 2}, counts
    assert "Hr Option: High res only" in result.infotexts[0]
    layout = Layout((parse("0,0,0.5,1:a tower"),), 0.2)
    plain = _pixels(cn_engine.generate(_req(regions=layout)))
    assert np.abs(_pixels(cn_engine.generate(_req(regions=layout, control=(_unit(),)))) - plain).mean() > 0.5


def test_a_9_channel_inpainting_model_takes_a_single_file_controlnet_and_caching_keeps_units(
    cn_home: Path, tiny_inpaint: Path, cn_engine
) -> None:  # type: ignore[no-untyped-def]
    """A ControlNet sees the four latent channels, so an SD 2.1 ControlNet file steers an inpainting base
    (its architecture built with a 4-channel input); and units run under feature caching (DeepCache)."""
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import InitImage, InpaintMask

    engine = Engine(settings=Settings(home=cn_home, model=str(tiny_inpaint), speed_level="quality"))
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 56, 56), fill=255)
    fields = {"init": InitImage(Image.new("RGB", (SIZE, SIZE), (90, 120, 60)), 1.0), "mask": InpaintMask(mask, blur=0)}
    plain = _pixels(engine.generate(_req(**fields)))
    steered = engine.generate(_req(**fields, control=(_unit(model="control_sd21_scribble_single"),)))
    assert np.abs(_pixels(steered) - plain).mean() > 0.5
    cached = _req(steps=20, cache_interval=3, cache_start=0.2)
    plain = _pixels(cn_engine.generate(cached))
    result = cn_engine.generate(replace(cached, control=(_unit(),)))
    assert "Cache interval: 3" in result.infotexts[0] and np.abs(_pixels(result) - plain).mean() > 0.5
