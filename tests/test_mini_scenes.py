"""lanskap-mini groundwork (issue #10): the scene generator, its captions and the attribute detector."""

from __future__ import annotations

import numpy as np

from lanskap.mini.detect import detect, requested, score
from lanskap.mini.scenes import TERRAINS, caption, parse_prompt, render, sample_scene


def test_scenes_are_reproducible_and_varied() -> None:
    a, b = render(sample_scene(3)), render(sample_scene(3))
    assert np.array_equal(np.asarray(a), np.asarray(b)) and a.size == (128, 128)
    assert render(sample_scene(3), 256).size == (256, 256)
    scenes = [sample_scene(s) for s in range(300)]
    assert {s.terrain for s in scenes} == set(TERRAINS)
    assert {s.celestial for s in scenes} >= {"sun", "moon", "two moons", "stars", "aurora", None}
    assert any(s.mist for s in scenes) and any(s.islands for s in scenes)


def test_captions_vary_and_read_back_as_the_scene() -> None:
    scene = sample_scene(11)
    phrasings = {caption(scene, seed) for seed in range(12)}
    assert len(phrasings) >= 6, phrasings
    for seed in range(200):
        s = sample_scene(seed)
        text = caption(s)
        parsed = parse_prompt(text)
        want = {k: v for k, v in s.attributes().items() if k not in ("mist", "islands") and v is not None}
        assert parsed == want, (text, parsed, want)


def test_short_captions_keep_the_terrain_and_the_sky() -> None:
    """A short caption is a quick prompt: the terrain, at most one other thing, the sky, nothing false."""
    lengths = set()
    for seed in range(200):
        s = sample_scene(seed)
        text = caption(s, seed, short=True)
        parsed = parse_prompt(text)
        assert parsed["terrain"] == s.terrain and parsed["sky"] == s.sky, (text, parsed)
        assert all(s.attributes()[k] == v for k, v in parsed.items()), (text, parsed)
        lengths.add(len(parsed))
        assert len(parsed) <= 3 and "mist" not in text and "fog" not in text, text
    assert lengths == {2, 3}


def test_detector_reads_rendered_scenes_back() -> None:
    hit = asked = 0
    false_alarms = 0
    for seed in range(20_000, 20_200):
        scene = sample_scene(seed)
        image = render(scene)
        h, n = score(image, scene.attributes())
        hit, asked = hit + h, asked + n
        want, seen = requested(scene.attributes()), detect(image)
        false_alarms += sum(bool(seen[k]) for k in ("water", "snow", "castle", "moons") if k not in want)
    assert hit / asked >= 0.98, hit / asked
    assert false_alarms <= 4, false_alarms


def test_detector_is_not_fooled_by_noise() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    from PIL import Image

    seen = detect(Image.fromarray(noise))
    assert not seen["castle"] and not seen["snow"] and seen["moons"] == 0
