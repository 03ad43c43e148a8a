"""A1111's prompt editing ``[from:to:when]`` and alternation ``[a|b]``: the prompt changes while sampling."""

from __future__ import annotations

import numpy as np
import pytest

from lanskap.generation.params import GenerationRequest
from lanskap.prompts.schedule import prompt_schedule


@pytest.mark.parametrize(
    ("prompt", "steps", "expected"),
    [
        # A1111's own examples (modules/prompt_parser.py docstrings)
        ("test", 10, [(10, "test")]),
        ("a [b:3]", 10, [(3, "a "), (10, "a b")]),
        ("a [b: 3]", 10, [(3, "a "), (10, "a b")]),
        ("a [[[b]]:2]", 10, [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", 10, [(3, ""), (10, "(a:2)")]),
        ("a [b : c : 1] d", 10, [(1, "a b  d"), (10, "a  c  d")]),
        ("a[b:[c:d:2]:1]e", 10, [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("a [unbalanced", 10, [(10, "a [unbalanced")]),
        ("a [b:.5] c", 10, [(5, "a  c"), (10, "a b c")]),
        ("((a][:b:c [d:3]", 10, [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("[a|(b:1.1)]", 3, [(1, "a"), (2, "(b:1.1)"), (3, "a")]),
        ("[fe|]male", 3, [(1, "female"), (2, "male"), (3, "female")]),
        ("[fe|||]male", 4, [(1, "female"), (2, "male"), (3, "male"), (4, "male")]),
        # a step past the end never switches; step 0 switches at once
        ("[castle:lake:50]", 20, [(20, "castle")]),
        ("[castle:lake:0]", 20, [(20, "lake")]),
        # weights, de-emphasis and BREAK are kept for the attention parser
        (
            "(castle [day:night:5]:1.2) BREAK [sky]",
            10,
            [(5, "(castle day:1.2) BREAK [sky]"), (10, "(castle night:1.2) BREAK [sky]")],
        ),
        ("a | b", 10, [(10, "a | b")]),  # a bare bar does not parse: the prompt is used as written
    ],
)
def test_schedules_match_a1111(prompt: str, steps: int, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedule(prompt, steps) == expected


def _pixels(engine, prompt: str, negative: str = "", **kw) -> tuple[np.ndarray, object]:  # type: ignore[no-untyped-def]
    req = GenerationRequest(
        prompt, negative_prompt=negative, seed=8, steps=4, width=64, height=64, watermark=False, **kw
    )
    result = engine.generate(req)
    return np.asarray(result.images[0]).astype(int), result


def test_prompt_editing_switches_the_conditioning_mid_sampling(engine) -> None:  # type: ignore[no-untyped-def]
    castle, _ = _pixels(engine, "castle")
    lake, _ = _pixels(engine, "lake")
    assert np.abs(castle - lake).max() > 0
    never, _ = _pixels(engine, "[castle:lake:4]")  # switches after the last step
    assert np.array_equal(never, castle)
    at_once, _ = _pixels(engine, "[castle:lake:0]")
    assert np.array_equal(at_once, lake)
    half, result = _pixels(engine, "[castle:lake:2]")
    assert np.abs(half - castle).max() > 0 and np.abs(half - lake).max() > 0
    assert any("the prompt takes 2 form(s) and the negative prompt 1" in n for n in result.notices)
    assert result.infotexts[0].startswith("[castle:lake:2]\n"), "the infotext keeps the prompt as written"
    # A fraction of the steps: 0.5 of 4 is step 2.
    fraction, _ = _pixels(engine, "[castle:lake:0.5]")
    assert np.array_equal(fraction, half)


def test_alternation_and_negative_prompt_editing(engine) -> None:  # type: ignore[no-untyped-def]
    plain, _ = _pixels(engine, "castle", "fog")
    alt, result = _pixels(engine, "[castle|lake]", "fog")
    assert np.abs(alt - plain).max() > 0
    assert any("the prompt takes 2 form(s)" in n for n in result.notices), "each distinct text is encoded once"
    edited, result = _pixels(engine, "castle", "[fog:rain:2]")
    assert np.abs(edited - plain).max() > 0 and any("prompt editing" in n for n in result.notices)
    # Without guidance the pipeline batches the conditioning alone; editing still applies.
    g1, _ = _pixels(engine, "[castle:lake:2]", guidance=1.0)
    g1_castle, _ = _pixels(engine, "castle", guidance=1.0)
    assert np.abs(g1 - g1_castle).max() > 0


def test_a_static_prompt_is_unchanged(engine) -> None:  # type: ignore[no-untyped-def]
    """Brackets that are not edits ([word], (word:1.2), escapes) keep today's pixels exactly."""
    prompt = r"a [misty] (castle:1.2) \[literal\] BREAK valley"
    from lanskap.prompts.encode import encode_prompt_pair

    pipe = engine.load().pipe
    pair = encode_prompt_pair(pipe.tokenizer, pipe.text_encoder, prompt, "blurry")
    sched = engine.encode_schedule(prompt, "blurry", 4)
    assert sched.static
    cond, uncond = sched.at(0)
    assert np.array_equal(cond.numpy(), pair.cond.numpy()) and np.array_equal(uncond.numpy(), pair.uncond.numpy())
