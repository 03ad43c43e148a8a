"""The engine: parameters, schedulers, seeds, reproducibility, progress, threads (issue #2, 4/6/8)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lanskap.errors import CancelledError, LanskapError
from lanskap.generation.params import GenerationRequest
from lanskap.generation.schedulers import (
    SAMPLERS,
    SCHEDULE_OPTIONS,
    algorithm_names,
    build_scheduler,
    get_sampler,
    sampler_names,
)

SMALL = {"steps": 3, "width": 64, "height": 64}


def px(img) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(img).astype(np.int16)


def test_same_seed_same_pixels_and_different_seed_differs(engine) -> None:  # type: ignore[no-untyped-def]
    a = engine.generate(GenerationRequest("castle in the mist", seed=11, **SMALL))
    b = engine.generate(GenerationRequest("castle in the mist", seed=11, **SMALL))
    c = engine.generate(GenerationRequest("castle in the mist", seed=12, **SMALL))
    assert np.array_equal(px(a.images[0]), px(b.images[0]))
    assert np.abs(px(a.images[0]) - px(c.images[0])).max() > 10


def test_prompt_and_negative_prompt_change_the_image(engine) -> None:  # type: ignore[no-untyped-def]
    base = engine.generate(GenerationRequest("castle in the mist", seed=3, **SMALL))
    other = engine.generate(GenerationRequest("village by the sea", seed=3, **SMALL))
    neg = engine.generate(GenerationRequest("castle in the mist", negative_prompt="blurry", seed=3, **SMALL))
    assert np.abs(px(base.images[0]) - px(other.images[0])).max() > 0
    assert np.abs(px(base.images[0]) - px(neg.images[0])).max() > 0


def test_guidance_width_height_and_steps_are_used(engine) -> None:  # type: ignore[no-untyped-def]
    r = engine.generate(GenerationRequest("sea", seed=1, steps=2, width=96, height=64))
    assert r.images[0].size == (96, 64)
    g1 = engine.generate(GenerationRequest("sea", seed=1, steps=2, width=64, height=64, guidance=1.0))
    g9 = engine.generate(GenerationRequest("sea", seed=1, steps=2, width=64, height=64, guidance=9.0))
    assert np.abs(px(g1.images[0]) - px(g9.images[0])).max() > 0
    s4 = engine.generate(GenerationRequest("sea", seed=1, steps=4, width=64, height=64, guidance=9.0))
    assert np.abs(px(s4.images[0]) - px(g9.images[0])).max() > 0


def test_native_size_is_the_default(engine) -> None:  # type: ignore[no-untyped-def]
    r = engine.generate(GenerationRequest("sea", seed=1, steps=1))
    assert r.images[0].size == (768, 768)
    assert "Size: 768x768" in r.infotexts[0]


def test_batch_seeds_follow_a1111_and_regenerate_alone(engine) -> None:  # type: ignore[no-untyped-def]
    batch = engine.generate(GenerationRequest("sunset beach", seed=100, num_images=3, batch_size=2, **SMALL))
    assert batch.seeds == [100, 101, 102] and len(batch.images) == 3
    assert [f"Seed: {s}," in t for s, t in zip(batch.seeds, batch.infotexts, strict=True)] == [True] * 3
    alone = engine.generate(GenerationRequest("sunset beach", seed=101, **SMALL))
    # Same initial noise; batched matmuls may round differently by one level at most.
    assert np.abs(px(batch.images[1]) - px(alone.images[0])).max() <= 2
    assert np.abs(px(batch.images[0]) - px(alone.images[0])).max() > 10


def test_random_seed_is_chosen_and_recorded(engine) -> None:  # type: ignore[no-untyped-def]
    r = engine.generate(GenerationRequest("mountains", **SMALL))
    assert r.request.seed is not None and r.request.seed >= 0
    assert f"Seed: {r.seeds[0]}," in r.infotexts[0]
    again = engine.generate(GenerationRequest("mountains", seed=r.seeds[0], **SMALL))
    assert np.array_equal(px(r.images[0]), px(again.images[0]))


# Every sampler with its A1111 default schedule, and every schedule type once (on Euler): each one
# runs; every one of the 68 combinations is built and checked below without running.
RUN_LABELS = sorted({get_sampler(a).label for a in algorithm_names()} | {f"Euler {s}" for s in SCHEDULE_OPTIONS})


@pytest.mark.parametrize("label", RUN_LABELS)
def test_every_scheduler_runs_and_keeps_v_prediction(engine, label: str) -> None:  # type: ignore[no-untyped-def]
    r = engine.generate(GenerationRequest("lake", seed=5, scheduler=label, steps=2, width=64, height=64))
    assert engine.model.pipe.scheduler.config.prediction_type == "v_prediction"
    assert type(engine.model.pipe.scheduler).__name__ == get_sampler(label).cls
    sampler = get_sampler(label)
    assert f"Sampler: {sampler.name}, Schedule type: {sampler.infotext_schedule}" in r.infotexts[0]
    if sampler.stochastic:  # fresh noise per step must still be seeded
        again = engine.generate(GenerationRequest("lake", seed=5, scheduler=label, steps=2, width=64, height=64))
        assert np.array_equal(px(r.images[0]), px(again.images[0]))


def test_every_sampler_and_schedule_builds_with_the_models_prediction_type(engine) -> None:  # type: ignore[no-untyped-def]
    config = engine.load().pipe.scheduler.config
    for label in sampler_names():
        sampler = get_sampler(label)
        built = build_scheduler(sampler, config, noise_seed=1)
        assert type(built).__name__ == sampler.cls and built.config.prediction_type == "v_prediction", label
        for key, value in SCHEDULE_OPTIONS[sampler.schedule].items():
            assert built.config[key] == value, (label, key)
        assert get_sampler(label).label == label, "labels round-trip"


def test_a1111_sampler_and_schedule_semantics() -> None:
    """A1111 1.9+: "Automatic" is each sampler's own default; names with no diffusers twin are refused."""
    assert get_sampler("DPM++ 2M", "Automatic").label == "DPM++ 2M Karras"
    assert get_sampler("DPM++ 2M SDE").label == "DPM++ 2M SDE Exponential"
    assert get_sampler("DPM++ 3M SDE", "exponential").options["solver_order"] == 3
    assert get_sampler("DPM++ 2M SDE Heun", "Karras").options["solver_type"] == "heun"
    assert get_sampler("DPM2").label == "DPM2 Karras" and get_sampler("DPM2 a").stochastic
    assert get_sampler("Euler a", "Automatic").label == "Euler a"
    assert get_sampler("Euler", "sgm_uniform").options == {"timestep_spacing": "trailing"}
    assert get_sampler("LCM").cls == "LCMScheduler"
    for name, schedule, needle in (
        ("DPM++ 2S a", None, "no faithful diffusers counterpart"),
        ("Restart", None, "no faithful diffusers counterpart"),
        ("Euler", "Simple", "no faithful diffusers counterpart"),
        ("Euler a", "Karras", "takes: Uniform, SGM Uniform"),
    ):
        with pytest.raises(LanskapError, match=needle):
            get_sampler(name, schedule)


def test_required_scheduler_names_and_aliases() -> None:
    for name in ("DPM++ 2M Karras", "Euler a", "Euler", "DDIM", "UniPC", "Heun", "LMS", "DPM++ SDE Karras"):
        assert get_sampler(name).label == name
    assert get_sampler("euler_a").label == "Euler a"
    assert get_sampler("DPM++ 2M", "Karras").label == "DPM++ 2M Karras"
    assert GenerationRequest("x").scheduler == "DPM++ 2M Karras"
    assert len(SAMPLERS) >= 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 100}, "multiple of 8"),
        ({"height": 500}, "multiple of 8"),
        ({"width": 4096}, "between 64"),
        ({"height": 56}, "between 64"),
        ({"steps": 0}, "steps"),
        ({"steps": 151}, "steps"),
        ({"guidance": -0.5}, "guidance"),
        ({"scheduler": "Turbo 9000"}, "unknown scheduler"),
        ({"num_images": 0}, "num-images"),
        ({"batch_size": 0}, "batch-size"),
        ({"seed": -7}, "seed"),
    ],
)
def test_parameter_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(LanskapError, match=message):
        GenerationRequest("x", **kwargs).validate()


def test_progress_reports_every_step(engine) -> None:  # type: ignore[no-untyped-def]
    events = []
    engine.generate(GenerationRequest("forest", seed=1, num_images=2, batch_size=1, **SMALL), progress=events.append)
    assert [e.done for e in events] == list(range(1, 7))
    assert events[-1].total == 6 and events[-1].batches == 2 and events[-1].fraction == 1.0


def test_cancel_stops_the_job(engine) -> None:  # type: ignore[no-untyped-def]
    cancel = threading.Event()
    seen = []

    def progress(p) -> None:  # type: ignore[no-untyped-def]
        seen.append(p.done)
        cancel.set()

    with pytest.raises(CancelledError):
        engine.generate(
            GenerationRequest("forest", seed=1, steps=10, width=64, height=64, num_images=3),
            progress=progress,
            cancel=cancel,
        )
    assert len(seen) < 30


def test_threads_share_one_engine_safely(engine, tiny_lora) -> None:  # type: ignore[no-untyped-def]
    from lanskap.generation.params import LoraSpec

    requests = [
        GenerationRequest("castle", seed=21, **SMALL),
        GenerationRequest("castle", seed=21, loras=(LoraSpec(str(tiny_lora), 1.0),), **SMALL),
        GenerationRequest("castle", seed=21, loras=(LoraSpec(str(tiny_lora), 0.5),), **SMALL),
        GenerationRequest("village", seed=22, scheduler="Euler a", **SMALL),
    ]
    expected = [px(engine.generate(r).images[0]) for r in requests]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = px(engine.generate(requests[i % 4]).images[0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for i in range(8):
        assert np.array_equal(results[i], expected[i % 4]), f"thread {i} got another job's pixels"


def test_bf16_on_cpu_runs(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    from lanskap.generation.engine import Engine

    e = Engine(str(tiny_sd), device="cpu", dtype="bf16")
    r = e.generate(GenerationRequest("sea", seed=1, **SMALL))
    assert r.dtype == "bf16" and r.images[0].size == (64, 64)
    assert str(e.model.pipe.unet.dtype) == "torch.bfloat16"


def test_cheap_preview_is_a1111s_latent_to_rgb_map() -> None:
    """A1111's "Approx cheap": channel weights, then (x + 1) / 2, one pixel per latent."""
    import torch

    from lanskap.generation.preview import cheap_preview

    latents = torch.zeros(2, 4, 3, 5)
    latents[0, 0] = 1.0  # the first latent channel alone: (0.298, 0.207, 0.208)
    latents[0, 3, 0, 0] = -2.0  # a blue-weighted channel pushed far: clipped, not wrapped
    image = cheap_preview(latents)
    assert image.size == (5, 3) and image.mode == "RGB"
    assert image.getpixel((4, 2)) == tuple(round((1 + c) / 2 * 255) for c in (0.298, 0.207, 0.208))
    assert image.getpixel((0, 0))[2] == 255
    odd = cheap_preview(torch.full((1, 16, 2, 2), -1.0))  # not SD's 4 channels: the first three, still a picture
    assert odd.size == (2, 2) and odd.getpixel((0, 0)) == (0, 0, 0)
