"""A1111's generation routes: ``txt2img``, ``img2img``, ``progress``, ``interrupt``, ``skip``, ``png-info``.

Each maps an A1111 body onto :meth:`Service.submit_generation` (after the options, the request's
``override_settings``, styles and missing LoRAs are resolved) and waits for the job off the event
loop. User pictures are decoded in a pool of two threads, after their size is checked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, HTTPException

from lanskap.api import a1111
from lanskap.prompts.styles import apply_styles

if TYPE_CHECKING:
    from lanskap.api.a1111_options import A1111Options
    from lanskap.api.observability import Metrics
    from lanskap.api.security import ServeConfig
    from lanskap.service.queue import Job
    from lanskap.service.service import Service


def register(api: FastAPI, service: Service, options: A1111Options, cfg: ServeConfig, metrics: Metrics) -> None:
    """Add the generation routes to ``api``."""
    slots: list[anyio.CapacityLimiter] = []

    def decode_slots() -> anyio.CapacityLimiter:
        """The pool that decodes user pictures (made on first use, inside the event loop)."""
        if not slots:
            slots.append(anyio.CapacityLimiter(2))
        return slots[0]

    async def run(job: Job) -> Job:
        await anyio.to_thread.run_sync(job.wait)
        if job.state == "failed":
            metrics.errors.labels(f"job_{job.kind}").inc()
            # A problem with the request found while it ran (a clip skip deeper than this model) is the
            # caller's to fix: 422, like the checks made before queueing. Only a crash is a 500.
            raise HTTPException(422 if job.user_error else 500, detail=job.error or "the job failed")
        return job

    async def generate(body: a1111.Txt2ImgBody, init: Any, mask: Any, notes: list[str]) -> dict[str, Any]:
        started = time.time()
        echo = body  # A1111 echoes the request as it came
        body, missing = a1111.without_missing_loras(body, service.settings)
        notes = [*notes, *(f"LoRA {name!r} not found; the image was made without it" for name in missing)]
        warnings = [f"ignored unsupported field {name!r}" for name in a1111.ignored_fields(body, _supported(body))]
        effective = options.for_request(body.override_settings, body.override_settings_restore_afterwards)
        warnings += effective.warnings
        request = replace(
            a1111.build_request(body, cfg, init, mask), clip_skip=effective.clip_skip, ensd=effective.ensd
        ).validate()
        request, unknown = apply_styles(request, body.styles, service.settings.home, strict=False)
        warnings += [f"style {name!r} not found; the image was made without it" for name in unknown]
        job = service.submit_generation(request, source="api", fmt=effective.fmt, model=effective.model)
        await run(job)
        metrics.generation.observe(time.time() - started)
        if job.result is None:  # interrupted before it started
            info = {"interrupted": True, "warnings": [*notes, *warnings, "interrupted"]}
            return {"images": [], "parameters": echo.model_dump(exclude={"init_images", "mask"}), "info": _json(info)}
        return a1111.response(echo, job.result, [*notes, *warnings], started)

    _register_generate(api, service, cfg, generate, decode_slots)
    _register_state(api, service)


def _register_generate(
    api: FastAPI,
    service: Service,
    cfg: ServeConfig,
    generate: Callable[..., Awaitable[dict[str, Any]]],
    decode_slots: Callable[[], anyio.CapacityLimiter],
) -> None:
    @api.post("/sdapi/v1/txt2img", tags=["A1111"])
    async def txt2img(body: a1111.Txt2ImgBody) -> dict[str, Any]:
        return await generate(body, None, None, [])

    @api.post("/sdapi/v1/img2img", tags=["A1111"])
    async def img2img(body: a1111.Img2ImgBody) -> dict[str, Any]:
        # Pictures are decoded off the event loop, two at a time, so /health and /progress stay quick.
        init, mask, notes = await anyio.to_thread.run_sync(
            a1111.img2img_inputs, body, cfg.max_input_pixels, limiter=decode_slots()
        )
        return await generate(body, init, mask, notes)

    @api.post("/sdapi/v1/png-info", tags=["A1111"])
    async def png_info(body: a1111.PngInfoBody) -> dict[str, Any]:
        from lanskap.generation.infotext import a1111_parameters
        from lanskap.generation.output import image_info

        raw = a1111.decode_bytes(body.image)
        # Off the event loop, a few at a time: even a header read can be slow on a crafted file.
        text, items = await anyio.to_thread.run_sync(image_info, raw, cfg.max_input_pixels, limiter=decode_slots())
        return {"info": text, "items": items, "parameters": a1111_parameters(text) if text else {}}


def _register_state(api: FastAPI, service: Service) -> None:
    @api.get("/sdapi/v1/progress", tags=["A1111"])
    async def progress(skip_current_image: bool = False) -> dict[str, Any]:
        job = service.queue.current
        waiting = len(service.queue.pending())
        if job is None:
            state = {"skipped": False, "interrupted": False, "job": "", "job_count": waiting, "job_timestamp": "0"}
            state.update(job_no=0, sampling_step=0, sampling_steps=0)
            return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
        frac = min(1.0, job.step / job.total) if job.total else 0.0
        return {
            "progress": frac,
            "eta_relative": job.eta or 0.0,
            "state": {
                "skipped": job.skip.is_set(),
                "interrupted": job.cancel.is_set(),
                "job": job.id,
                "job_count": waiting + 1,
                "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created)),
                "job_no": 0,
                "sampling_step": job.step,
                "sampling_steps": job.total,
            },
            "current_image": None,
            "textinfo": job.message or None,
        }

    @api.post("/sdapi/v1/interrupt", tags=["A1111"])
    async def interrupt() -> dict[str, Any]:
        """Stop the running job at its next step; its request gets the images so far (A1111's interrupt)."""
        job = service.queue.current
        if job is not None:
            service.queue.cancel(job.id)
        return {}

    @api.post("/sdapi/v1/skip", tags=["A1111"])
    async def skip() -> None:
        """End the current batch as it stands and go on with the next (A1111's skip)."""
        job = service.queue.current
        if job is not None:
            job.skip.set()


def _supported(body: Any) -> set[str]:
    return a1111.IMG2IMG_FIELDS if isinstance(body, a1111.Img2ImgBody) else a1111.TXT2IMG_FIELDS


def _json(obj: Any) -> str:
    return json.dumps(obj)
