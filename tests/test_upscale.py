"""Upscalers: the RRDBNet loader on hand-built state dicts, safe loading, tiles without seams, sizes
and A1111's names; and the upscale job (Extras and SD upscale) on a tiny model, into the gallery."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import assert_one_line_error, main_cli
from lanskap.config import Settings
from lanskap.errors import CorruptFileError, LanskapError, UnsafeFileError
from lanskap.upscale.loading import read_weights, run_tiled
from lanskap.upscale.rrdbnet import build
from lanskap.upscale.tiles import Blender, Box, grid, positions
from lanskap.upscale.upscalers import LATENT_MODES, find, installed, target_size


def _rdb_keys(prefix: str, nf: int, gc: int, old: bool) -> dict[str, torch.Tensor]:
    """One residual dense block's five convs, by hand: conv k takes nf + (k-1)*gc channels."""
    out = {}
    for k in range(1, 6):
        cin, cout = nf + (k - 1) * gc, (nf if k == 5 else gc)
        name = f"{prefix}conv{k}.0" if old else f"{prefix}conv{k}"
        out[f"{name}.weight"] = torch.randn(cout, cin, 3, 3) * 0.02
        out[f"{name}.bias"] = torch.zeros(cout)
    return out


def ultrasharp_state(nf: int = 8, gc: int = 4, nb: int = 2) -> dict[str, torch.Tensor]:
    """A 4x file in the original ESRGAN layout (how 4x-UltraSharp ships): model.0 … model.10."""
    sd: dict[str, torch.Tensor] = {"model.0.weight": torch.randn(nf, 3, 3, 3) * 0.1, "model.0.bias": torch.zeros(nf)}
    for b in range(nb):
        for r in (1, 2, 3):
            sd |= _rdb_keys(f"model.1.sub.{b}.RDB{r}.", nf, gc, old=True)
    sd[f"model.1.sub.{nb}.weight"], sd[f"model.1.sub.{nb}.bias"] = torch.randn(nf, nf, 3, 3) * 0.02, torch.zeros(nf)
    for i in (3, 6, 8):
        sd[f"model.{i}.weight"], sd[f"model.{i}.bias"] = torch.randn(nf, nf, 3, 3) * 0.05, torch.zeros(nf)
    sd["model.10.weight"], sd["model.10.bias"] = torch.randn(3, nf, 3, 3) * 0.05, torch.full((3,), 0.5)
    return sd


def realesrgan_x2_state(nf: int = 8, gc: int = 4, nb: int = 1) -> dict[str, torch.Tensor]:
    """RealESRGAN_x2plus's layout: pixel-unshuffle by 2 (12 input channels), two 2x upsamplings, params_ema."""
    sd: dict[str, torch.Tensor] = {
        "conv_first.weight": torch.randn(nf, 12, 3, 3) * 0.1,
        "conv_first.bias": torch.zeros(nf),
    }
    for b in range(nb):
        for r in (1, 2, 3):
            sd |= _rdb_keys(f"body.{b}.rdb{r}.", nf, gc, old=False)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.randn(nf, nf, 3, 3) * 0.05, torch.zeros(nf)
    sd["conv_last.weight"], sd["conv_last.bias"] = torch.randn(3, nf, 3, 3) * 0.05, torch.full((3,), 0.5)
    return sd


def test_rrdbnet_loads_both_layouts_and_reads_scale_from_the_shapes() -> None:
    x = torch.rand(1, 3, 20, 14)
    four = build(ultrasharp_state())
    assert four.scale == 4 and four(x).shape == (1, 3, 80, 56)
    two = build(realesrgan_x2_state())
    assert two.scale == 2 and two(x).shape == (1, 3, 40, 28)
    broken = ultrasharp_state()
    broken["model.1.sub.0.RDB1.conv1.0.weight"] = torch.randn(5, 8, 3, 3)
    with pytest.raises(CorruptFileError, match="don't fit"):
        build(broken)


def test_files_load_as_safetensors_or_weights_only_pth_and_nothing_else(tmp_path: Path) -> None:
    st = tmp_path / "4x-UltraSharp.safetensors"
    save_file(ultrasharp_state(), str(st))
    assert set(read_weights(st)) == set(ultrasharp_state())
    pth = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": realesrgan_x2_state()}, str(pth))
    from lanskap.upscale.rrdbnet import unwrap

    assert build(unwrap(read_weights(pth))).scale == 2
    evil = tmp_path / "evil.pth"
    torch.save({"params_ema": realesrgan_x2_state(), "hook": zipfile.ZipInfo("x")}, str(evil))  # needs real unpickling
    with pytest.raises(UnsafeFileError, match="more than weights"):
        read_weights(evil)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match="truncated"):
        read_weights(cut)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(CorruptFileError, match="neither"):
        read_weights(junk)


def test_tiled_model_run_matches_one_pass_away_from_the_seams() -> None:
    from lanskap.models.device import resolve_placement

    torch.manual_seed(0)
    net = build(ultrasharp_state(nb=1))
    image = Image.fromarray((np.random.default_rng(1).random((70, 90, 3)) * 255).astype(np.uint8))
    whole = run_tiled(net, image, resolve_placement("cpu", "fp32"), tile=1000)
    tiled = run_tiled(net, image, resolve_placement("cpu", "fp32"), tile=40, overlap=12)
    assert tiled.size == whole.size == (360, 280)
    diff = np.abs(np.asarray(tiled, np.int16) - np.asarray(whole, np.int16))
    assert np.median(diff) <= 2  # the same picture; only the tiles' borders lack a little context


def test_tiles_follow_a1111_and_blend_without_a_step() -> None:
    assert positions(1024, 512, 64) == [0, 256, 512]
    assert positions(300, 512, 64) == [0]
    boxes = grid(200, 100, 128, 100, 32)
    assert [(b.x, b.w) for b in boxes] == [(0, 128), (72, 128)] and [b.index for b in boxes] == [0, 1]
    blender = Blender(200, 100, boxes)
    blender.add(boxes[0], Image.new("RGB", (128, 100), (0, 0, 0)))
    blender.add(boxes[1], Image.new("RGB", (128, 100), (255, 255, 255)))
    row = np.asarray(blender.image(), np.int16)[50, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert np.abs(np.diff(row)).max() <= 255 / 56 + 1  # a ramp across the 56 px overlap, never a jump
    assert np.all(np.diff(row) >= 0)


def test_names_sizes_and_errors(isolated_home: Path) -> None:
    settings = Settings(home=isolated_home)
    assert [u.name for u in installed(settings)] == ["None", "Lanczos", "Nearest"]
    (isolated_home / "upscalers").mkdir(parents=True)
    save_file(ultrasharp_state(), str(isolated_home / "upscalers" / "4x-UltraSharp.safetensors"))
    (isolated_home / "upscalers" / "outside.pth").symlink_to("/etc/passwd")
    names = [u.name for u in installed(settings)]
    assert names == ["None", "Lanczos", "Nearest", "4x-UltraSharp"]
    assert find("lanczos", settings).name == "Lanczos"  # A1111 matches names case-insensitively
    assert find("Latent (bicubic antialiased)", settings, latent=True).kind == "latent"
    assert len(LATENT_MODES) == 6
    with pytest.raises(LanskapError, match="unknown upscaler 'Latent'"):
        find("Latent", settings)  # a latent mode is for hires fix only
    assert target_size(150, 100, 2) == (296, 200)  # A1111: each side rounded down to a multiple of 8


def test_cli_upscale_extras_and_its_errors(
    capsys: pytest.CaptureFixture[str], isolated_home: Path, tmp_path: Path
) -> None:
    import json

    (isolated_home / "upscalers").mkdir(parents=True)
    save_file(realesrgan_x2_state(), str(isolated_home / "upscalers" / "RealESRGAN_x2plus.safetensors"))
    src = tmp_path / "src.png"
    Image.fromarray((np.random.default_rng(2).random((48, 64, 3)) * 255).astype(np.uint8)).save(src)
    proc = main_cli(capsys, "upscale", str(src), "--scale", "3", "-u", "RealESRGAN_x2plus", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["sizes"] == [[192, 144]] and out["mode"] == "upscale"
    assert "Postprocess upscale by: 3, Postprocess upscaler: RealESRGAN_x2plus" in out["infotexts"][0]
    from lanskap.gallery import Gallery

    entry = Gallery(isolated_home).get(out["gallery_ids"][0])
    assert (
        entry.mode == "upscale" and entry.params["source_path"] == str(src) and entry.params["source_size"] == [64, 48]
    )
    proc = main_cli(capsys, "upscale", str(src), "--to", "100x100", "-u", "Nearest", "--json", "-q")
    assert json.loads(proc.stdout)["sizes"] == [[100, 100]]
    proc = main_cli(capsys, "upscale", str(src), "-u", "None", "--json", "-q")  # A1111: None leaves the size
    assert json.loads(proc.stdout)["sizes"] == [[64, 48]]
    before = sorted(p.name for p in (isolated_home / "outputs").rglob("*.png"))
    assert_one_line_error(
        main_cli(capsys, "upscale", str(src), "-u", "ESRGAN_9x"), "unknown upscaler", "RealESRGAN_x2plus"
    )
    assert_one_line_error(main_cli(capsys, "upscale", str(src), "--to", "100x8000"), "largest side allowed")
    (isolated_home / "upscalers" / "bad.pth").write_bytes(b"\x80\x04junk")
    assert_one_line_error(main_cli(capsys, "upscale", str(src), "-u", "bad"), "bad.pth")
    (isolated_home / "upscalers" / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    assert_one_line_error(main_cli(capsys, "upscale", str(src), "-u", "cut"), "cut.safetensors")
    assert sorted(p.name for p in (isolated_home / "outputs").rglob("*.png")) == before  # nothing written


def test_sd_upscale_on_a_tiny_model_is_reproducible_and_seamless(tiny_sd: Path, isolated_home: Path) -> None:
    from lanskap.gallery import Gallery
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest
    from lanskap.generation.upscale_params import TiledPass, UpscaleRequest
    from lanskap.jobs import JobControl
    from lanskap.jobs.upscale import UpscaleSource, check_upscale, run_upscale

    engine = Engine(settings=Settings(home=isolated_home, model=str(tiny_sd)))
    src = Image.new("RGB", (96, 64), (90, 140, 200))
    tiled = TiledPass(GenerationRequest("a misty valley", seed=11, steps=4, width=128, height=128), 0.5, 32)
    req = check_upscale(UpscaleRequest("Lanczos", 2, tiled=tiled, watermark=False), engine.settings)
    reports: list[tuple[int, int, str]] = []
    control = JobControl(report=lambda d, t, m: reports.append((d, t, m)))
    sources = [UpscaleSource(src, "src.png")]
    out = run_upscale(engine, sources, req, isolated_home / "out", gallery=Gallery(isolated_home), control=control)
    again = run_upscale(engine, [UpscaleSource(src, "src.png")], req, isolated_home / "out")
    assert out.images[0].size == (192, 128)
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(again.images[0]))  # tile k from seed + k
    assert reports[-1][0] == reports[-1][1] == 2 * 2 and "tile 2 of 2" in reports[-1][2]  # tiles x steps
    text = out.infotexts[0]
    assert "Seed: 11" in text and "Size: 128x128" in text and "SD upscale overlap: 32" in text
    assert "SD upscale upscaler: Lanczos" in text and "Denoising strength: 0.5" in text
    entry = out.entries[0]
    assert entry is not None and entry.mode == "upscale" and entry.seed == 11 and entry.prompt == "a misty valley"
    # The tiles differ (each has its own seed), yet no column at a tile's edge jumps more than the picture does.
    arr = np.asarray(out.images[0], np.float32).mean(axis=2)
    cols = np.abs(np.diff(arr, axis=1)).mean(axis=0)
    boxes = grid(192, 128, 128, 128, 32)
    assert len(boxes) == 2
    edges = [b.x + b.w - 1 for b in boxes[:-1]] + [b.x - 1 for b in boxes[1:]]
    assert max(cols[e] for e in edges) <= np.percentile(cols, 95) * 1.5


@pytest.mark.slow
def test_sd_upscale_to_4096_stays_within_the_tile(tiny_sd: Path, isolated_home: Path) -> None:
    import resource

    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest
    from lanskap.generation.upscale_params import TiledPass, UpscaleRequest
    from lanskap.jobs.upscale import UpscaleSource, run_upscale

    engine = Engine(settings=Settings(home=isolated_home, model=str(tiny_sd)))
    tiled = TiledPass(GenerationRequest("hills", seed=1, steps=2, width=512, height=512), 0.5, 64)
    out = run_upscale(
        engine,
        [UpscaleSource(Image.new("RGB", (1024, 1024), (50, 90, 60)))],
        UpscaleRequest("Lanczos", 4, tiled=tiled),
        isolated_home / "out",
    )
    assert out.images[0].size == (4096, 4096)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 12 * 1024 * 1024  # KiB: well under 24 GiB


def test_box_scaling() -> None:
    assert Box(3, 4, 10, 12, 7).scaled(4) == Box(12, 16, 40, 48, 7)


def test_sd_x4_from_a_tiny_upscaler_folder_and_a_clear_error_without_one(
    capsys: pytest.CaptureFixture[str], isolated_home: Path, tmp_path: Path
) -> None:
    import json

    src = tmp_path / "small.png"
    Image.fromarray((np.random.default_rng(3).random((24, 40, 3)) * 255).astype(np.uint8)).save(src)
    assert_one_line_error(main_cli(capsys, "upscale", str(src), "-u", "SD x4"), "SD x4 upscaler", "sd-x4")
    folder = isolated_home / "upscalers" / "sd-x4"
    proc = main_cli(capsys, "models", "make-tiny", str(folder), "--kind", "sd-upscale")
    assert proc.returncode == 0, proc.stderr
    assert "SD x4" in [u.name for u in installed(Settings(home=isolated_home))]
    proc = main_cli(capsys, "upscale", str(src), "-u", "SD x4", "--scale", "4", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["sizes"] == [[160, 96]] and "Postprocess upscaler: SD x4" in out["infotexts"][0]
