"""Upscaling as a job: enlarge pictures (A1111's Extras, or SD upscale), save each with its infotext
into the gallery, linked to the picture it came from.

The CLI (``lanskap upscale``), the API (``extra-single-image``, ``extra-batch-images``, img2img's
``SD upscale`` script) and the web app's Upscale tab all end here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from lanskap.gpulock import gpu_lock
from lanskap.images import center_crop
from lanskap.jobs.control import JobControl

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.gallery.store import Entry, Gallery
    from lanskap.generation.engine import Engine, GenerationResult
    from lanskap.generation.upscale_params import UpscaleRequest


@dataclass
class UpscaleSource:
    """One picture to enlarge, and where it came from (its infotext is carried on)."""

    image: Image.Image
    name: str = "image"
    infotext: str | None = None
    gallery_id: int | None = None
    path: Path | None = None


@dataclass
class UpscaleOutput:
    images: list[Image.Image]
    infotexts: list[str]
    paths: list[Path]
    entries: list[Entry | None]
    sources: list[UpscaleSource]
    seconds: float
    notices: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.entries if e is not None]

    def summary(self) -> dict[str, Any]:
        return {
            "images": [str(p) for p in self.paths],
            "gallery_ids": self.ids,
            "mode": "upscale",
            "sizes": [list(im.size) for im in self.images],
            "sources": [s.gallery_id if s.gallery_id is not None else s.name for s in self.sources],
            "seconds": round(self.seconds, 3),
            "infotexts": self.infotexts,
            "notices": self.notices,
        }


def check_upscale(request: UpscaleRequest, settings: Settings, *, allow_paths: bool = True) -> UpscaleRequest:
    """Bounds, upscaler names and (SD upscale) LoRA names checked, and the seed fixed, before any work."""
    from lanskap.jobs.generation import check_generation

    request.validate()
    request.check_names(settings)
    if request.tiled is not None:
        tiled_req = check_generation(request.tiled.request, settings, allow_paths=allow_paths)
        request = replace(request, tiled=replace(request.tiled, request=tiled_req))
    return request


def check_sizes(request: UpscaleRequest, images: list[Image.Image]) -> None:
    """Every result fits the size limit (one-line error naming the first that doesn't)."""
    for im in images:
        request.sizes(*im.size)


def _postprocess_text(src: UpscaleSource, req: UpscaleRequest, size: tuple[int, int],
                      crop: tuple[int, int] | None, scale: float) -> str:  # fmt: skip
    """The source's infotext with A1111's postprocessing keys added (a bare record for a foreign picture)."""
    from lanskap import __version__
    from lanskap.generation.infotext import build_infotext, format_number, parse_infotext

    p = parse_infotext(src.infotext) if src.infotext else {"Prompt": "", "Negative prompt": ""}
    prompt, negative = p.pop("Prompt"), p.pop("Negative prompt")
    p.pop("Watermark", None)
    if not src.infotext:
        p["Size"] = f"{src.image.width}x{src.image.height}"
    if req.width or req.height:
        p["Postprocess upscale to"] = f"{req.width}x{req.height}"
        if crop is not None:
            p["Postprocess crop to"] = f"{crop[0]}x{crop[1]}"
    else:
        p["Postprocess upscale by"] = format_number(scale)
    p["Postprocess upscaler"] = req.upscaler
    if req.visibility_2 > 0:
        p["Postprocess upscaler 2"] = f"{req.upscaler_2} ({format_number(req.visibility_2)})"
    p["Version"] = f"lanskap {__version__}"
    return build_infotext(prompt, negative, p)


def _enlarge(engine: Engine, src: UpscaleSource, req: UpscaleRequest, control: JobControl,
             label: str) -> tuple[Image.Image, tuple[int, int], tuple[int, int] | None]:  # fmt: skip
    from lanskap.upscale.upscalers import find

    size, crop = req.sizes(*src.image.size)

    def tick(done: int, total: int, what: str) -> None:
        control.report(done, total, f"{label}: {what}")

    first = find(req.upscaler, engine.settings)
    if first.kind == "none":  # A1111: Extras and SD upscale leave the picture's size alone with "None"
        return src.image.convert("RGB"), src.image.size, None
    seed = req.tiled.request.seed or 0 if req.tiled is not None else 0
    big = engine.upscalers.upscale(src.image, first, size, tick=tick, cancel=control.cancel, seed=seed)
    if req.visibility_2 > 0 and req.upscaler_2 != "None":
        second = find(req.upscaler_2, engine.settings)
        other = engine.upscalers.upscale(src.image, second, size, tick=tick, cancel=control.cancel, seed=seed)
        big = Image.blend(big, other, req.visibility_2)
    if crop is not None and crop != big.size:
        big = center_crop(big, crop)
    return big, size, crop


def upscale_one(engine: Engine, src: UpscaleSource, req: UpscaleRequest, control: JobControl,
                label: str) -> tuple[Image.Image, str, GenerationResult | None]:  # fmt: skip
    """One picture enlarged (and, for SD upscale, repainted tile by tile): the picture, its infotext
    and, for SD upscale, the first tile's result (its parameters describe the job)."""
    from lanskap.generation import sd_upscale

    big, size, crop = _enlarge(engine, src, req, control, label)
    scale = req.scale if not (req.width or req.height) else size[0] / src.image.width
    if big.size == src.image.size:
        scale = 1
    if req.tiled is None:
        return big, _postprocess_text(src, req, size, crop, scale), None

    def relay(done: int, total: int, message: str, latents: object) -> None:
        control.report(done, total, f"{label}: {message}")
        if latents is not None:
            control.preview(latents)

    big, first = sd_upscale.sd_upscale(engine, big, req.tiled, progress=relay, cancel=control.cancel)
    return big, sd_upscale.infotext(first, req.tiled, req.upscaler, scale), first


def _watermarked(image: Image.Image, text: str) -> tuple[Image.Image, str]:
    from lanskap.generation.infotext import build_infotext, parse_infotext
    from lanskap.generation.watermark import MESSAGE, apply_watermark

    marked = apply_watermark(image)
    if marked is None:
        return image, text
    p = parse_infotext(text)
    prompt, negative = p.pop("Prompt"), p.pop("Negative prompt")
    p["Watermark"] = MESSAGE.decode()
    return marked, build_infotext(prompt, negative, p)


def run_upscale(
    engine: Engine,
    sources: list[UpscaleSource],
    request: UpscaleRequest,
    folder: Path,
    *,
    fmt: str = "png",
    gallery: Gallery | None = None,
    source: str = "cli",
    control: JobControl | None = None,
) -> UpscaleOutput:
    """Enlarge each picture and save it as soon as it is done (an interrupted job keeps those)."""
    from lanskap.errors import CancelledError
    from lanskap.generation.output import check_format, encode_image, save_bytes

    fmt = check_format(fmt)
    control = control or JobControl()
    check_sizes(request, [s.image for s in sources])
    Path(folder).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    out = UpscaleOutput([], [], [], [], [], 0.0)
    with gpu_lock(engine.settings.home, on_wait=control.on_wait):
        for i, src in enumerate(sources):
            label = f"image {i + 1} of {len(sources)}" if len(sources) > 1 else "upscaling"
            t0 = time.perf_counter()
            try:
                image, text, first = upscale_one(engine, src, request, control, label)
            except CancelledError:
                out.notices.append(f"interrupted: {len(out.images)} of {len(sources)} picture(s) upscaled")
                break
            if request.watermark:
                image, text = _watermarked(image, text)
            data = encode_image(image, fmt, text)
            record = _record(src, request, image, text, first, engine, source, time.perf_counter() - t0)
            if gallery is None:
                path, entry = save_bytes(data, folder, int(record["seed"]), fmt), None
            else:
                entry = gallery.add(data, folder, fmt, record)
                path = entry.path
            image.info["parameters"] = text
            out.images.append(image)
            out.infotexts.append(text)
            out.paths.append(path)
            out.entries.append(entry)
            out.sources.append(src)
    out.seconds = time.perf_counter() - started
    return out


def _record(src: UpscaleSource, req: UpscaleRequest, image: Image.Image, text: str,
            first: GenerationResult | None, engine: Engine, source: str, seconds: float) -> dict[str, Any]:  # fmt: skip
    """The gallery row: the upscale's settings and a link to the picture it came from.

    SD upscale's row is its first tile's (``gallery_record``); an Extras row keeps its source's
    prompt and seed, as its file name does.
    """
    from lanskap.gallery.record import gallery_record
    from lanskap.generation.infotext import parse_infotext

    if first is not None:
        row = gallery_record(first, 0, source)
    else:
        p = parse_infotext(src.infotext) if src.infotext else {}
        seed = p.get("Seed", "")
        row = {
            "prompt": p.get("Prompt", ""),
            "negative_prompt": p.get("Negative prompt", ""),
            "seed": int(seed) if seed.isdigit() else 0,
            "model": req.upscaler,
            "device": str(engine.placement.device),
            "dtype": engine.placement.dtype_name,
            "source": source,
        }
    row.update(
        width=image.width,
        height=image.height,
        mode="upscale",
        params={
            "upscale": req.to_dict(),
            "source_id": src.gallery_id,
            "source_path": str(src.path) if src.path else None,
            "source_name": src.name,
            "source_size": list(src.image.size),
        },
        infotext=text,
        seconds=round(seconds, 4),
    )
    return row
