"""Hires fix on a tiny model: sizes, the second pass's effect, A1111's infotext keys, --from, progress."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, main_cli
from lanskap.errors import LanskapError
from lanskap.generation.params import GenerationRequest, HiresFix
from lanskap.generation.replay import replay_from_infotext

BASE = {"prompt": "a castle on a cliff", "seed": 3, "steps": 4, "width": 128, "height": 96, "watermark": False}


def _px(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), np.int16)


def test_hires_sizes_and_a1111_target_rule() -> None:
    assert HiresFix(scale=1.5).target(512, 512) == (768, 768, 768, 768)
    assert HiresFix(resize_x=1024).target(768, 512) == (1024, 680, 1024, 680)
    # Both sides: cover the box keeping the ratio, then crop its middle (A1111's truncate).
    assert HiresFix(resize_x=200, resize_y=200).target(128, 96) == (264, 200, 200, 200)
    with pytest.raises(LanskapError, match="largest side allowed is 4096"):
        GenerationRequest("x", width=2048, height=1024, hires=HiresFix(scale=4)).validate()
    with pytest.raises(LanskapError, match="for text-to-image"):
        from lanskap.generation.params import InitImage

        GenerationRequest("x", init=InitImage(Image.new("RGB", (64, 64))), hires=HiresFix()).validate()


def test_denoise_zero_is_the_upscaled_first_pass_and_the_second_pass_changes_it(engine) -> None:  # type: ignore[no-untyped-def]
    first = engine.generate(GenerationRequest(**BASE)).images[0]
    zero = engine.generate(GenerationRequest(**BASE, hires=HiresFix(scale=2, upscaler="Lanczos", denoise=0.0)))
    assert zero.images[0].size == (256, 192)
    assert np.array_equal(_px(zero.images[0]), _px(first.resize((256, 192), Image.Resampling.LANCZOS)))
    repainted = engine.generate(GenerationRequest(**BASE, hires=HiresFix(scale=2, upscaler="Lanczos", denoise=0.6)))
    assert repainted.images[0].size == (256, 192)
    assert np.abs(_px(repainted.images[0]) - _px(zero.images[0])).mean() > 1  # only the second pass differs
    latent = engine.generate(GenerationRequest(**BASE, hires=HiresFix(resize_x=200, resize_y=200, denoise=0.0)))
    assert latent.images[0].size == (200, 200)


def test_infotext_keys_progress_and_replay(engine) -> None:  # type: ignore[no-untyped-def]
    fix = HiresFix(
        scale=1.5,
        upscaler="Latent (bicubic antialiased)",
        steps=6,
        denoise=0.5,
        sampler="Euler a",
        prompt="a castle, sharp details",
    )
    seen = []
    result = engine.generate(GenerationRequest(**BASE, hires=fix), progress=seen.append)
    assert result.images[0].size == (192, 144)
    text = result.infotexts[0]
    for part in (
        "Size: 128x96",
        "Denoising strength: 0.5",
        "Hires upscale: 1.5",
        "Hires steps: 6",
        "Hires upscaler: Latent (bicubic antialiased)",
        "Hires sampler: Euler a",
        'Hires prompt: "a castle, sharp details"',
    ):
        assert part in text, text
    assert [(p.done, p.total) for p in seen][-1] == (4 + 3, 4 + 3)  # first pass + int(6 x 0.5) steps
    replay = replay_from_infotext(text)
    assert replay.source_mode == "txt2img" and replay.fields["hires"] == fix
    again = engine.generate(GenerationRequest(**{**BASE, **replay.fields}))
    assert np.array_equal(_px(again.images[0]), _px(result.images[0]))


def test_cli_hires_flags_and_generate_from(
    capsys: pytest.CaptureFixture[str], tiny_sd: Path, isolated_home: Path
) -> None:
    args = ["-m", str(tiny_sd), "-W", "128", "-H", "96", "--steps", "3", "--seed", "9", "-q", "--json"]
    proc = main_cli(
        capsys,
        "generate",
        "misty hills",
        *args,
        "--hires-scale",
        "2",
        "--hires-steps",
        "4",
        "--hires-denoise",
        "0.45",
        "--hires-upscaler",
        "Nearest",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["size"] == [256, 192]
    assert "Hires upscale: 2, Hires steps: 4, Hires upscaler: Nearest" in out["infotexts"][0]
    proc = main_cli(capsys, "generate", "--from", out["images"][0], "-m", str(tiny_sd), "-q", "--json")
    again = json.loads(proc.stdout)
    assert again["infotexts"][0] == out["infotexts"][0]
    assert np.array_equal(_px(Image.open(again["images"][0])), _px(Image.open(out["images"][0])))
    proc = main_cli(capsys, "upscale", out["images"][0], "-u", "Lanczos", "--json", "-q")  # a gallery picture
    from lanskap.gallery import Gallery

    up = Gallery(isolated_home).get(json.loads(proc.stdout)["gallery_ids"][0])
    assert up.params["source_id"] == out["gallery_ids"][0] and up.seed == 9 and up.prompt == "misty hills"
    assert_one_line_error(main_cli(capsys, "generate", "x", *args, "--hires-upscaler", "Bogus"), "unknown upscaler")
    assert_one_line_error(main_cli(capsys, "generate", "x", *args, "--hires-scale", "9"), "hires scale")


def _wrap_gap(im: Image.Image, axis: int) -> tuple[float, float]:
    """(the jump across the wrap-around edge, the median jump between neighbouring columns or rows)."""
    a = _px(im).astype(float)
    if axis == 0:
        a = a.transpose(1, 0, 2)
    inner = np.abs(np.diff(a, axis=1)).mean(axis=(0, 2))
    return float(np.abs(a[:, 0] - a[:, -1]).mean()), float(np.median(inner))


def test_seamless_tiling_wraps_around_and_round_trips(tmp_path: Path) -> None:
    """A1111's tiling, on lanskap-mini (a trained model: its pictures have structure to continue): with
    x, the right edge continues into the left, as smoothly as neighbouring columns; without it, not."""
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine

    mini = Engine(settings=Settings(home=tmp_path, model="lanskap-mini", device="cpu", dtype="fp32"))
    req = {"prompt": "rolling hills and a castle by a lake at sunset", "seed": 4, "steps": 10, "watermark": False}
    plain = mini.generate(GenerationRequest(**req)).images[0]
    tiled_x = mini.generate(GenerationRequest(**req, tiling="x"))
    edge, inner = _wrap_gap(tiled_x.images[0], axis=1)
    plain_edge, plain_inner = _wrap_gap(plain, axis=1)
    assert edge <= inner * 2 and plain_edge > plain_inner * 3, (edge, inner, plain_edge, plain_inner)
    assert "Tiling: x" in tiled_x.infotexts[0]
    both = mini.generate(GenerationRequest(**req, tiling="xy"))
    assert "Tiling: True" in both.infotexts[0]
    for axis in (0, 1):
        edge, inner = _wrap_gap(both.images[0], axis)
        assert edge <= inner * 2, (axis, edge, inner)
    assert replay_from_infotext(both.infotexts[0]).fields["tiling"] == "xy"
    again = mini.generate(GenerationRequest(**req))  # the patch comes off after the job
    assert np.array_equal(_px(again.images[0]), _px(plain))
    with pytest.raises(LanskapError, match="tiling must be"):
        GenerationRequest("x", tiling="z").validate()
