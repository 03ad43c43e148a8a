"""A1111's Extras and SD upscale: ``extra-single-image``, ``extra-batch-images``, and img2img's
``script_name: "SD upscale"``, each one queued upscale job (``Service.submit_upscale``).

Field names and defaults are A1111's ``ExtrasBaseRequest``. Face restoration (GFPGAN,
CodeFormer) is not part of lanskap: a visibility of 0 is accepted silently, anything else is
accepted with a warning in ``html_info``.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from lanskap.api import a1111
from lanskap.api.a1111_generate import _run
from lanskap.api.deps import ServerState, StateDep
from lanskap.api.schema import COMMON, JOBS
from lanskap.errors import LanskapError
from lanskap.generation.upscale_params import TiledPass, UpscaleRequest
from lanskap.jobs.upscale import UpscaleOutput, UpscaleSource

router = APIRouter(prefix="/sdapi/v1", tags=["A1111"], responses=COMMON)
MAX_BATCH = 16


class ExtrasBody(BaseModel):
    """A1111's ``ExtrasBaseRequest``."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    resize_mode: int = Field(0, ge=0, le=1)  # 0: upscale by, 1: upscale to
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1)
    codeformer_visibility: float = Field(0, ge=0, le=1)
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, ge=1, le=8)
    upscaling_resize_w: int = Field(512, ge=1, le=8192)
    upscaling_resize_h: int = Field(512, ge=1, le=8192)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False


class ExtrasSingleBody(ExtrasBody):
    image: str = ""


class FileData(BaseModel):
    data: str
    name: str = ""


class ExtrasBatchBody(ExtrasBody):
    imageList: list[FileData] = Field(default_factory=list, max_length=MAX_BATCH)


def _request(body: ExtrasBody) -> tuple[UpscaleRequest, list[str]]:
    notes = []
    if body.gfpgan_visibility > 0 or body.codeformer_visibility > 0:
        notes.append("face restoration (GFPGAN, CodeFormer) is not part of lanskap; it was not applied")
    by_size = body.resize_mode == 1
    req = UpscaleRequest(
        upscaler=body.upscaler_1,
        scale=body.upscaling_resize,
        width=body.upscaling_resize_w if by_size else 0,
        height=body.upscaling_resize_h if by_size else 0,
        crop=body.upscaling_crop,
        upscaler_2=body.upscaler_2,
        visibility_2=body.extras_upscaler_2_visibility,
    )
    return req.validate(), notes


def _decode(images: list[tuple[str, str]], max_pixels: int | None) -> list[UpscaleSource]:
    from lanskap.images import to_rgb

    sources = []
    for i, (data, name) in enumerate(images):
        what = name or f"image {i + 1}"
        picture = a1111.decode_image(data, what, max_pixels)
        text = picture.info.get("parameters") if isinstance(picture.info.get("parameters"), str) else None
        sources.append(UpscaleSource(to_rgb(picture), what, text))
    return sources


async def _upscale(state: ServerState, request: Request, req: UpscaleRequest,
                   sources: list[UpscaleSource]) -> UpscaleOutput:  # fmt: skip
    started = time.time()
    job = state.service.submit_upscale(req, sources, source="api")
    await _run(state, job, request)
    state.metrics.generation.observe(time.time() - started)
    if job.result is None:
        raise LanskapError("the upscale was interrupted before it started")
    return job.result


def _html_info(output: UpscaleOutput, notes: list[str]) -> str:
    text = output.infotexts[0].replace("\n", "<br>") if output.infotexts else ""
    warn = "".join(f"<p>{html.escape(n)}</p>" for n in [*notes, *output.notices])
    return f"<p>{html.escape(text).replace('&lt;br&gt;', '<br>')}</p>{warn}"


@router.post("/extra-single-image", responses=JOBS)
async def extra_single_image(body: ExtrasSingleBody, state: StateDep, request: Request) -> dict[str, Any]:
    if not body.image:
        raise LanskapError("image is empty: give one base64 picture")
    req, notes = _request(body)
    sources = await anyio.to_thread.run_sync(
        _decode, [(body.image, "image")], state.cfg.max_input_pixels, limiter=state.decode_slots()
    )
    output = await _upscale(state, request, req, sources)
    image = a1111.encode_png(output.images[0], output.infotexts[0]) if output.images else ""
    return {"html_info": _html_info(output, notes), "image": image}


@router.post("/extra-batch-images", responses=JOBS)
async def extra_batch_images(body: ExtrasBatchBody, state: StateDep, request: Request) -> dict[str, Any]:
    if not body.imageList:
        raise LanskapError("imageList is empty: give at least one {data, name} picture")
    req, notes = _request(body)
    items = [(f.data, f.name) for f in body.imageList]
    sources = await anyio.to_thread.run_sync(_decode, items, state.cfg.max_input_pixels, limiter=state.decode_slots())
    output = await _upscale(state, request, req, sources)
    images = [a1111.encode_png(im, text) for im, text in zip(output.images, output.infotexts, strict=True)]
    return {"html_info": _html_info(output, notes), "images": images}


def sd_upscale_args(body: a1111.Img2ImgBody, state: ServerState) -> tuple[int, str, float]:
    """A1111's SD upscale ``script_args``: [info, overlap, upscaler (index or name), scale factor]."""
    from lanskap.upscale.upscalers import installed

    args = list(body.script_args) + [None] * 4
    overlap = 64 if args[1] is None else args[1]
    chosen = "None" if args[2] is None else args[2]
    scale = 2.0 if args[3] is None else args[3]
    try:
        overlap, scale = int(overlap), float(scale)
    except (TypeError, ValueError):
        raise LanskapError("SD upscale's script_args are [info, overlap, upscaler, scale factor]") from None
    if isinstance(chosen, int) and not isinstance(chosen, bool):
        names = [u.name for u in installed(state.service.settings)]
        if not 0 <= chosen < len(names):
            raise LanskapError(f"upscaler index {chosen} is out of range; there are {len(names)}: {', '.join(names)}")
        chosen = names[chosen]
    return overlap, str(chosen), scale


async def sd_upscale(body: a1111.Img2ImgBody, state: StateDep, request: Request) -> dict[str, Any]:
    """img2img with ``script_name: "SD upscale"``: the first init image, enlarged and repainted tile by tile."""
    from dataclasses import replace

    started = time.time()
    init, mask, notes = await anyio.to_thread.run_sync(
        a1111.img2img_inputs, body, state.cfg.max_input_pixels, limiter=state.decode_slots()
    )
    if mask is not None:
        notes.append("SD upscale ignores the mask")
    overlap, upscaler, scale = sd_upscale_args(body, state)
    tile_req = replace(a1111.build_request(body, state.cfg), num_images=1, batch_size=1)
    tiled = TiledPass(tile_req, body.denoising_strength, overlap)
    req = UpscaleRequest(upscaler=upscaler, scale=scale, tiled=tiled).validate()
    output = await _upscale(state, request, req, [UpscaleSource(init.image, "init_images[0]")])
    seeds = [e.seed for e in output.entries if e is not None]
    info = {"prompt": body.prompt, "negative_prompt": body.negative_prompt, "seed": seeds[0] if seeds else -1,
            "all_seeds": seeds, "infotexts": output.infotexts, "width": tiled.tile[0], "height": tiled.tile[1],
            "denoising_strength": body.denoising_strength, "gallery_ids": output.ids, "warnings": notes,
            "extra_generation_params": {"SD upscale overlap": overlap, "SD upscale upscaler": upscaler},
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(started))}  # fmt: skip
    images = [a1111.encode_png(im, text) for im, text in zip(output.images, output.infotexts, strict=True)]
    params = body.model_dump(exclude={"init_images", "mask"})
    return {"images": images if body.send_images else [], "parameters": params, "info": json.dumps(info)}
