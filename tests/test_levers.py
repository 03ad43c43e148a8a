"""Step-changing speed levers (issue #37): feature caching, token merging, the speed levels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, main_cli
from lanskap.errors import LanskapError
from lanskap.generation import levers
from lanskap.generation.engine import Engine
from lanskap.generation.panorama import Panorama
from lanskap.generation.params import GenerationRequest
from lanskap.generation.replay import replay_from_infotext

SMALL = {"steps": 4, "width": 64, "height": 64, "seed": 3, "watermark": False, "cache_start": 0.0}


def _count_calls(module: torch.nn.Module) -> list[int]:
    """How often ``module`` really runs (a hook on its first resnet: the block's own forward may be cached)."""
    calls = [0]
    child = module.resnets[0]  # type: ignore[index]
    child.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_feature_cache_runs_deep_blocks_on_full_steps_only_and_is_recorded(engine: Engine) -> None:
    unet = engine.load().pipe.unet
    deep, shallow = _count_calls(unet.mid_block), _count_calls(unet.up_blocks[-1])
    full = engine.generate(GenerationRequest("misty castle", cache_interval=0, **SMALL))
    assert deep[0] == shallow[0] == 4
    deep[0] = shallow[0] = 0
    cached = engine.generate(GenerationRequest("misty castle", cache_interval=3, **SMALL))
    # Steps 0 and 3 (the last) run in full; the shallow path runs on all four.
    assert (deep[0], shallow[0]) == (2, 4)
    a, b = (np.asarray(r.images[0], np.float64) for r in (full, cached))
    assert 0 < np.abs(a - b).mean() < 40, "close to full compute, not the same arithmetic"
    assert "Cache interval: 3" in cached.infotexts[0] and "Cache interval" not in full.infotexts[0]
    again = engine.generate(GenerationRequest(**replay_from_infotext(cached.infotexts[0]).fields))
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(cached.images[0])), "--from remakes it"
    assert not any(hasattr(b, "forward") and "forward" in b.__dict__ for b in unet.modules()), "blocks restored"


def test_feature_cache_keys_each_panorama_window_apart(engine: Engine) -> None:
    """Several UNet calls a step (one per window) each reuse their own features, not a neighbour's."""
    unet = engine.load().pipe.unet
    deep = _count_calls(unet.mid_block)
    pano = Panorama(window=64, stride=32, batch=1)
    req = GenerationRequest("valley", panorama=pano, **{**SMALL, "width": 128, "steps": 4, "cache_interval": 3})
    result = engine.generate(req)
    # Three windows of 64 px across 128 px; full steps are 0 and 3 (the last).
    assert deep[0] == 3 * 2
    plain = engine.generate(replace(req, cache_interval=0))
    a, b = (np.asarray(r.images[0], np.float64) for r in (plain, result))
    assert np.abs(a - b).mean() < 40


def test_levers_work_with_loras_img2img_and_inpainting(engine: Engine, tiny_lora: Path) -> None:
    from PIL import Image

    from lanskap.generation.params import InitImage, InpaintMask, LoraSpec

    unet = engine.load().pipe.unet
    deep = _count_calls(unet.mid_block)
    picture = Image.new("RGB", (64, 64), (90, 120, 160))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    levers_on = {**SMALL, "steps": 8, "cache_interval": 2, "token_merging": 0.3, "token_merging_downsample": 2}
    for extra in ({"init": InitImage(picture, 1.0)}, {"init": InitImage(picture, 1.0), "mask": InpaintMask(mask)}):
        deep[0] = 0
        req = GenerationRequest("misty castle", loras=(LoraSpec(str(tiny_lora), 0.8),), **levers_on, **extra)
        result = engine.generate(req)
        assert deep[0] == 5, "steps 0, 2, 4, 6 and the last in full"
        text = result.infotexts[0]
        assert "Cache interval: 2" in text and "Token merging ratio: 0.3" in text and "Lora hashes" in text


def test_token_merging_merges_self_attention_at_the_chosen_levels(engine: Engine) -> None:
    unet = engine.load().pipe.unet
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500])
    with torch.no_grad():
        ref = unet(x, t, cond).sample
        # The tiny UNet has attention on its second level only: level 1 alone merges nothing.
        top = GenerationRequest("x", token_merging=0.5)
        with levers.applied(unet, top):
            same = unet(x, t, cond).sample
        deeper = replace(top, token_merging_downsample=2)
        from lanskap.generation.tome import token_merging

        with token_merging(unet, 0.5, 2) as state:
            merged = unet(x, t, cond).sample
    assert torch.equal(ref, same)
    assert state.merged == 4, "every self-attention at level 2: the down block, the middle, the two of the up block"
    # Random weights amplify any change, so only "changed, same shape, finite" is asserted here;
    # how close merged stays to full compute is the quality gate's job (benchmarks/gate.py).
    assert merged.shape == ref.shape and torch.isfinite(merged).all() and (merged - ref).abs().mean() > 0
    assert levers.infotext(deeper) == {"Token merging ratio": "0.5", "Token merging downsample": "2"}
    assert all(type(m.processor).__name__ != "MergedSelfAttention" for m in unet.modules() if hasattr(m, "processor"))


def test_speed_levels_fill_only_the_levers_a_request_leaves_unset() -> None:
    req = GenerationRequest("x", steps=25)
    assert levers.resolve(req, "quality").cache_interval == 0
    balanced = levers.resolve(req, "balanced")
    chosen = levers.LEVEL_LEVERS["balanced"]
    assert (balanced.cache_interval, balanced.cache_start, balanced.token_merging) == (
        chosen.cache_interval,
        chosen.cache_start,
        chosen.token_merging,
    )
    assert chosen.cache_interval >= 2, "balanced caches features (it held the gate)"
    assert levers.resolve(replace(req, steps=10), "balanced").cache_interval == 0, "too few steps to cache"
    assert levers.resolve(replace(req, cache_interval=2), "fast").cache_interval == 2
    with pytest.raises(LanskapError, match="speed must be one of quality, balanced, fast"):
        levers.resolve(req, "ludicrous")
    for bad, needle in (
        ({"cache_interval": 11}, "cache interval must be between 0"),
        ({"token_merging": 0.9}, "token merging ratio must be between 0 and 0.75"),
        ({"token_merging_downsample": 3}, "token merging downsample must be one of 1, 2, 4, 8"),
    ):
        with pytest.raises(LanskapError, match=needle):
            GenerationRequest("x", **bad).validate()  # type: ignore[arg-type]


def test_cli_speed_options(tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = main_cli(capsys, "generate", "castle", "--model", str(tiny_sd), "--cache-interval", "12")
    assert_one_line_error(bad, "cache interval must be between 0")
    bad = main_cli(capsys, "generate", "castle", "--model", str(tiny_sd), "--speed", "warp")
    assert_one_line_error(bad, "speed must be quality, balanced or fast")
    flags = ["-W", "64", "-H", "64", "--steps", "4", "--speed", "quality", "--token-merging", "0.3"]
    ok = main_cli(capsys, "generate", "castle", "--model", str(tiny_sd), *flags, "--out", str(tmp_path), "-q")
    assert ok.returncode == 0, ok.stderr
    from PIL import Image

    text = Image.open(next(tmp_path.rglob("*.png"))).info["parameters"]
    assert "Token merging ratio: 0.3" in text and "Cache interval" not in text


def _distilled(tiny_sd: Path, folder: Path, scheduler: dict[str, object], card: str = "") -> Path:
    """The tiny model dressed as a distilled one: its scheduler config (and model card) changed."""
    import json
    import shutil

    shutil.copytree(tiny_sd, folder)
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **scheduler}))
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", scheduler["_class_name"]]  # the class a pipeline loads
    (folder / "model_index.json").write_text(json.dumps(index))
    if card:
        (folder / "README.md").write_text(card)
    return folder


def test_distilled_models_bring_their_few_step_settings(
    tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    turbo = _distilled(tiny_sd, tmp_path / "my-distilled", {"_class_name": "EulerDiscreteScheduler",
                       "timestep_spacing": "trailing", "prediction_type": "epsilon"},
                       "# SD-Turbo\nSD-Turbo is a distilled version of Stable Diffusion 2.1.")  # fmt: skip
    out = tmp_path / "out"
    common = ["--model", str(turbo), "-W", "64", "-H", "64", "--out", str(out), "--no-gallery", "-q"]
    assert main_cli(capsys, "generate", "castle", *common).returncode == 0
    assert main_cli(capsys, "generate", "castle", *common, "--steps", "3", "--sampler", "Euler").returncode == 0
    first, second = (Image.open(p).info["parameters"] for p in sorted(out.rglob("*.png")))
    assert "Steps: 1," in first and "CFG scale: 0," in first and "Sampler: Euler a" in first
    assert "Schedule type: SGM Uniform" in first and "Model defaults: SD-Turbo" in first
    # What the person gives wins; the rest still comes from the model.
    assert "Steps: 3," in second and "Sampler: Euler," in second and "CFG scale: 0," in second
    replayed = replay_from_infotext(first).fields
    assert (replayed["steps"], replayed["guidance"]) == (1, 0.0), "--from restores them as given"

    lcm = _distilled(tiny_sd, tmp_path / "lcm", {"_class_name": "LCMScheduler"})
    result = Engine(str(lcm), speed_level="quality").generate(
        GenerationRequest("castle", width=64, height=64, seed=1, model_defaults=("steps", "guidance", "scheduler"))
    )
    assert "Steps: 4," in result.infotexts[0] and "Sampler: LCM" in result.infotexts[0]
    plain = Engine(str(tiny_sd)).generate(GenerationRequest("castle", width=64, height=64, steps=2, seed=1,
                                                            model_defaults=("guidance",)))  # fmt: skip
    assert "CFG scale: 7.5" in plain.infotexts[0] and "Model defaults" not in plain.infotexts[0]
