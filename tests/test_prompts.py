"""Long prompts and A1111 attention syntax (issue #3, points 1-2)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lanskap.generation.params import GenerationRequest
from lanskap.prompts.attention import parse_attention, strip_attention
from lanskap.prompts.encode import CHUNK, count_tokens, encode_prompt_pair, encode_tokenized, tokenize_prompt

SMALL = {"steps": 3, "width": 64, "height": 64, "seed": 11}


def px(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(result.images[0]).astype(np.int16)


# -- the parser, against A1111's own documented examples -------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("((word))", [("word", pytest.approx(1.21))]),
        ("(word:1.3)", [("word", 1.3)]),
        ("[word]", [("word", pytest.approx(1 / 1.1))]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", pytest.approx(1.573)),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", pytest.approx(1.4641)),
                (".", 1.1),
            ],
        ),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_parse_attention_matches_a1111(text: str, expected: list) -> None:
    assert parse_attention(text) == expected


def test_malformed_syntax_never_raises() -> None:
    rng = random.Random(0)
    alphabet = ["(", ")", "[", "]", ":", "\\", "1.2", "a", " ", "BREAK", ".", "-", ":1.5)", "<", ">"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        runs = parse_attention(text)
        assert runs, text
        assert all(isinstance(t, str) and isinstance(w, float) for t, w in runs)
    assert strip_attention("a (castle:1.4) BREAK [mist]") == "a castle mist"


# -- chunking -------------------------------------------------------------------------------------
def test_short_unweighted_prompt_tokenizes_like_diffusers(engine) -> None:  # type: ignore[no-untyped-def]
    tok = engine.model.pipe.tokenizer
    text = "a majestic castle on a misty mountain, sunset"
    ours = tokenize_prompt(tok, text)
    stock = tok(text, padding="max_length", max_length=77, truncation=True).input_ids
    assert ours.ids == [stock]
    assert ours.token_count == len(tok(text, add_special_tokens=False).input_ids)


def test_long_prompt_is_split_into_chunks_with_bos_and_eos(engine) -> None:  # type: ignore[no-untyped-def]
    tok = engine.model.pipe.tokenizer
    text = " ".join(["castle"] * 100)
    t = tokenize_prompt(tok, text)
    assert t.token_count == 100 and t.chunks == 2
    for row in t.ids:
        assert len(row) == 77 and row[0] == tok.bos_token_id
    assert t.ids[0][76] == tok.eos_token_id  # a full chunk: 75 tokens then EOS
    assert t.ids[1][26] == tok.eos_token_id and set(t.ids[1][27:]) == {tok.pad_token_id}
    assert count_tokens(tok, text) == 100


def test_break_and_comma_backtrack_start_new_chunks(engine) -> None:  # type: ignore[no-untyped-def]
    tok = engine.model.pipe.tokenizer
    assert tokenize_prompt(tok, "castle BREAK mist").chunks == 2
    # 70 words, a comma, then 10 words: the last phrase moves whole into chunk 2 instead of being cut at 75.
    text = " ".join(["castle"] * 70) + ", " + " ".join(["mist"] * 10)
    t = tokenize_prompt(tok, text)
    mist = tok.convert_tokens_to_ids("mist</w>")
    assert t.chunks == 2
    assert mist not in t.ids[0] and t.ids[1][1:11] == [mist] * 10


def test_unweighted_embeddings_equal_diffusers_encode_prompt(engine) -> None:  # type: ignore[no-untyped-def]
    pipe = engine.model.pipe
    text = "a castle on a hill, mist"
    stock, _ = pipe.encode_prompt(text, pipe.device, 1, False)
    ours = encode_tokenized(pipe.text_encoder, tokenize_prompt(pipe.tokenizer, text))
    assert torch.equal(ours, stock)


def test_weights_follow_a1111_emphasis(engine) -> None:  # type: ignore[no-untyped-def]
    """Weighted token scaled, then the chunk's mean restored: A1111's "Original" emphasis, computed here by hand."""
    pipe = engine.model.pipe
    plain_tok = tokenize_prompt(pipe.tokenizer, "a castle on a hill")
    heavy_tok = tokenize_prompt(pipe.tokenizer, "a (castle:1.5) on a hill")
    assert heavy_tok.ids == plain_tok.ids
    assert heavy_tok.weights[0][:4] == [1.0, 1.0, 1.5, 1.0]
    z = encode_tokenized(pipe.text_encoder, plain_tok)
    w = torch.ones(1, 77, 1)
    w[0, 2] = 1.5
    expected = z * w * (z.mean() / (z * w).mean())
    assert torch.allclose(encode_tokenized(pipe.text_encoder, heavy_tok), expected, atol=1e-6)


def test_prompt_and_negative_are_padded_to_the_same_length(engine) -> None:  # type: ignore[no-untyped-def]
    pipe = engine.model.pipe
    long = " ".join(["mountain"] * 160)
    pair = encode_prompt_pair(pipe.tokenizer, pipe.text_encoder, long, "blurry")
    assert pair.chunks == 3 and pair.cond.shape == pair.uncond.shape == (1, 3 * 77, 32)
    pair = encode_prompt_pair(pipe.tokenizer, pipe.text_encoder, "castle", long)
    assert pair.cond.shape == pair.uncond.shape == (1, 3 * 77, 32)
    empty = encode_tokenized(pipe.text_encoder, tokenize_prompt(pipe.tokenizer, ""))
    assert torch.equal(pair.cond[:, 77:154], empty[0:1])  # padding is the empty prompt's encoding


# -- through the engine ---------------------------------------------------------------------------
def test_a_word_after_token_77_changes_the_image(engine, tiny_sd) -> None:  # type: ignore[no-untyped-def]
    head = " ".join(["castle"] * 80)
    a = engine.generate(GenerationRequest(f"{head} mist", **SMALL))
    b = engine.generate(GenerationRequest(f"{head} sunset", **SMALL))
    assert np.abs(px(a) - px(b)).max() > 0, "words past the 77-token window must count"
    assert any("2 chunks" in n for n in a.notices)
    assert a.infotexts[0].startswith(f"{head} mist\n"), "the infotext keeps the full prompt"

    # The stock pipeline truncates: the same two prompts give identical pixels there.
    from diffusers import StableDiffusionPipeline

    stock = StableDiffusionPipeline.from_pretrained(str(tiny_sd))
    stock.set_progress_bar_config(disable=True)
    outs = [
        np.asarray(
            stock(f"{head} {w}", num_inference_steps=2, height=64, width=64, generator=torch.manual_seed(1)).images[0]
        )
        for w in ("mist", "sunset")
    ]
    assert np.array_equal(outs[0], outs[1])


def test_weights_change_the_image_and_weight_one_does_not(engine) -> None:  # type: ignore[no-untyped-def]
    plain = engine.generate(GenerationRequest("a castle on a hill", **SMALL))
    same = engine.generate(GenerationRequest("a (castle:1.0) on a hill", **SMALL))
    heavy = engine.generate(GenerationRequest("a (castle:1.6) on a hill", **SMALL))
    light = engine.generate(GenerationRequest("a [[castle]] on a hill", **SMALL))
    assert np.array_equal(px(plain), px(same))
    assert np.abs(px(plain) - px(heavy)).max() > 0
    assert np.abs(px(plain) - px(light)).max() > 0


def test_short_prompt_gives_the_stock_pipelines_pixels(engine, tiny_sd) -> None:  # type: ignore[no-untyped-def]
    """Our encoder is a superset: without weights or length, nothing changes versus diffusers."""
    from diffusers import StableDiffusionPipeline

    from lanskap.generation.schedulers import build_scheduler, get_sampler

    full = {"cache_interval": 0, "token_merging": 0}  # stock's arithmetic: no step-changing lever
    r = engine.generate(GenerationRequest("a castle", scheduler="DDIM", watermark=False, **full, **SMALL))
    stock = StableDiffusionPipeline.from_pretrained(str(tiny_sd))
    stock.scheduler = build_scheduler(get_sampler("DDIM"), stock.scheduler.config)
    stock.set_progress_bar_config(disable=True)
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(11))
    img = stock("a castle", num_inference_steps=3, height=64, width=64, latents=latents).images[0]
    assert np.abs(px(r) - np.asarray(img).astype(np.int16)).max() <= 1


def test_chunk_constant() -> None:
    assert CHUNK == 75
