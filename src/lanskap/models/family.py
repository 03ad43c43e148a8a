"""Model families as data: what distinguishes SD 1.x, SD 2.x 512 and SD 2.x 768-v.

A family says which diffusers pipelines run each mode, how wide the text embeddings are,
the native size and prediction type it was trained at, how its text encoder is named in
single-file checkpoints, and how kohya and SAI's modelspec name it in LoRA metadata. The
loader, the engine, the LoRA checks, the trainer's exports and the converter read these
fields instead of testing widths and prediction types themselves, so SDXL is a new entry
here (with its pipelines and its two text encoders), not a new branch in each of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SD_PIPELINES = {
    "txt2img": "StableDiffusionPipeline",
    "img2img": "StableDiffusionImg2ImgPipeline",
    "inpaint": "StableDiffusionInpaintPipeline",
    "depth2img": "StableDiffusionDepth2ImgPipeline",
}
XL_PIPELINES = {
    "txt2img": "StableDiffusionXLPipeline",
    "img2img": "StableDiffusionXLImg2ImgPipeline",
    "inpaint": "StableDiffusionXLInpaintPipeline",
}


@dataclass(frozen=True)
class ModelFamily:
    key: str
    label: str  # as people say it: "SD 2.x"
    text_width: int  # the text encoder's hidden size, the UNet's cross-attention width
    native_size: int  # the training resolution of the family's reference checkpoint
    prediction_type: str  # the family's usual objective; a model's own scheduler config decides
    kohya_version: str  # ss_base_model_version in kohya LoRA metadata
    modelspec: str  # SAI modelspec.architecture, without the "/lora" suffix
    open_clip_text: bool  # single-file checkpoints name the text encoder as OpenCLIP does
    pipelines: dict[str, str] = field(default_factory=lambda: dict(SD_PIPELINES))
    dual_text: bool = False  # two text encoders (SDXL): hidden states joined, the second one's pooled output

    @property
    def is_sd2(self) -> bool:
        return self.kohya_version == "sd_v2"

    @property
    def is_sdxl(self) -> bool:
        return self.dual_text


SD1 = ModelFamily("sd1", "SD 1.x", 768, 512, "epsilon", "sd_v1", "stable-diffusion-v1", open_clip_text=False)
SD2 = ModelFamily("sd2", "SD 2.x", 1024, 512, "epsilon", "sd_v2", "stable-diffusion-v2-512", open_clip_text=True)
SD2_V = ModelFamily(
    "sd2-v", "SD 2.x 768-v", 1024, 768, "v_prediction", "sd_v2", "stable-diffusion-v2-768-v", open_clip_text=True
)
SDXL = ModelFamily(
    "sdxl", "SDXL", 2048, 1024, "epsilon", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base", open_clip_text=False,
    pipelines=dict(XL_PIPELINES), dual_text=True,
)  # fmt: skip
FAMILIES = (SD1, SD2, SD2_V, SDXL)
#: Text widths of models that only run beside a base, for messages about LoRAs made for them.
OTHER_WIDTHS = {1280: "the SDXL refiner"}
#: Architectures recognised on disk that don't run as a base, with their names and what they are for.
UNSUPPORTED = {"sdxl-refiner": "an SDXL refiner, which runs after an SDXL base (the refiner setting), not alone"}


def family_of(text_width: int, prediction_type: str, *, dual_text: bool = False) -> ModelFamily:
    """The family a loaded model belongs to, from its text encoders, text width and objective.

    Two text encoders are SDXL (whatever the width: the tiny test SDXL is narrow). CLIP-L's 768
    is SD 1.x; every other width (OpenCLIP-H's 1024, and lanskap-mini's and the tiny test models'
    smaller ones, which are shaped as SD 2.x) is SD 2.x, split by objective.
    """
    if dual_text:
        return SDXL
    if text_width == SD1.text_width:
        return SD1
    return SD2_V if prediction_type == "v_prediction" else SD2


def detect_folder(folder: Path) -> str | None:
    """A diffusers folder's architecture from its configs: "sdxl", "sdxl-refiner", "sd", or None (unreadable)."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if unet.get("addition_embed_type") == "text_time" or "text_encoder_2" in index:
        return "sdxl-refiner" if not index.get("text_encoder") or index.get("text_encoder") == [None, None] else "sdxl"
    return "sd"


def detect_file(header: dict[str, object]) -> str:
    """A single-file checkpoint's architecture from its tensor names (A1111's and ComfyUI's layout):
    SDXL's text encoders sit under ``conditioner.embedders``, SD 1.x/2.x's under ``cond_stage_model``."""
    keys = [k for k in header if k != "__metadata__"]
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        return "sdxl-refiner"  # OpenCLIP bigG alone
    return "sd"


def width_label(text_width: int) -> str:
    """How to name a base by its text width in a message: "SD 1.x", "SD 2.x", "SDXL" or "N-wide"."""
    for fam in FAMILIES:
        if fam.text_width == text_width:
            return fam.label.split(" 768")[0]
    return OTHER_WIDTHS.get(text_width, f"{text_width}-wide")


def label_on_disk(path: Path, header: dict[str, object] | None = None) -> str | None:
    """A model's family as people say it, read from its configs (a folder) or its tensor names (a
    single file's ``header``) without loading it: for model lists. None when neither tells."""
    if path.is_dir():
        kind = detect_folder(path)
        try:
            text = json.loads((path / "text_encoder" / "config.json").read_text(encoding="utf-8"))
            scheduler = json.loads((path / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            text, scheduler = {}, {}
        if kind == "sd" and text:
            return family_of(int(text.get("hidden_size", 0)), str(scheduler.get("prediction_type", "epsilon"))).label
    elif header is not None:
        kind = detect_file(header)
        if kind == "sd":
            return SD2.label if any(str(k).startswith("cond_stage_model.model.") for k in header) else SD1.label
    else:
        return None
    return {"sdxl": SDXL.label, "sdxl-refiner": "SDXL refiner"}.get(kind or "")
