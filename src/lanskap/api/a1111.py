"""AUTOMATIC1111's ``/sdapi/v1`` on top of the Service, so existing A1111 clients work unchanged.

Field names and defaults are A1111's (steps 50, cfg 7, 512×512, seed -1, …).
Fields lanskap has no equivalent for are accepted and ignored, and the
response's ``info`` says which ones were ignored, rather than rejecting the
request as a strict schema would.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from lanskap import __version__
from lanskap.errors import LanskapError

if TYPE_CHECKING:
    from lanskap.api.security import ServeConfig
    from lanskap.config import Settings
    from lanskap.generation.panorama import Panorama
    from lanskap.generation.params import GenerationRequest, HiresFix, InitImage, InpaintMask
    from lanskap.generation.regions import Layout
    from lanskap.jobs.generation import GenerationOutput

#: lanskap's composition fields on A1111's bodies (A1111 itself has none).
COMPOSE_FIELDS = ("panorama", "regions", "region_base")
#: A1111's own "nothing set" values; a field at one of these is not worth a warning.
_QUIET = (None, False, 0, 0.0, -1, "", [], {})

#: A1111 fields lanskap reads (everything else is ignored with a warning unless at a quiet value).
TXT2IMG_FIELDS = {
    "prompt",
    "negative_prompt",
    "seed",
    "sampler_name",
    "sampler_index",
    "scheduler",
    "batch_size",
    "n_iter",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "send_images",
    "save_images",
    "override_settings",
    "override_settings_restore_afterwards",
    "styles",
    "do_not_save_samples",
    "do_not_save_grid",
    "enable_hr",
    "hr_scale",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
    "denoising_strength",
    "tiling",
    *COMPOSE_FIELDS,
    "speed",
    "cache_interval",
    "cache_start",
    "token_merging",
    "token_merging_downsample",
    "alwayson_scripts",
    "refiner_checkpoint",
    "refiner_switch_at",
    "prompt_2",
}
IMG2IMG_FIELDS = TXT2IMG_FIELDS | {
    "init_images",
    "resize_mode",
    "denoising_strength",
    "mask",
    "mask_blur",
    "mask_blur_x",
    "mask_blur_y",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",
    "include_init_images",
    "script_name",
    "script_args",
    "depth_map",
} - {"enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
     "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt"}  # fmt: skip
RESIZE_MODES = {0: "just-resize", 1: "crop-and-resize", 2: "resize-and-fill", 3: "just-resize"}
FILL_MODES = {0: "fill", 1: "original", 2: "noise", 3: "fill"}


class PanoramaBody(BaseModel):
    """lanskap's panorama (not A1111's): the canvas is width x height, denoised in fused windows."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    window: int = Field(0, ge=0, le=8192, description="Window side in px; 0: the model's native size")
    stride: int = Field(0, ge=0, le=8192, description="Pixels between windows; 0: half the window")
    batch: int = Field(4, ge=1, le=64, description="Windows per model call (memory, not the picture)")
    equirectangular: bool = Field(False, description="A 2:1 360° sky: wraps round, calm poles")


class RegionBody(BaseModel):
    """One regional prompt: a box in fractions of the canvas (or a painted mask, a base64 PNG)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(max_length=8000)
    box: list[float] = Field(default_factory=lambda: [0.0, 0.0, 1.0, 1.0], min_length=4, max_length=4)
    negative_prompt: str = Field("", max_length=8000)
    weight: float = 1.0
    mask: str | None = Field(None, max_length=8_000_000, description="base64 PNG, white = in the region")


class Txt2ImgBody(BaseModel):
    """A1111's StableDiffusionTxt2ImgProcessingAPI (the fields lanskap uses, and anything else)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)  # NaN/Infinity are refused at the door

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = Field(-1, ge=-1, le=2**63 - 1)
    sampler_name: str | None = None
    sampler_index: str | None = "Euler"
    scheduler: str | None = None
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=1000)
    steps: int = Field(50, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0, le=100)
    width: int = Field(512, ge=64, le=8192)
    height: int = Field(512, ge=64, le=8192)
    send_images: bool = True
    save_images: bool = False
    override_settings: dict[str, Any] = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    styles: list[str] = Field(default_factory=list)
    tiling: bool | None = None  # A1111's seamless tiling (both axes)
    # SDXL: A1111's refiner (a checkpoint title or name; None, "" or "None": no refiner).
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = Field(None, ge=0.01, le=1)
    prompt_2: str = Field("", description="lanskap's own: SDXL's second text encoder's prompt (diffusers' prompt_2)")
    # lanskap's own: panoramas and regional prompts (generation/panorama.py, regions.py).
    panorama: PanoramaBody | None = None
    regions: list[RegionBody] | None = Field(None, max_length=64)
    region_base: float = Field(0.2, ge=0, le=1)
    # lanskap's own speed levers (generation/levers.py); unset: the server's speed level decides.
    speed: Literal["quality", "balanced", "fast"] | None = None
    cache_interval: int | None = Field(None, ge=0, le=10, description="Deep UNet blocks every N steps; 0 = off")
    cache_start: float | None = Field(None, ge=0, lt=1, description="Share of the steps run in full first")
    token_merging: float | None = Field(None, ge=0, le=0.75, description="Share of tokens merged; 0 = off")
    token_merging_downsample: Literal[1, 2, 4, 8] = 1
    # Hires fix (A1111's StableDiffusionProcessingTxt2Img fields and defaults).
    enable_hr: bool = False
    denoising_strength: float | None = Field(None, ge=0, le=1)
    hr_scale: float = Field(2.0, ge=1, le=4)
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = Field(0, ge=0, le=150)
    hr_resize_x: int = Field(0, ge=0, le=8192)
    hr_resize_y: int = Field(0, ge=0, le=8192)
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    # A1111's scripts: lanskap runs "SD upscale" (img2img); others are refused by name.
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list, max_length=64)
    # Extensions' always-on scripts: lanskap runs "controlnet" (sd-webui-controlnet's units).
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)


class Img2ImgBody(Txt2ImgBody):
    """A1111's StableDiffusionImg2ImgProcessingAPI."""

    init_images: list[str] = Field(default_factory=list)
    resize_mode: int = Field(0, ge=0, le=3)
    denoising_strength: float = Field(0.75, ge=0, le=1)
    mask: str | None = None
    mask_blur: int | None = Field(None, ge=0, le=64)
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    inpainting_fill: int = Field(0, ge=0, le=3)
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = Field(0, ge=0, le=512)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    include_init_images: bool = False
    # lanskap's own: depth2img's depth picture (white near), for an SD 2 depth model; else its estimate.
    depth_map: str | None = Field(None, max_length=40_000_000)


class PngInfoBody(BaseModel):
    image: str


def decode_bytes(data: str, what: str = "image") -> bytes:
    """The bytes of a base64 picture, bare or as a data URL (A1111 accepts both)."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)  # line breaks allowed, junk not
    except (binascii.Error, ValueError):
        raise LanskapError(f"{what} is not valid base64") from None
    if not raw:
        raise LanskapError(f"{what} is empty")
    return raw


def decode_image(data: str, what: str = "image", max_pixels: int | None = None) -> Image.Image:
    """A base64 picture, decoded fully with its EXIF orientation applied (its size checked first)."""
    from lanskap.images import MAX_PIXELS, open_image

    buf = io.BytesIO(decode_bytes(data, what))
    buf.name = what
    return open_image(buf, what, max_pixels or MAX_PIXELS)


def _response_images(output: GenerationOutput) -> list[str]:
    """Each image as base64 PNG: a saved PNG's own bytes (encoded once, by save_result), the others
    (images stopped early, which the gallery doesn't keep, or a JPG/WebP save) encoded here."""
    result = output.result
    saved = iter(output.paths)
    images = []
    for i, (image, text) in enumerate(zip(result.images, result.infotexts, strict=True)):
        path = None if result.partial and result.partial[i] else next(saved, None)
        if path is not None and path.suffix.lower() == ".png" and path.is_file():
            images.append(base64.b64encode(path.read_bytes()).decode("ascii"))
        else:
            images.append(encode_png(image, text))
    return images


def encode_png(image: Image.Image, infotext: str | None) -> str:
    from lanskap.generation.output import encode_image

    return base64.b64encode(encode_image(image, "png", infotext)).decode("ascii")


def ignored_fields(body: BaseModel, supported: set[str]) -> list[str]:
    """Fields the client set to something lanskap can't honour."""
    given = dict(body.model_extra or {})
    given.update({k: getattr(body, k) for k in body.model_fields_set})
    return sorted(k for k, v in given.items() if k not in supported and v not in _QUIET)


def sampler_label(body: Txt2ImgBody) -> str:
    from lanskap.generation.schedulers import get_sampler

    name = body.sampler_name or body.sampler_index or "Euler"
    return get_sampler(name, body.scheduler).label


def build_request(
    body: Txt2ImgBody, limits: ServeConfig, init: InitImage | None = None, mask: InpaintMask | None = None
) -> GenerationRequest:
    """A lanskap GenerationRequest from an A1111 body, within the server's limits."""
    from lanskap.generation.params import GenerationRequest

    if max(len(body.prompt), len(body.negative_prompt), len(body.prompt_2)) > limits.max_prompt_chars:
        raise LanskapError(f"prompt too long: at most {limits.max_prompt_chars} characters")
    images = body.batch_size * body.n_iter
    if images > limits.max_images:
        raise LanskapError(f"batch_size x n_iter is {images}; this server allows at most {limits.max_images}")
    top = limits.max_side if body.panorama is None else limits.max_panorama_side
    if max(body.width, body.height) > top:
        raise LanskapError(f"width and height must be at most {top}" + (" for a panorama" if body.panorama else ""))
    if body.steps > limits.max_steps:
        raise LanskapError(f"steps must be at most {limits.max_steps}")
    hires = _hires(body, limits) if body.enable_hr and init is None else None
    request = GenerationRequest(
        hires=hires,
        tiling="xy" if body.tiling else "",
        panorama=_panorama(body),
        regions=_regions(body),
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        prompt_2=body.prompt_2,
        seed=None if body.seed == -1 else body.seed,
        steps=body.steps,
        guidance=body.cfg_scale,
        width=body.width // 8 * 8,
        height=body.height // 8 * 8,
        num_images=images,
        batch_size=body.batch_size,
        scheduler=sampler_label(body),
        init=init,
        mask=mask,
        cache_interval=body.cache_interval,
        cache_start=body.cache_start,
        token_merging=body.token_merging,
        model_defaults=_unset(body),
        token_merging_downsample=body.token_merging_downsample,
    ).validate()
    if body.speed is not None:  # this request's level, for the levers it leaves unset
        from lanskap.generation.levers import resolve

        request = resolve(request, body.speed)
    return request


def _unset(body: Txt2ImgBody) -> tuple[str, ...]:
    """What the client didn't send of steps, CFG and sampler: a distilled model's own values fill them."""
    keys = {"steps": {"steps"}, "guidance": {"cfg_scale"}, "scheduler": {"sampler_name", "sampler_index", "scheduler"}}
    return tuple(f for f, names in keys.items() if not names & body.model_fields_set)


def _panorama(body: Txt2ImgBody) -> Panorama | None:
    from lanskap.generation.panorama import Panorama

    return Panorama(**body.panorama.model_dump()) if body.panorama is not None else None


def _regions(body: Txt2ImgBody) -> Layout | None:
    from lanskap.generation.regions import from_list

    if not body.regions:
        return None
    return from_list([r.model_dump(exclude_none=True) for r in body.regions], body.region_base)


def _hires(body: Txt2ImgBody, limits: ServeConfig) -> HiresFix:
    """A1111's hr_* fields as a HiresFix (``hr_upscaler`` None is A1111's default latent mode)."""
    from lanskap.generation.params import HiresFix
    from lanskap.generation.schedulers import get_sampler

    sampler = ""
    if body.hr_sampler_name and body.hr_sampler_name != "Use same sampler":
        sampler = get_sampler(body.hr_sampler_name, body.hr_scheduler).label
    fix = HiresFix(
        scale=body.hr_scale,
        upscaler=body.hr_upscaler or "Latent",
        steps=body.hr_second_pass_steps,
        denoise=0.75 if body.denoising_strength is None else body.denoising_strength,  # A1111's txt2img default
        resize_x=body.hr_resize_x,
        resize_y=body.hr_resize_y,
        sampler=sampler,
        prompt=body.hr_prompt,
        negative_prompt=body.hr_negative_prompt,
    )
    w, h, _, _ = fix.target(body.width // 8 * 8, body.height // 8 * 8)
    if max(w, h) > limits.max_side:
        raise LanskapError(f"hires fix would make {w}x{h}; this server allows at most {limits.max_side} a side")
    return fix


def without_missing_loras(body: Txt2ImgBody, settings: Settings) -> tuple[Txt2ImgBody, list[str]]:
    """A1111 makes the image without a LoRA it can't find (and says so); names that are not plain
    names (paths, traversal) stay in, to be refused."""
    from lanskap.generation.lora import lora_missing
    from lanskap.prompts.lora_tags import drop_lora_tags, extract_lora_tags

    missing = sorted({s.name for s in extract_lora_tags(body.prompt)[1] if lora_missing(s.name, settings)})
    if not missing:
        return body, []
    return body.model_copy(update={"prompt": drop_lora_tags(body.prompt, set(missing))}), missing


def img2img_inputs(body: Img2ImgBody, max_pixels: int | None = None) -> tuple[InitImage, InpaintMask | None, list[str]]:
    """InitImage and InpaintMask from A1111's img2img fields, plus warnings for approximations."""
    from lanskap.generation.params import InitImage, InpaintMask
    from lanskap.images import to_rgb

    if not body.init_images:
        raise LanskapError("init_images is empty: give one base64 picture")
    notes = []
    if len(body.init_images) > 1:
        notes.append("only the first of init_images is used")
    if body.resize_mode == 3:
        notes.append("resize_mode 3 (latent upscale) is done as 0 (just resize)")
    image = to_rgb(decode_image(body.init_images[0], "init_images[0]", max_pixels))
    init = InitImage(image, body.denoising_strength, RESIZE_MODES[body.resize_mode])
    if body.mask is None:
        return init, None, notes
    mask = decode_image(body.mask, "mask", max_pixels).convert("L")
    if body.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.Resampling.NEAREST)
        notes.append("the mask was resized to the picture's size")
    if body.inpainting_fill == 3:
        notes.append("inpainting_fill 3 (latent nothing) is done as 0 (fill)")
    blur = body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y)
    padding = body.inpaint_full_res_padding
    return init, InpaintMask(mask, blur, FILL_MODES[body.inpainting_fill], body.inpaint_full_res, padding), notes


def response(
    body: Txt2ImgBody,
    output: GenerationOutput,
    warnings: list[str],
    started: float,
    maps: bool = True,
    replica: str | None = None,
) -> dict[str, Any]:
    """A1111's ``{"images", "parameters", "info"}``; ``info`` is a JSON string, as A1111 sends it
    (with the ``replica`` that made it, on a scaled server)."""
    result = output.result
    req = result.request
    n = len(result.images)
    # As A1111's Processed: "prompt" is the request's, "all_prompts" what each image used (styles applied).
    info = {
        "prompt": body.prompt,
        "all_prompts": [req.prompt] * n,
        "negative_prompt": body.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * n,
        "seed": result.seeds[0],
        "all_seeds": result.seeds,
        "subseed": result.seeds[0],
        "all_subseeds": result.seeds,
        "subseed_strength": 0,
        "width": req.width,
        "height": req.height,
        "sampler_name": req.scheduler,
        "cfg_scale": req.guidance,
        "steps": req.steps,
        "batch_size": req.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": result.model_name,
        "sd_model_hash": result.model_hash,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": _denoising(req),
        "extra_generation_params": _extra_params(req),
        "index_of_first_image": 0,
        "infotexts": result.infotexts,
        "styles": list(body.styles),
        "job_timestamp": datetime.fromtimestamp(started).strftime("%Y%m%d%H%M%S"),
        "clip_skip": req.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": f"lanskap {__version__}",
        "warnings": warnings,
        "gallery_ids": output.ids,
        "loras": [lo.__dict__ for lo in result.loras],
        "interrupted": result.interrupted,
        "skipped_images": [i for i, stopped in enumerate(result.partial) if stopped],
    }
    if replica:
        info["replica"] = replica
    images = _response_images(output)
    if maps:  # the ControlNet extension's habit: the preprocessed maps follow the images
        images += [encode_png(m, None) for k, m in result.maps.items() if k.startswith("ControlNet")]
    params = body.model_dump()
    for key in ("init_images", "mask", "depth_map"):
        if key in params:
            params[key] = None  # A1111 echoes the request; pictures are not sent back
    for unit in _units_echo(params):
        for key in ("image", "input_image", "mask"):
            if unit.get(key):
                unit[key] = None
    return {"images": images if body.send_images else [], "parameters": params, "info": json.dumps(info)}


def _units_echo(params: dict[str, Any]) -> list[dict[str, Any]]:
    scripts = params.get("alwayson_scripts") or {}
    entry = next((v for k, v in scripts.items() if k.strip().lower() == "controlnet"), None)
    args = entry.get("args") if isinstance(entry, dict) else None
    return [u for u in args if isinstance(u, dict)] if isinstance(args, list) else []


def _denoising(req: GenerationRequest) -> float:
    if req.init is not None:
        return req.init.strength
    return req.hires.denoise if req.hires is not None else 0


def _extra_params(req: GenerationRequest) -> dict[str, Any]:
    """A1111's ``extra_generation_params``: ENSD, token merging, and the hires fix's keys."""
    extra: dict[str, Any] = {"ENSD": req.ensd} if req.ensd and req.mode == "txt2img" else {}
    if req.tiling:
        from lanskap.generation.tiling import infotext

        extra.update(infotext(req.tiling))
    from lanskap.generation import levers

    extra.update(levers.infotext(req))
    if req.refiner:
        extra["Refiner"] = Path(req.refiner).name
        extra["Refiner switch at"] = req.refiner_switch_at
    if req.hires is not None:
        h = req.hires
        if h.resize_x or h.resize_y:
            extra["Hires resize"] = f"{h.resize_x}x{h.resize_y}"
        else:
            extra["Hires upscale"] = h.scale
        if h.steps:
            extra["Hires steps"] = h.steps
        extra["Hires upscaler"] = h.upscaler
        extra["Denoising strength"] = h.denoise
    return extra
