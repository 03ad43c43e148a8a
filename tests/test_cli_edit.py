"""img2img, inpaint, outpaint and watermark check as real commands (issue #3, points 3-7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, main_cli, run_cli

FAST = ["--steps", "3", "--quiet", "--json"]


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    pic = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((128, 96), Image.Resampling.BICUBIC)
    mask = Image.new("L", (128, 96), 0)
    mask.paste(255, (48, 32, 80, 64))
    paths = {
        "pic": tmp_path / "pic.png",
        "mask": tmp_path / "mask.png",
        "small_mask": tmp_path / "small-mask.png",
        "text": tmp_path / "notes.png",
    }
    pic.save(paths["pic"])
    mask.save(paths["mask"])
    mask.resize((64, 64)).save(paths["small_mask"])
    paths["text"].write_text("not a picture")
    return paths


def test_img2img_command(
    tiny_sd: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = main_cli(  # in this process; the outpaint test below runs the real command
        capsys,
        "img2img", str(files["pic"]), "a castle, (mist:1.2)", "--model", str(tiny_sd), "--strength", "0.6",
        "--resize-mode", "crop-and-resize", "-W", "64", "-H", "64", "--seed", "3", "--out", str(tmp_path / "o"), *FAST,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["mode"] == "img2img" and summary["size"] == [64, 64]
    assert "Denoising strength: 0.6" in summary["infotexts"][0]
    assert Image.open(summary["images"][0]).size == (64, 64)


def test_inpaint_command_keeps_the_unmasked_pixels(
    tiny_sd: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = main_cli(
        capsys,
        "inpaint", str(files["pic"]), str(files["mask"]), "a tower", "--model", str(tiny_sd),
        "--mask-blur", "2", "--fill", "fill", "--out", str(tmp_path / "o"), *FAST,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = np.asarray(Image.open(json.loads(proc.stdout)["images"][0]).convert("RGB")).astype(int)
    src = np.asarray(Image.open(files["pic"]).convert("RGB")).astype(int)
    assert out.shape == src.shape
    assert np.array_equal(out[:20], src[:20]) and np.array_equal(out[:, :36], src[:, :36])
    assert np.abs(out[36:60, 52:76] - src[36:60, 52:76]).mean() > 5


def test_outpaint_command(tiny_sd: Path, files: dict[str, Path], tmp_path: Path, isolated_home: Path) -> None:
    from lanskap.gallery import Gallery
    from lanskap.generation.replay import replay_from_infotext

    proc = run_cli(
        "outpaint", str(files["pic"]), "more mountains", "--model", str(tiny_sd), "--right", "64", "--up", "32",
        "--out", str(tmp_path / "o"), *FAST,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    img = Image.open(summary["images"][0]).convert("RGB")
    assert img.size == (128 + 64, 96 + 32)
    # filed and described as an outpaint (#32 point 6), though it runs as an inpaint
    assert summary["mode"] == "outpaint" and "Outpaint: 0 64 32 0" in summary["infotexts"][0]
    (entry,), _ = Gallery(isolated_home).query(mode="outpaint")
    assert entry.params["mask"]["outpaint"] == [0, 64, 32, 0]
    assert replay_from_infotext(summary["infotexts"][0]).source_mode == "outpaint"
    src = np.asarray(Image.open(files["pic"]).convert("RGB")).astype(int)
    assert np.array_equal(np.asarray(img).astype(int)[32 + 40 :, :60], src[40:, :60])


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["inpaint", "{pic}", "{small_mask}", "x"], ["mask is 64x64", "same size"]),
        (["img2img", "{pic}", "x", "--strength", "1.5"], ["strength", "0.0 and 1.0"]),
        (["img2img", "{text}", "x"], ["notes.png", "not an image"]),
        (["inpaint", "{pic}", "{text}", "x"], ["mask", "not an image"]),
        (["img2img", "{pic}", "x", "--resize-mode", "zoom"], ["resize mode"]),
        (["outpaint", "{pic}", "x"], ["at least one margin", "(--left"]),
        (["generate", "a castle <lora:no-such-style:0.6>"], ["no-such-style", "not found"]),
        (["img2img", "{pic}", "a castle <lora:no-such-style>"], ["no-such-style", "not found"]),
    ],
)
def test_errors_are_one_line(
    args: list[str], needles: list[str], tiny_sd: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """What each command says (in this process; the commands' real processes run in the tests above)."""
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    out = files["pic"].parent / "should-not-exist"
    proc = main_cli(capsys, *argv, "--model", str(tiny_sd), "--out", str(out), "--steps", "2")
    assert_one_line_error(proc, *needles)
    assert not out.exists() or not any(out.iterdir())


def test_watermark_check_exit_codes(tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = main_cli(
        capsys,
        "generate", "a castle", "--model", str(tiny_sd), "-W", "256", "-H", "256", "--seed", "1",
        "--out", str(tmp_path / "o"), *FAST,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    image = json.loads(made.stdout)["images"][0]
    yes = main_cli(capsys, "watermark", "check", image)
    assert yes.returncode == 0 and "watermark found (SDV2)" in yes.stdout
    plain = tmp_path / "plain.png"
    Image.new("RGB", (300, 300), (90, 120, 200)).save(plain)
    no = main_cli(capsys, "watermark", "check", str(plain), "--json")
    assert no.returncode == 1 and json.loads(no.stdout)["watermark"] is False
    bad = main_cli(capsys, "watermark", "check", str(tmp_path / "missing.png"))
    assert_one_line_error(bad, "not found")
