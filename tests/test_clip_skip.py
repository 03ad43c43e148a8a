"""Clip skip and the eta noise seed delta (A1111's ENSD), from the engine to the infotext and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, main_cli
from lanskap.errors import LanskapError
from lanskap.generation.params import GenerationRequest
from lanskap.generation.replay import replay_from_infotext


def _pixels(engine, **kw) -> tuple[np.ndarray, str]:  # type: ignore[no-untyped-def]
    base = dict(prompt="a castle on a hill", seed=11, steps=3, width=64, height=64, watermark=False)
    result = engine.generate(GenerationRequest(**{**base, **kw}))
    return np.asarray(result.images[0]).astype(int), result.infotexts[0]


def test_clip_skip_is_a_shorter_text_encoder(engine) -> None:  # type: ignore[no-untyped-def]
    """Clip skip N equals the same text encoder with its last N-1 layers removed (final norm kept).

    That is how SD 2.x's "penultimate layer" text encoder is built, and what A1111's
    ``encode_with_transformers`` computes. (diffusers' own ``clip_skip`` reaches for
    ``text_encoder.text_model``, which transformers 5 no longer has.)
    """
    import copy

    from lanskap.prompts.encode import encode_rows

    pipe = engine.load().pipe
    ids = pipe.tokenizer(["a castle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    shorter = copy.deepcopy(pipe.text_encoder)
    inner = getattr(shorter, "text_model", shorter)
    inner.encoder.layers = inner.encoder.layers[:-1]
    shorter.config.num_hidden_layers -= 1
    with torch.no_grad():
        skipped = encode_rows(pipe.text_encoder, ids, clip_skip=2)
        reference = shorter(ids)[0]
        plain = encode_rows(pipe.text_encoder, ids, clip_skip=1)
        stock, _ = pipe.encode_prompt("a castle", "cpu", 1, False)
    assert torch.allclose(skipped, reference, atol=1e-5)
    assert torch.allclose(plain, stock, atol=1e-6), "clip skip 1 is diffusers' plain encoding"
    assert not torch.allclose(skipped, plain, atol=1e-3), "clip skip 2 changes the conditioning"


def test_clip_skip_changes_the_picture_and_is_recorded(engine) -> None:  # type: ignore[no-untyped-def]
    one, text_one = _pixels(engine)
    two, text_two = _pixels(engine, clip_skip=2)
    assert np.abs(one - two).max() > 0
    assert "Clip skip" not in text_one, "A1111 writes it only when it skips"
    assert "Clip skip: 2" in text_two
    replay = replay_from_infotext(text_two)
    assert replay.fields["clip_skip"] == 2
    again, _ = _pixels(engine, **{k: v for k, v in replay.fields.items() if k != "prompt"})
    assert np.array_equal(again, two), "the infotext remakes the same pixels"


def test_clip_skip_bounds(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LanskapError, match="clip skip must be between 1 and 12"):
        GenerationRequest("x", clip_skip=0).validate()
    layers = engine.load().pipe.text_encoder.config.num_hidden_layers
    with pytest.raises(LanskapError, match="text-encoder layers"):
        _pixels(engine, clip_skip=layers + 1)


def test_ensd_moves_ancestral_noise_only(engine) -> None:  # type: ignore[no-untyped-def]
    """ENSD reseeds the sampler's per-step noise, so it changes Euler a but not DPM++ 2M."""
    a0, _ = _pixels(engine, scheduler="Euler a")
    a1, text = _pixels(engine, scheduler="Euler a", ensd=31337)
    assert np.abs(a0 - a1).max() > 0
    assert "ENSD: 31337" in text and replay_from_infotext(text).fields["ensd"] == 31337
    d0, _ = _pixels(engine, scheduler="DPM++ 2M")
    d1, _ = _pixels(engine, scheduler="DPM++ 2M", ensd=31337)
    assert np.array_equal(d0, d1), "a deterministic sampler draws no noise after the first"


def test_cli_clip_skip_and_from(
    tiny_sd: Path, tmp_path: Path, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ("--model", str(tiny_sd), "-W", "64", "-H", "64", "--steps", "2", "--no-watermark", "-q")
    proc = main_cli(capsys, "generate", "a lake", "--seed", "4", "--clip-skip", "2", "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    (first,) = out.glob("*.png")
    proc = main_cli(capsys, "generate", "--from", str(first), "--out", str(tmp_path / "again"), *args)
    assert proc.returncode == 0, proc.stderr
    (second,) = (tmp_path / "again").glob("*.png")
    from PIL import Image

    with Image.open(first) as a, Image.open(second) as b:
        assert "Clip skip: 2" in b.info["parameters"]
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert_one_line_error(main_cli(capsys, "generate", "x", "--clip-skip", "0", *args), "clip skip")
