"""The engine's seams: a model family is data, and new capabilities plug in as steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lanskap.config import Settings
from lanskap.generation.engine import Engine
from lanskap.generation.params import GenerationRequest
from lanskap.generation.steps import ExtraConditioning, PostStep
from lanskap.models.family import SD1, SD2, SD2_V, family_of, width_label


class Enlarge:
    """A post-step as hires fix and upscalers will be: it changes the decoded images."""

    name = "enlarge"

    def applies(self, request: GenerationRequest) -> bool:
        return "big" in request.prompt

    def __call__(self, engine, request, images, seeds):  # type: ignore[no-untyped-def]
        return [im.resize((im.width * 2, im.height * 2), Image.Resampling.NEAREST) for im in images]

    def infotext(self, request: GenerationRequest) -> dict[str, str]:
        return {"Enlarge": "2"}


class Rescale:
    """Extra conditioning as ControlNet and depth will be: it adds pipeline inputs."""

    name = "rescale"

    def applies(self, request: GenerationRequest) -> bool:
        return True

    def call_args(self, engine, request, seeds):  # type: ignore[no-untyped-def]
        return {"guidance_rescale": 0.9}  # a real StableDiffusionPipeline input

    def infotext(self, request: GenerationRequest) -> dict[str, str]:
        return {"Guidance rescale": "0.9"}


def test_new_steps_plug_in_without_touching_the_others(tiny_sd: Path, tmp_path: Path) -> None:
    engine = Engine(settings=Settings(home=tmp_path / "h", model=str(tiny_sd), device="cpu", dtype="fp32"))
    req = dict(seed=3, steps=3, width=64, height=64, guidance=9.0, watermark=False)
    plain = engine.generate(GenerationRequest("a big castle", **req))
    assert isinstance(Enlarge(), PostStep) and isinstance(Rescale(), ExtraConditioning)
    engine.add_step(Enlarge())
    big = engine.generate(GenerationRequest("a big castle", **req))
    assert big.images[0].size == (128, 128) and "Enlarge: 2" in big.infotexts[0]
    small = engine.generate(GenerationRequest("a small castle", **req))
    assert small.images[0].size == (64, 64) and "Enlarge" not in small.infotexts[0], "only where it applies"
    enlarged = np.asarray(plain.images[0].resize((128, 128), Image.Resampling.NEAREST))
    assert np.array_equal(np.asarray(big.images[0]), enlarged), "the post-step runs on the same pixels"
    engine.add_step(Rescale())
    rescaled = engine.generate(GenerationRequest("a big castle", **req))
    assert "Guidance rescale: 0.9" in rescaled.infotexts[0]
    assert np.abs(np.asarray(rescaled.images[0]).astype(int) - np.asarray(big.images[0]).astype(int)).max() > 0


def test_model_families_are_data() -> None:
    assert family_of(768, "epsilon") is SD1 and family_of(1024, "epsilon") is SD2
    assert family_of(1024, "v_prediction") is SD2_V and SD2_V.native_size == 768
    assert family_of(32, "v_prediction") is SD2_V, "tiny and mini models are shaped as SD 2.x"
    assert SD2_V.modelspec == "stable-diffusion-v2-768-v" and SD1.kohya_version == "sd_v1"
    assert SD2.pipelines["inpaint"] == "StableDiffusionInpaintPipeline"
    assert [width_label(w) for w in (768, 1024, 2048, 64)] == ["SD 1.x", "SD 2.x", "SDXL", "64-wide"]


def test_a_loaded_model_knows_its_family(engine) -> None:  # type: ignore[no-untyped-def]
    engine.load()
    assert engine.model.family is SD2_V  # the tiny test model: v-prediction, not CLIP-L wide
