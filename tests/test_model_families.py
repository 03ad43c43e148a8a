"""Model families on disk (issue #36's groundwork): tiny SDXL models of the real classes, and detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import assert_one_line_error, main_cli
from lanskap.models.family import detect_file, detect_folder
from lanskap.models.safety import read_safetensors_header


@pytest.fixture(scope="module")
def xl_pair(tiny_sdxl: Path, tiny_sdxl_refiner: Path) -> tuple[Path, Path]:
    return tiny_sdxl, tiny_sdxl_refiner


def test_tiny_sdxl_base_and_refiner_are_the_real_classes(xl_pair: tuple[Path, Path]) -> None:
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    base_dir, refiner_dir = xl_pair
    base = StableDiffusionXLPipeline.from_pretrained(str(base_dir))
    assert type(base.text_encoder) is CLIPTextModel and type(base.text_encoder_2) is CLIPTextModelWithProjection
    assert base.unet.config.addition_embed_type == "text_time"
    widths = base.text_encoder.config.hidden_size + base.text_encoder_2.config.hidden_size
    assert base.unet.config.cross_attention_dim == widths  # both encoders, side by side
    image = base("a castle", num_inference_steps=1, width=64, height=64, output_type="pil").images[0]
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(refiner_dir))
    assert refiner.text_encoder is None and refiner.config.requires_aesthetics_score
    out = refiner("a castle", image=image, num_inference_steps=2, strength=0.5).images[0]
    assert out.size == (64, 64)


def test_families_are_detected_from_folders_and_single_files(tiny_sd: Path, xl_pair: tuple[Path, Path],
                                                             tmp_path: Path) -> None:  # fmt: skip
    assert detect_folder(tiny_sd) == "sd"
    assert detect_folder(xl_pair[0]) == "sdxl" and detect_folder(xl_pair[1]) == "sdxl-refiner"
    layouts = {
        "sd2": "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
        "sd1": "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "sdxl": "conditioner.embedders.1.model.ln_final.weight",
        "refiner": "conditioner.embedders.0.model.ln_final.weight",
    }
    found = {}
    for name, key in layouts.items():
        path = tmp_path / f"{name}.safetensors"
        tensors = {key: torch.zeros(2), "model.diffusion_model.out.2.bias": torch.zeros(4)}
        if name == "sdxl":
            tensors["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = torch.zeros(2)
        save_file(tensors, str(path))
        found[name] = detect_file(read_safetensors_header(path))
    assert found == {"sd2": "sd", "sd1": "sd", "sdxl": "sdxl", "refiner": "sdxl-refiner"}


def test_what_cant_run_as_a_base_is_named_in_one_line_not_a_shape_error(xl_pair: tuple[Path, Path], tmp_path: Path,
                                                                        capsys) -> None:  # fmt: skip
    base, refiner = xl_pair
    proc = main_cli(capsys, "generate", "a castle", "--model", str(refiner), "--steps", "1")
    assert_one_line_error(proc, "sdxl refiner", "runs after an sdxl base")
    proc = main_cli(capsys, "generate", "a castle", "--model", str(base), "--model-family", "sd", "--steps", "1")
    assert_one_line_error(proc, "an sdxl model by its configs")
    proc = main_cli(capsys, "generate", "a castle", "--model", str(base), "--model-family", "xl", "--steps", "1")
    assert_one_line_error(proc, "model family must be one of auto, sd, sdxl")
    single = tmp_path / "sdxl-single.safetensors"  # SDXL by its names, but not a whole model
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(2)}, str(single))
    proc = main_cli(capsys, "generate", "a castle", "--model", str(single), "--model-config", str(base), "--steps", "1")
    assert_one_line_error(proc, "cannot load checkpoint sdxl-single.safetensors")
