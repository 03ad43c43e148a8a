"""Generation as a job: check the request once, generate under the GPU lock, save to the gallery.

The CLI (``generate``, ``img2img``, ``inpaint``, ``outpaint``, prompt files) and the
Service (the API and the web app) both end in :func:`run_generation`, and a finished
generation becomes JSON only through :meth:`GenerationOutput.summary`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanskap.gpulock import gpu_lock
from lanskap.jobs.control import JobControl

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.gallery.store import Entry, Gallery
    from lanskap.generation.engine import Engine, GenerationResult, Progress
    from lanskap.generation.params import GenerationRequest


@dataclass
class GenerationOutput:
    """What a finished generation job hands back: the engine's result and where each image went."""

    result: GenerationResult
    paths: list[Path]
    entries: list[Entry | None]

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.entries if e is not None]

    def summary(self) -> dict[str, Any]:
        """The job as JSON: files, gallery ids, seeds, model, timing and every image's infotext."""
        result = self.result
        return {
            "images": [str(p) for p in self.paths],
            "gallery_ids": self.ids,
            "seeds": result.seeds,
            "mode": result.request.task,
            "size": list(result.images[0].size) if result.images else [result.request.width, result.request.height],
            "model": result.model_name,
            "model_hash": result.model_hash,
            "seconds": round(result.seconds, 3),
            "device": result.device,
            "dtype": result.dtype,
            "loras": [lo.__dict__ for lo in result.loras],
            "infotexts": result.infotexts,
            "notices": result.notices,
            "interrupted": result.interrupted,
        }


def check_generation(
    request: GenerationRequest, settings: Settings, *, styles: list[str] | None = None, allow_paths: bool = True
) -> GenerationRequest:
    """The request with its styles applied and its seed fixed, once every bound and LoRA name is known good.

    Runs before a job waits in line or loads a model, so a mistake costs nothing. ``allow_paths``
    is off for the servers: there a LoRA is a name in the LoRA folders, never a path.
    """
    from lanskap.generation.lora import resolve_lora
    from lanskap.generation.networks import hypernetwork_path
    from lanskap.prompts.lora_tags import extract_network_tags
    from lanskap.prompts.styles import apply_styles

    if styles:
        request = apply_styles(request, styles, settings.home)[0]
    request.validate(settings.max_regions)
    _, tag_loras, hypernets = extract_network_tags(request.prompt)
    for spec in [*tag_loras, *request.loras]:
        resolve_lora(spec.name, settings, allow_paths=allow_paths)
    for hn in hypernets:
        hypernetwork_path(hn.name, settings)
    if request.hires is not None:
        from lanskap.upscale.upscalers import find

        find(request.hires.upscaler, settings, latent=True)
    if request.control:
        from lanskap.control import models

        width = models.base_width(settings)
        for unit in request.control:
            model = models.for_unit(unit, settings)
            if width is not None:
                models.check_base(model, width, settings.model)
    return request.with_seed()


def output_folder(settings: Settings, mode_folder: str, out: Path | None = None) -> Path:
    """Where a job's images go: ``out`` if given, else ``outputs/<mode>/<date>`` as A1111 files them."""
    return Path(out) if out is not None else settings.outputs / mode_folder / date.today().isoformat()


def run_generation(
    engine: Engine,
    request: GenerationRequest,
    folder: Path,
    *,
    fmt: str = "png",
    gallery: Gallery | None = None,
    source: str = "cli",
    control: JobControl | None = None,
) -> GenerationOutput:
    """Generate a checked request and save its finished images (and gallery rows, unless no gallery).

    Interrupted or skipped, the images made so far come back (A1111's habit); only whole ones are saved.
    """
    from lanskap.gallery.record import save_result
    from lanskap.generation.output import check_format

    fmt = check_format(fmt)
    control = control or JobControl()

    def progress(p: Progress) -> None:
        batch = f", batch {p.batch} of {p.batches}" if p.batches > 1 else ""
        control.report(p.done, p.total, f"step {p.step} of {p.steps}{batch}")
        if p.latents is not None:
            control.preview(p.latents[:1])

    with gpu_lock(engine.settings.home, on_wait=control.on_wait):
        if not engine.loaded:
            control.report(0, request.steps * request.num_images, "loading the model")
        stops = {"cancel": control.cancel, "skip": control.skip}
        result = engine.generate(request, progress=progress, keep_partial=True, **stops)
    saved = save_result(result.complete(), folder, fmt, gallery, source=source)
    return GenerationOutput(result, [p for p, _ in saved], [e for _, e in saved])
