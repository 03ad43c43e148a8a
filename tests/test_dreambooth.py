"""DreamBooth: prior preservation keeps the class, class pictures are cached, a full fine-tune exports a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lanskap.config import Settings
from lanskap.generation.engine import Engine
from lanskap.generation.params import GenerationRequest, LoraSpec
from lanskap.training import train
from lanskap.training.class_images import class_folder
from test_training import fast, write_imagefolder

INSTANCE, CLASS = "a photo of sks landscape", "a photo of a landscape"


def db(tiny_sd: Path, data: Path, out: Path, **kw):  # type: ignore[no-untyped-def]
    values = dict(method="dreambooth", instance_prompt=INSTANCE, class_prompt=CLASS, num_class_images=4,
                  class_inference_steps=3, max_train_steps=30, learning_rate=3e-3, rank=8, train_ff=True,
                  train_proj=True, lr_scheduler="constant", snr_gamma=0)  # fmt: skip
    values.update(kw)
    if values.get("full"):  # a full fine-tune refuses LoRA settings
        from lanskap.training import build_config

        lora_free = fast(tiny_sd, data, out).to_dict()
        for key in ("rank", "train_ff", "train_proj"):
            values.pop(key)
            lora_free.pop(key)
        keep = ("data", "out", "model", "resolution", "bucket_step", "lr_warmup_steps", "validation_prompt")
        values.setdefault("report_to", "none")
        return build_config(None, None, {**{k: lora_free[k] for k in keep}, **values})
    return fast(tiny_sd, data, out, **values)


def test_prior_preservation_keeps_the_class_closer_to_the_base(tiny_sd: Path, tmp_path: Path) -> None:
    data = write_imagefolder(tmp_path / "set", n=4)
    st = Settings(home=tmp_path / "home", device="cpu")
    events: list[str] = []
    with_prior = train(db(tiny_sd, data, tmp_path / "prior", prior_preservation=True), st,
                       events=lambda e: events.append(e.message or ""))  # fmt: skip
    assert any("making 4 class picture(s)" in m for m in events)
    without = train(db(tiny_sd, data, tmp_path / "plain"), st)
    # the class pictures are cached by their settings: a second run makes none
    events.clear()
    train(db(tiny_sd, data, tmp_path / "again", prior_preservation=True, max_train_steps=1), st,
          events=lambda e: events.append(e.message or ""))  # fmt: skip
    assert not any("class picture" in m for m in events)
    model = Engine(settings=Settings(home=tmp_path / "h", model=str(tiny_sd), device="cpu", dtype="fp32")).load()
    folder = class_folder(st, model, db(tiny_sd, data, tmp_path / "x", prior_preservation=True, resolution=64))
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{i:05d}.png" for i in range(4)]

    eng = Engine(settings=Settings(home=tmp_path / "h", model=str(tiny_sd), device="cpu", dtype="fp32"))

    def pixels(prompt: str, lora: Path | None) -> np.ndarray:
        req = GenerationRequest(prompt, seed=50, steps=8, width=64, height=64, num_images=3, watermark=False,
                                loras=(LoraSpec(str(lora), 1.0),) if lora else ())  # fmt: skip
        return np.stack([np.asarray(im).astype(float) for im in eng.generate(req).images])

    base = pixels(CLASS, None)
    drift_prior = np.abs(pixels(CLASS, with_prior.lora) - base).mean()
    drift_plain = np.abs(pixels(CLASS, without.lora) - base).mean()
    assert drift_prior < drift_plain, (drift_prior, drift_plain)
    # and the subject was learned either way: the instance prompt moves away from the base
    assert np.abs(pixels(INSTANCE, with_prior.lora) - pixels(INSTANCE, None)).mean() > 1


def test_full_dreambooth_exports_a_diffusers_folder_and_a_single_file(tiny_sd: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    data = write_imagefolder(tmp_path / "set", n=2)
    st = Settings(home=tmp_path / "home", device="cpu")
    cfg = db(
        tiny_sd,
        data,
        tmp_path / "full",
        full=True,
        max_train_steps=2,
        checkpointing_steps=2,
        learning_rate=1e-3,
        output_name="sks-model",
        save_precision="fp32",
        prior_preservation=True,
        cache_text_embeddings=True,
    )  # fmt: skip  (the class prompt is cached with the captions)
    from lanskap.jobs.training import run_training

    result = run_training(cfg, st, publish_as="sks-model").result  # as the web app and the API do
    assert (st.models_dir / "sks-model" / "model_index.json").is_file(), "published as a model folder"
    assert (tmp_path / "full" / "checkpoint-2" / "unet.safetensors").is_file()
    assert result.lora == tmp_path / "full" / "model" and (result.lora / "unet" / "config.json").is_file()
    with safe_open(str(result.kohya), "pt") as f:
        names = list(f.keys())  # a safe_open handle has no __iter__
    assert any(k.startswith("model.diffusion_model.") for k in names)
    base = Engine(settings=Settings(home=tmp_path / "h", model=str(tiny_sd), device="cpu", dtype="fp32"))
    tuned = Engine(settings=Settings(home=st.home, model="sks-model", device="cpu", dtype="fp32"))
    req = GenerationRequest(INSTANCE, seed=1, steps=3, width=64, height=64, watermark=False)
    a, b = (np.asarray(e.generate(req).images[0]).astype(float) for e in (base, tuned))
    assert np.abs(a - b).mean() > 0.1, "the fine-tuned UNet draws differently"
    trained = tuned.load().pipe.unet.state_dict()
    original = base.load().pipe.unet.state_dict()
    assert any(not torch.equal(trained[k], original[k]) for k in original)
