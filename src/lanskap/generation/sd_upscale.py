"""SD upscale: img2img over an enlarged picture, tile by tile, the tiles blended.

Each tile is an ordinary img2img job on the engine (LoRAs, samplers, prompt syntax all apply),
at the tile's size, so memory is bounded by the tile however large the picture. Tile k (row by
row) is made from seed + k, which is what A1111's script does at batch size 1, so a rerun with the
same settings gives the same picture.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from PIL import Image

from lanskap.generation.infotext import build_infotext, parse_infotext
from lanskap.generation.params import InitImage
from lanskap.upscale.tiles import Blender, grid

if TYPE_CHECKING:
    from lanskap.generation.engine import Engine, GenerationResult, Progress
    from lanskap.generation.upscale_params import TiledPass

#: Reports (done, total, message, latents or None) over all tiles x steps.
TileProgress = Callable[[int, int, str, object], None]


def tile_count(width: int, height: int, tiled: TiledPass) -> int:
    tw, th = tiled.tile
    return len(grid(width, height, tw, th, tiled.overlap))


def sd_upscale(
    engine: Engine,
    image: Image.Image,
    tiled: TiledPass,
    *,
    progress: TileProgress | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Image.Image, GenerationResult]:
    """The picture repainted tile by tile at ``tiled.denoise``; also the first tile's result (its
    infotext, model and seed describe the job)."""
    req = tiled.request.with_seed()
    assert req.seed is not None
    tw, th = tiled.tile
    boxes = grid(image.width, image.height, tw, th, tiled.overlap)
    blender = Blender(image.width, image.height, boxes)
    first: GenerationResult | None = None
    steps_per_tile = max(1, min(int(req.steps * tiled.denoise), req.steps))
    total = steps_per_tile * len(boxes)
    for box in boxes:
        tile_req = replace(
            req,
            init=InitImage(box.crop(image), tiled.denoise, "just-resize"),
            width=box.w,
            height=box.h,
            seed=req.seed + box.index,
            num_images=1,
            batch_size=1,
            watermark=False,
            hires=None,
        )

        def relay(p: Progress, k: int = box.index) -> None:
            if progress is not None:
                done = k * steps_per_tile + p.done
                progress(done, total, f"tile {k + 1} of {len(boxes)}, step {p.step} of {p.steps}", p.latents)

        result = engine.generate(tile_req, progress=relay, cancel=cancel)
        first = first or result
        blender.add(box, result.images[0])
    assert first is not None
    return blender.image(), first


def infotext(first: GenerationResult, tiled: TiledPass, upscaler: str, scale: float) -> str:
    """The first tile's infotext (Size is the tile's, Seed the first tile's), with A1111's SD upscale keys."""
    from lanskap.generation.infotext import format_number

    p = parse_infotext(first.infotexts[0])
    prompt, negative = p.pop("Prompt"), p.pop("Negative prompt")
    p.pop("Watermark", None)
    p.pop("Resize mode", None)
    p["Size"] = "x".join(map(str, tiled.tile))
    p["SD upscale overlap"] = str(tiled.overlap)
    p["SD upscale upscaler"] = upscaler
    p["SD upscale scale"] = format_number(scale)
    return build_infotext(prompt, negative, p)
