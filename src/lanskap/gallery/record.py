"""Saving a generation result: the image files, and their gallery rows unless opted out.

The CLI, the API and the web app all save through :func:`save_result`, so every
image lands in the gallery the same way, with the same fields.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanskap.gallery.store import Entry, Gallery
from lanskap.generation.output import check_format, encode_image, save_bytes

if TYPE_CHECKING:
    from lanskap.generation.engine import GenerationResult


def gallery_record(result: GenerationResult, index: int, source: str) -> dict[str, Any]:
    """The row for image ``index`` of ``result``: every parameter that made it, and its cost."""
    req = result.request
    seed = result.seeds[index]
    image = result.images[index]
    params = replace(req, seed=seed, num_images=1).to_dict()
    return {
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "seed": seed,
        "steps": req.steps,
        "guidance": req.guidance,
        "sampler": req.scheduler,
        "width": image.width,
        "height": image.height,
        "mode": req.task,
        "model": result.model_name,
        "model_hash": result.model_hash,
        "loras": [{"name": lo.name, "scale": lo.scale, "hash": lo.hash} for lo in result.loras],
        "params": params,
        "infotext": result.infotexts[index],
        "seconds": round(result.seconds / max(1, len(result.images)), 4),
        "device": result.device,
        "dtype": result.dtype,
        "source": source,
    }


def save_result(
    result: GenerationResult, folder: Path, fmt: str = "png", gallery: Gallery | None = None, source: str = "cli"
) -> list[tuple[Path, Entry | None]]:
    """Write every image of ``result`` into ``folder`` (A1111 names), recording each in ``gallery``."""
    fmt = check_format(fmt)
    saved: list[tuple[Path, Entry | None]] = []
    for i, (image, seed, text) in enumerate(zip(result.images, result.seeds, result.infotexts, strict=True)):
        data = encode_image(image, fmt, text)
        if gallery is None:
            saved.append((save_bytes(data, folder, seed, fmt), None))
        else:
            entry = gallery.add(data, folder, fmt, gallery_record(result, i, source))
            saved.append((entry.path, entry))
    return saved
