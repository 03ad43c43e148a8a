"""SDXL as a base (issue #36): A1111's two-encoder prompts, size conditioning, the modes, LoRAs,
single files, VAEs and the infotext, on a tiny SDXL of the real classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, main_cli
from lanskap.generation.engine import Engine
from lanskap.generation.params import GenerationRequest, InitImage, InpaintMask, LoraSpec
from lanskap.prompts.dual import DualEncoder, encode_dual

SMALL = {"steps": 2, "width": 64, "height": 64, "seed": 5, "watermark": False}


@pytest.fixture(scope="module")
def xl(tiny_sdxl: Path) -> Engine:
    return Engine(str(tiny_sdxl), device="cpu", speed_level="quality")


def px(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(result.images[0], dtype=np.int16)


def test_a_short_prompt_gives_the_stock_sdxl_pipeline_pixels(xl: Engine, tiny_sdxl: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    ours = xl.generate(GenerationRequest("a castle on a hill", negative_prompt="blurry", prompt_2="oil painting",
                                         scheduler="Euler", **SMALL))  # fmt: skip
    stock = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl), add_watermarker=False)
    stock.scheduler = xl.model.pipe.scheduler  # the engine's Euler, as it set it for the call
    latents, _ = xl._initial_latents([5], 64, 64)
    theirs = stock(prompt="a castle on a hill", prompt_2="oil painting", negative_prompt="blurry", latents=latents,
                   num_inference_steps=2, guidance_scale=7.5, width=64, height=64).images[0]  # fmt: skip
    assert np.array_equal(px(ours), np.asarray(theirs, dtype=np.int16))
    assert xl.model.family.key == "sdxl" and xl.model.native_size == 1024


def test_a1111_encoding_of_both_encoders(xl: Engine) -> None:
    """Penultimate hidden states of each encoder side by side; pooled from bigG's first chunk; an empty
    negative all zeros; weights act on both halves with each half's mean restored."""
    enc = DualEncoder.of(xl.model.pipe)
    plain = encode_dual(enc, "a castle on a hill")
    assert plain.hidden.shape == (1, 77, 80) and plain.pooled.shape == (1, 48)
    empty = encode_dual(enc, "", zero=True)
    assert not empty.hidden.any() and not empty.pooled.any()
    heavy = encode_dual(enc, "a (castle:1.5) on a hill")
    for half in (slice(0, 32), slice(32, 80)):
        z, w = plain.hidden[..., half], torch.ones(1, 77, 1)
        w[0, 2] = 1.5
        assert torch.allclose(heavy.hidden[..., half], z * w * (z.mean() / (z * w).mean()), atol=1e-5)
    assert torch.equal(heavy.pooled, plain.pooled), "the pooled text is unweighted, as A1111's"


def test_a_word_past_token_77_changes_the_output_through_both_encoders(xl: Engine) -> None:
    enc = DualEncoder.of(xl.model.pipe)
    head = " ".join(["castle"] * 80)
    a, b = encode_dual(enc, f"{head} mist"), encode_dual(enc, f"{head} sunset")
    assert a.chunks == b.chunks == 2
    second = slice(77, 154)
    assert not torch.equal(a.hidden[:, second, :32], b.hidden[:, second, :32]), "CLIP-L sees the word"
    assert not torch.equal(a.hidden[:, second, 32:], b.hidden[:, second, 32:]), "bigG sees the word"
    assert torch.equal(a.pooled, b.pooled), "the pooled text is the first chunk's"
    ra = xl.generate(GenerationRequest(f"{head} mist", **SMALL))
    rb = xl.generate(GenerationRequest(f"{head} sunset", **SMALL))
    assert np.abs(px(ra) - px(rb)).max() > 0
    assert any("2 chunks" in n for n in ra.notices)


def test_the_size_conditioning_is_a1111s(xl: Engine) -> None:
    """Both sizes are the picture's and the crop is (0, 0): the UNet's time ids say so."""
    seen: list[torch.Tensor] = []
    unet = xl.model.pipe.unet
    hook = unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["added_cond_kwargs"]["time_ids"]),
                                          with_kwargs=True)  # fmt: skip
    try:
        xl.generate(GenerationRequest("a castle", **{**SMALL, "width": 96, "height": 64}))
    finally:
        hook.remove()
    assert seen and all(t.tolist() == [[64, 96, 0, 0, 64, 96]] * 2 for t in seen)


def test_prompt_editing_switches_the_pooled_text_too(xl: Engine) -> None:
    pooled: list[torch.Tensor] = []
    unet = xl.model.pipe.unet
    hook = unet.register_forward_pre_hook(lambda m, a, kw: pooled.append(kw["added_cond_kwargs"]["text_embeds"][1]),
                                          with_kwargs=True)  # fmt: skip
    try:
        xl.generate(GenerationRequest("a [castle:lake:2] at dusk", **{**SMALL, "steps": 4}))
    finally:
        hook.remove()
    assert not torch.equal(pooled[0], pooled[-1]) and torch.equal(pooled[0], pooled[1])


def test_img2img_inpaint_and_outpaint_run_on_sdxl(xl: Engine) -> None:
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    out = xl.generate(GenerationRequest("a castle", init=InitImage(picture, 0.5), **SMALL))
    assert out.images[0].size == (64, 64) and "Denoising strength: 0.5" in out.infotexts[0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    painted = xl.generate(GenerationRequest("a castle", init=InitImage(picture, 1.0),
                                            mask=InpaintMask(mask, blur=0), **SMALL))  # fmt: skip
    kept = np.asarray(painted.images[0], dtype=np.int16)[:8, :8]
    assert np.abs(kept - np.asarray(picture, dtype=np.int16)[:8, :8]).max() <= 2, "outside the mask stays"
    assert np.abs(px(painted)[20:44, 20:44] - np.asarray(picture, dtype=np.int16)[20:44, 20:44]).max() > 20


def test_kohya_and_diffusers_sdxl_loras_and_cross_family_refusal(xl: Engine, tiny_sdxl: Path, tiny_sd: Path,
                                                                 tiny_lora: Path, tmp_path: Path) -> None:  # fmt: skip
    from safetensors import safe_open

    from lanskap.models.tiny_sdxl import make_tiny_sdxl_lora

    kohya = make_tiny_sdxl_lora(tiny_sdxl, tmp_path / "xl-style.safetensors")
    with safe_open(str(kohya), "pt") as f:
        prefixes = {k.split("_")[0] + "_" + k.split("_")[1] for k in f.keys()}  # noqa: SIM118
    assert prefixes == {"lora_unet", "lora_te1", "lora_te2"}
    plain = xl.generate(GenerationRequest("a castle", **SMALL))
    styled = xl.generate(GenerationRequest("a castle", loras=(LoraSpec(str(kohya), 1.0),), **SMALL))
    assert np.abs(px(plain) - px(styled)).max() > 0 and "xl-style: " in styled.infotexts[0]
    for module in (xl.model.pipe.text_encoder, xl.model.pipe.text_encoder_2):
        assert any("lora" in n for n, _ in module.named_parameters()), "both text encoders get their part"
    again = xl.generate(GenerationRequest("a castle", **SMALL))
    assert np.array_equal(px(plain), px(again)), "without the LoRA, the base's pixels again"
    with pytest.raises(Exception, match="made for another base"):
        xl.generate(GenerationRequest("a castle", loras=(LoraSpec(str(tiny_lora), 1.0),), **SMALL))
    sd = Engine(str(tiny_sd), device="cpu")
    with pytest.raises(Exception, match=r"made for another base \(SDXL\)"):
        sd.generate(GenerationRequest("a castle", loras=(LoraSpec(str(kohya), 1.0),), **SMALL))


def test_what_sdxl_doesnt_run_yet_is_refused_in_one_line(xl: Engine) -> None:
    from lanskap.generation.regions import Layout, parse

    with pytest.raises(Exception, match=r"hypernetworks run on SD 1\.x and 2\.x models; tiny-sdxl is SDXL"):
        xl.generate(GenerationRequest("a castle <hypernet:any:1>", **SMALL))
    layout = Layout((parse("0,0,0.5,1:a castle"),))
    with pytest.raises(Exception, match=r"regional prompts run on SD 1\.x"):
        xl.generate(GenerationRequest("a castle", regions=layout, **SMALL))
    result = xl.generate(GenerationRequest("a castle", clip_skip=2, **SMALL))
    assert any("clip skip 2 is not used on SDXL" in n for n in result.notices)


def test_a_single_file_sdxl_gives_the_folders_pixels(xl: Engine, tiny_sdxl: Path, tmp_path: Path) -> None:
    from lanskap.models.convert import export_single_file
    from lanskap.models.family import detect_file
    from lanskap.models.safety import read_safetensors_header

    single = export_single_file(tiny_sdxl, tmp_path / "tiny-sdxl.safetensors")
    assert detect_file(read_safetensors_header(single)) == "sdxl"
    from_file = Engine(str(single), device="cpu", speed_level="quality", model_config=str(tiny_sdxl))
    assert from_file.model.family.key == "sdxl"
    request = GenerationRequest("a castle on a hill", scheduler="Euler", **SMALL)
    assert np.array_equal(px(from_file.generate(request)), px(xl.generate(request)))


def test_another_vae_from_a_folder_or_an_original_layout_file(tiny_sdxl: Path, xl: Engine, tmp_path: Path) -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from lanskap.models.convert import vae_to_ldm

    vae = AutoencoderKL.from_pretrained(str(tiny_sdxl / "vae"))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    vae.save_pretrained(str(tmp_path / "fixed-vae"))
    ldm = vae_to_ldm(vae.state_dict(), dict(vae.config))
    save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in ldm.items()},
              str(tmp_path / "fixed-vae.safetensors"))  # fmt: skip
    request = GenerationRequest("a castle", **SMALL)
    base = px(xl.generate(request))
    folder = Engine(str(tiny_sdxl), device="cpu", speed_level="quality", vae=str(tmp_path / "fixed-vae"))
    single = Engine(str(tiny_sdxl), device="cpu", speed_level="quality", vae=str(tmp_path / "fixed-vae.safetensors"))
    a, b = folder.generate(request), single.generate(request)
    assert np.abs(px(a) - base).max() > 0, "the other VAE decodes"
    assert np.array_equal(px(a), px(b)), "the same VAE from a folder or an original-layout file"
    assert "VAE: fixed-vae" in b.infotexts[0]


def test_cli_prompt_2_infotext_round_trip(tiny_sdxl: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    proc = main_cli(capsys, "generate", "a castle, (mist:1.2)", "--model", str(tiny_sdxl), "--prompt-2",
                    "an oil painting, warm light", "-W", "64", "-H", "64", "--steps", "2", "-s", "9", "-q",
                    "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first = sorted(out.glob("*.png"))[0]
    text = Image.open(first).info["parameters"]
    assert 'Prompt 2: "an oil painting, warm light"' in text and "Model: tiny-sdxl" in text
    again = tmp_path / "again"
    proc = main_cli(capsys, "generate", "--from", str(first), "--model", str(tiny_sdxl), "-q", "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    second = sorted(again.glob("*.png"))[0]
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    assert Image.open(second).info["parameters"] == text
    proc = main_cli(capsys, "generate", "a castle", "--model", str(tiny_sdxl), "--vae", str(tmp_path / "none"),
                    "--steps", "1")  # fmt: skip
    assert_one_line_error(proc, "vae not found")


def test_the_refiner_takes_the_last_steps_and_a_switch_of_1_is_the_base_alone(
    xl: Engine, tiny_sdxl_refiner: Path, tiny_sd: Path
) -> None:
    request = {"prompt": "a castle", "scheduler": "Euler", **{**SMALL, "steps": 10}}
    plain = xl.generate(GenerationRequest(**request))
    alone = xl.generate(GenerationRequest(**request, refiner=str(tiny_sdxl_refiner), refiner_switch_at=1.0))
    assert np.array_equal(px(plain), px(alone)) and "Refiner" not in alone.infotexts[0]
    calls = {"base": 0, "refiner": 0}
    refiner_unet = xl.refiner_model(str(tiny_sdxl_refiner)).pipe.unet

    def counter(name: str):  # type: ignore[no-untyped-def]
        return lambda *a: calls.__setitem__(name, calls[name] + 1)

    hooks = [xl.model.pipe.unet.register_forward_pre_hook(counter("base")),
             refiner_unet.register_forward_pre_hook(counter("refiner"))]  # fmt: skip
    try:
        refined = xl.generate(GenerationRequest(**request, refiner=str(tiny_sdxl_refiner), refiner_switch_at=0.7))
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"base": 7, "refiner": 3}, "timesteps >= 300 on the base, the rest on the refiner"
    assert np.abs(px(refined) - px(plain)).max() > 0
    assert "Refiner: tiny-sdxl-refiner [" in refined.infotexts[0] and "Refiner switch at: 0.7" in refined.infotexts[0]
    with pytest.raises(Exception, match="the refiner must be an SDXL refiner or base"):
        xl.generate(GenerationRequest(**request, refiner=str(tiny_sd)))
    sd = Engine(str(tiny_sd), device="cpu")
    with pytest.raises(Exception, match="the refiner takes over from an SDXL base"):
        sd.generate(GenerationRequest(**request, refiner=str(tiny_sdxl_refiner)))
    with pytest.raises(Exception, match=r"refiner switch must be between 0\.01 and 1"):
        GenerationRequest(**request, refiner="x", refiner_switch_at=1.5).validate()


def test_cli_refiner_round_trip(tiny_sdxl: Path, tiny_sdxl_refiner: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    common = ["--model", str(tiny_sdxl), "-W", "64", "-H", "64", "-q"]
    proc = main_cli(capsys, "generate", "a castle", *common, "--steps", "4", "-s", "2", "--refiner",
                    str(tiny_sdxl_refiner), "--refiner-switch", "0.5", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first = sorted(out.glob("*.png"))[0]
    text = Image.open(first).info["parameters"]
    assert "Refiner switch at: 0.5" in text
    again = tmp_path / "again"
    proc = main_cli(capsys, "generate", "--from", str(first), *common, "--refiner", str(tiny_sdxl_refiner),
                    "--out", str(again))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(sorted(again.glob("*.png"))[0])))


def test_every_sampler_runs_on_sdxl_and_the_watermark_holds(xl: Engine) -> None:
    from lanskap.generation.schedulers import SAMPLERS
    from lanskap.generation.watermark import check_watermark

    seen = set()
    for sampler in SAMPLERS:
        out = xl.generate(GenerationRequest("a castle", scheduler=sampler.label, **{**SMALL, "steps": 3}))
        assert out.images[0].size == (64, 64) and f"Sampler: {sampler.name}" in out.infotexts[0]
        seen.add(px(out).tobytes())
    assert len(seen) > len(SAMPLERS) // 2, "the samplers make their own pictures"
    marked = xl.generate(GenerationRequest("a castle", **{**SMALL, "width": 256, "height": 256, "watermark": True}))
    assert "Watermark: SDV2" in marked.infotexts[0] and check_watermark(marked.images[0]).message == "SDV2"


def test_evaluation_runs_unchanged_on_an_sdxl_base_and_its_lora(tiny_sdxl: Path, tmp_path: Path) -> None:
    from lanskap.config import Settings
    from lanskap.evaluation import EvalConfig, evaluate
    from lanskap.models.tiny import make_tiny
    from lanskap.models.tiny_sdxl import make_tiny_sdxl_lora
    from test_evaluation import write_split

    tiny_clip = make_tiny(tmp_path / "clip", "clip")
    data = write_split(tmp_path / "data", n=2)
    lora = make_tiny_sdxl_lora(tiny_sdxl, tmp_path / "xl-style.safetensors")
    cfg = EvalConfig(out=tmp_path / "report", data=data, clip_model=str(tiny_clip), metrics=("cmmd", "clip_score"),
                     loras=(LoraSpec(str(lora), 1.0),),
                     request_fields={"steps": 2, "width": 64, "height": 64})  # fmt: skip
    report = evaluate(cfg, Settings(home=tmp_path / "home", model=str(tiny_sdxl))).report
    assert report["generation"]["generated"] == {"base": 2, "lora": 2}
    assert {"base", "lora"} <= set(report["metrics"]) and "value" in report["metrics"]["lora"]["cmmd"]
    assert report["models"]["base"]["name"] == "tiny-sdxl"


def test_the_hires_fix_runs_on_sdxl_with_the_pooled_text_and_its_size(xl: Engine) -> None:
    from lanskap.generation.params import HiresFix

    seen: list[list[float]] = []
    unet = xl.model.pipe.unet
    hook = unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["added_cond_kwargs"]["time_ids"][0].tolist()),
                                          with_kwargs=True)  # fmt: skip
    try:
        out = xl.generate(GenerationRequest("a castle", hires=HiresFix(scale=1.5, denoise=0.5), **SMALL))
    finally:
        hook.remove()
    assert out.images[0].size == (96, 96) and "Hires upscale: 1.5" in out.infotexts[0]
    assert [64, 64, 0, 0, 64, 64] in seen and [96, 96, 0, 0, 96, 96] in seen, "each pass is told its own size"


def test_batches_outpainting_and_an_inpaint_with_the_refiner(xl: Engine, tiny_sdxl_refiner: Path) -> None:
    from lanskap import outpaint_inputs

    batch = xl.generate(GenerationRequest("a castle", num_images=3, batch_size=2, **SMALL))
    assert batch.seeds == [5, 6, 7] and len(batch.images) == 3
    alone = xl.generate(GenerationRequest("a castle", **{**SMALL, "seed": 6}))
    assert np.abs(np.asarray(batch.images[1], dtype=np.int16) - px(alone)).max() <= 2, "a batch image remade alone"
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    init, mask = outpaint_inputs(picture, right=32)
    wide = xl.generate(GenerationRequest("a castle", init=init, mask=mask, **{**SMALL, "width": 96}))
    assert wide.images[0].size == (96, 64) and "Outpaint: 0 32 0 0" in wide.infotexts[0]
    hole = Image.new("L", (64, 64), 0)
    hole.paste(255, (16, 16, 48, 48))
    refined = xl.generate(GenerationRequest("a castle", init=InitImage(picture, 1.0), mask=InpaintMask(hole, blur=0),
                                            refiner=str(tiny_sdxl_refiner), refiner_switch_at=0.5,
                                            **{**SMALL, "steps": 4}))  # fmt: skip
    assert "Refiner switch at: 0.5" in refined.infotexts[0]
    kept = np.asarray(refined.images[0], dtype=np.int16)[:8, :8]
    assert np.abs(kept - np.asarray(picture, dtype=np.int16)[:8, :8]).max() <= 2, "outside the mask stays"


def test_cli_makes_a_kohya_lora_for_a_tiny_sdxl(tiny_sdxl: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from safetensors import safe_open

    out = tmp_path / "xl.safetensors"
    proc = main_cli(capsys, "models", "make-tiny-lora", str(tiny_sdxl), str(out))
    assert proc.returncode == 0, proc.stderr
    with safe_open(str(out), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and any(k.startswith("lora_te2_") for k in keys)
