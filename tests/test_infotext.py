"""A1111 infotext: layout, quoting, parsing, PNG/JPEG/WebP storage (issue #2, point 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lanskap.errors import LanskapError
from lanskap.generation.infotext import build_infotext, parse_infotext, parse_lora_hashes
from lanskap.generation.output import read_infotext, save_image

PARAMS = {
    "Steps": 25,
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": "7.5",
    "Seed": 777,
    "Size": "768x512",
    "Model hash": "ad2a33c361",
    "Model": "v2-1_768-ema-pruned",
    "Lora hashes": "mist-style: 0123456789ab, sunset: ba9876543210",
    "Version": "lanskap 0.1.0",
}


def test_layout_and_quoting_match_a1111() -> None:
    text = build_infotext("a castle, in the mist", "blurry, cropped", dict(reversed(PARAMS.items())))
    assert text == (
        "a castle, in the mist\n"
        "Negative prompt: blurry, cropped\n"
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 777, Size: 768x512, "
        "Model hash: ad2a33c361, Model: v2-1_768-ema-pruned, "
        'Lora hashes: "mist-style: 0123456789ab, sunset: ba9876543210", Version: lanskap 0.1.0'
    )


def test_no_negative_line_when_empty() -> None:
    text = build_infotext("sea", "", {"Steps": 1, "Seed": 2, "Size": "64x64"})
    assert text == "sea\nSteps: 1, Seed: 2, Size: 64x64"


def test_parse_roundtrip_with_multiline_prompt() -> None:
    prompt = "line one, with comma\nline two: colon"
    text = build_infotext(prompt, "bad\nworse", PARAMS)
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == prompt
    assert parsed["Negative prompt"] == "bad\nworse"
    assert parsed["Seed"] == "777" and parsed["Schedule type"] == "Karras"
    assert parse_lora_hashes(parsed["Lora hashes"]) == {"mist-style": "0123456789ab", "sunset": "ba9876543210"}


def test_parse_old_a1111_sampler_with_karras_suffix() -> None:
    parsed = parse_infotext("x\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512")
    assert parsed["Sampler"] == "DPM++ 2M" and parsed["Schedule type"] == "Karras"


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_metadata_survives_every_format(tmp_path: Path, fmt: str) -> None:
    text = build_infotext("a village, at dawn — ünïcode", "", PARAMS)
    img = Image.new("RGB", (64, 48), (10, 120, 200))
    path = save_image(img, tmp_path, 777, text, fmt)
    assert path.name == f"00001-777.{fmt}"
    assert read_infotext(path) == text
    with Image.open(path) as back:
        assert back.size == (64, 48)


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_exif_user_comment_reads_like_a1111(tmp_path: Path, fmt: str) -> None:
    """A1111 reads JPEG/WebP parameters with piexif's UserComment.load; so must ours."""
    import piexif
    import piexif.helper

    text = build_infotext("misty peaks", "blurry", PARAMS)
    path = save_image(Image.new("RGB", (32, 32)), tmp_path, 1, text, fmt)
    with Image.open(path) as img:
        exif = piexif.load(img.info["exif"])
    comment = exif["Exif"][piexif.ExifIFD.UserComment]
    assert piexif.helper.UserComment.load(comment) == text


def test_png_parameters_chunk(tmp_path: Path) -> None:
    path = save_image(Image.new("RGB", (16, 16)), tmp_path, 5, "p\nSteps: 1, Seed: 5, Size: 16x16", "png")
    with Image.open(path) as img:
        assert img.text["parameters"] == "p\nSteps: 1, Seed: 5, Size: 16x16"


def test_save_never_overwrites(tmp_path: Path) -> None:
    a = save_image(Image.new("RGB", (8, 8)), tmp_path, 3, None, "png")
    b = save_image(Image.new("RGB", (8, 8)), tmp_path, 3, None, "png")
    assert a != b and a.exists() and b.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp files left behind"


def test_read_infotext_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LanskapError, match="not a readable image"):
        read_infotext(tmp_path / "notes.txt")
    with pytest.raises(LanskapError, match="not found"):
        read_infotext(tmp_path / "missing.png")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert read_infotext(plain) is None
