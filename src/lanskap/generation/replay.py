"""Rebuild generation parameters from an image's infotext.

Shared by ``lanskap generate --from``, the API's png-info and the web app's
"use these settings", so every shell reads infotexts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lanskap.errors import LanskapError
from lanskap.generation.infotext import parse_infotext
from lanskap.generation.schedulers import get_sampler

if TYPE_CHECKING:
    from lanskap.generation.params import HiresFix


@dataclass(frozen=True)
class Replay:
    fields: dict[str, Any]  # GenerationRequest keyword arguments
    model: str | None
    model_hash: str | None
    source_mode: str = "txt2img"  # img2img/inpaint images need their input picture, which infotext lacks


def replay_from_infotext(text: str) -> Replay:
    """Parameters that regenerate the image this infotext describes."""
    p = parse_infotext(text)
    fields: dict[str, Any] = {"prompt": p["Prompt"], "negative_prompt": p["Negative prompt"]}
    if p.get("Prompt 2"):
        fields["prompt_2"] = p["Prompt 2"]
    if p.get("Refiner"):  # A1111's "name [hash]"
        fields["refiner"] = p["Refiner"].rsplit(" [", 1)[0]
    try:
        if "Steps" in p:
            fields["steps"] = int(p["Steps"])
        if "CFG scale" in p:
            fields["guidance"] = float(p["CFG scale"])
        if "Seed" in p:
            fields["seed"] = int(p["Seed"])
        if "Size" in p:
            w, h = p["Size"].lower().split("x")
            fields["width"], fields["height"] = int(w), int(h)
        if "Clip skip" in p:
            fields["clip_skip"] = int(p["Clip skip"])
        if "ENSD" in p:
            fields["ensd"] = int(p["ENSD"])
        if "Refiner switch at" in p:
            fields["refiner_switch_at"] = float(p["Refiner switch at"])
    except ValueError:
        raise LanskapError(
            "the image's parameters are malformed (Steps, CFG scale, Seed, Size, Clip skip, ENSD or Refiner switch at)"
        ) from None
    # A lanskap image made without the watermark is remade without it, so --from gives the same pixels;
    # images from other programs get lanskap's default.
    if "Watermark" in p or p.get("Version", "").startswith("lanskap"):
        fields["watermark"] = "Watermark" in p
    if "Sampler" in p:
        schedule = p.get("Schedule type")
        if schedule == "Automatic" and p.get("Version", "").startswith("lanskap"):
            schedule = "Uniform"  # earlier lanskap wrote "Automatic" for the model's own schedule
        fields["scheduler"] = get_sampler(p["Sampler"], schedule).label
    if "Tiling" in p:
        from lanskap.generation.tiling import from_infotext

        fields["tiling"] = from_infotext(p["Tiling"])
    from lanskap.generation import levers

    fields.update(levers.from_infotext(p))
    if "Hires upscale" in p or "Hires resize" in p:
        fields["hires"] = _hires(p)
    from lanskap.generation import panorama, regions

    if (pano := panorama.from_infotext(p)) is not None:
        fields["panorama"] = pano
    if (layout := regions.from_infotext(p)) is not None:
        fields["regions"] = layout
    from lanskap.control.units import from_infotext as control_units

    if units := control_units(p):
        fields["control"] = units  # without their pictures, which no infotext holds
    mode = "img2img" if "Denoising strength" in p and "hires" not in fields else "txt2img"
    if "Mask blur" in p:
        mode = "outpaint" if "Outpaint" in p else "inpaint"
    if "Depth map" in p:
        mode = "depth2img"
    return Replay(fields, p.get("Model"), p.get("Model hash"), mode)


def _hires(p: dict[str, str]) -> HiresFix:
    """A1111's hires-fix keys back into a :class:`HiresFix` (its defaults where a key is missing)."""
    from lanskap.generation.params import HiresFix

    try:
        rx, ry = (int(v) for v in p.get("Hires resize", "0x0").lower().split("x"))
        sampler = p.get("Hires sampler", "")
        if sampler:
            sampler = get_sampler(sampler, p.get("Hires schedule type")).label
        return HiresFix(
            scale=float(p.get("Hires upscale", 2)),
            upscaler=p.get("Hires upscaler", "Latent"),
            steps=int(p.get("Hires steps", 0)),
            denoise=float(p.get("Denoising strength", 0.7)),
            resize_x=rx,
            resize_y=ry,
            sampler=sampler,
            prompt=p.get("Hires prompt", ""),
            negative_prompt=p.get("Hires negative prompt", ""),
        )
    except ValueError:
        raise LanskapError(
            "the image's hires-fix parameters are malformed (Hires upscale, Hires resize, Hires steps or "
            "Denoising strength)"
        ) from None
