"""A1111's generation routes: ``txt2img``, ``img2img``, ``progress``, ``interrupt``, ``skip``, ``png-info``.

Each maps an A1111 body onto :meth:`Service.submit_generation` (after the options, the request's
``override_settings``, styles and missing LoRAs are resolved) and waits for the job off the event
loop. User pictures are decoded in a pool of two threads, after their size is checked.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, HTTPException, Query, Request

from lanskap.api import a1111
from lanskap.api.deps import ServerState, ServiceDep, StateDep
from lanskap.api.schema import COMMON, JOBS
from lanskap.errors import LanskapError, QueueFullError
from lanskap.prompts.styles import apply_styles
from lanskap.service.queue import Job
from lanskap.service.service import Service

if TYPE_CHECKING:
    from lanskap.generation.params import InitImage, InpaintMask

router = APIRouter(prefix="/sdapi/v1", tags=["A1111"], responses=COMMON)


#: How often a waiting request checks that its client is still there.
DISCONNECT_POLL_S = 0.25


async def _run(state: ServerState, job: Job, request: Request) -> Job:
    """Wait for ``job`` off the event loop; a failure becomes the HTTP error it deserves.

    A client that hangs up cancels its job, queued or running: nobody is left to take the images.
    """

    async def watch() -> None:
        while not job.wait(0):
            if await request.is_disconnected():
                state.service.queue.cancel(job.id)
                return
            await anyio.sleep(DISCONNECT_POLL_S)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await anyio.to_thread.run_sync(job.wait)
        tg.cancel_scope.cancel()
    if job.state == "failed":
        state.metrics.errors.labels(f"job_{job.kind}").inc()
        if job.busy:  # a scaled server had no room, or lost the replica running it: try again
            raise QueueFullError(job.error or "the server is busy")
        # A problem with the request found while it ran (a clip skip deeper than this model) is the
        # caller's to fix: 422, like the checks made before queueing. Only a crash is a 500.
        raise HTTPException(422 if job.user_error else 500, detail=job.error or "the job failed")
    return job


async def _generate(
    state: ServerState,
    request: Request,
    body: a1111.Txt2ImgBody,
    init: InitImage | None,
    mask: InpaintMask | None,
    notes: list[str],
) -> dict[str, Any]:
    """Options, overrides, missing LoRAs and styles resolved, then one queued generation, waited for."""
    service, started = state.service, time.time()
    echo = body  # A1111 echoes the request as it came
    body, missing = a1111.without_missing_loras(body, service.settings)
    notes = [*notes, *(f"LoRA {name!r} not found; the image was made without it" for name in missing)]
    warnings = [f"ignored unsupported field {name!r}" for name in a1111.ignored_fields(body, _supported(body))]
    effective = state.options.for_request(body.override_settings, body.override_settings_restore_afterwards)
    warnings += effective.warnings
    wanted = a1111.build_request(body, state.cfg, init, mask)
    ratio = effective.token_merging_for(init is not None)
    levers = {"token_merging": ratio} if ratio and body.token_merging is None else {}
    control = await _control(state, body, init)
    refine = _refiner(state, body)
    wanted = replace(wanted, clip_skip=effective.clip_skip, ensd=effective.ensd, **control, **levers, **refine)
    wanted = wanted.validate()
    wanted, unknown = apply_styles(wanted, body.styles, service.settings.home, strict=False)
    warnings += [f"style {name!r} not found; the image was made without it" for name in unknown]
    job = service.submit_generation(wanted, source="api", fmt=effective.fmt, model=effective.model)
    await _run(state, job, request)
    state.metrics.generation.observe(time.time() - started)
    if job.result is None:  # interrupted before it started
        info = {"interrupted": True, "warnings": [*notes, *warnings, "interrupted"]}
        return {"images": [], "parameters": echo.model_dump(exclude={"init_images", "mask"}), "info": _json(info)}
    return a1111.response(
        echo, job.result, [*notes, *warnings], started, maps=not effective.no_detectmap, replica=job.replica
    )


def _refiner(state: ServerState, body: a1111.Txt2ImgBody) -> dict[str, Any]:
    """A1111's refiner fields: an installed model's title or name (None, "" or "None": none), switching
    at 0.8 (A1111's slider default) unless the request says."""
    title = body.refiner_checkpoint
    if title is None or title.strip() in ("", "None"):
        return {}
    spec = state.service.check_model(state.options.model_name(title))
    switch = 0.8 if body.refiner_switch_at is None else body.refiner_switch_at
    return {"refiner": spec, "refiner_switch_at": switch}


async def _control(state: ServerState, body: a1111.Txt2ImgBody, init: InitImage | None) -> dict[str, Any]:
    """The request's ControlNet units and depth map, their pictures decoded off the event loop."""
    from lanskap.api import a1111_controlnet
    from lanskap.generation.params import DepthInput

    fields: dict[str, Any] = {}
    limit = state.cfg.max_input_pixels
    if body.alwayson_scripts:
        picture = init.image if init is not None else None
        fields["control"] = await anyio.to_thread.run_sync(
            a1111_controlnet.units, body.alwayson_scripts, limit, picture, limiter=state.decode_slots()
        )
    depth = getattr(body, "depth_map", None)
    if depth:
        image = await anyio.to_thread.run_sync(
            a1111.decode_image, depth, "depth_map", limit, limiter=state.decode_slots()
        )
        fields["depth"] = DepthInput(image)
    return fields


@router.post("/txt2img", responses=JOBS)
async def txt2img(body: a1111.Txt2ImgBody, state: StateDep, request: Request) -> dict[str, Any]:
    if body.script_name:
        raise LanskapError(f"script {body.script_name!r} is not available for txt2img")
    return await _generate(state, request, body, None, None, [])


@router.post("/img2img", responses=JOBS)
async def img2img(body: a1111.Img2ImgBody, state: StateDep, request: Request) -> dict[str, Any]:
    if body.script_name:
        from lanskap.api import a1111_extras

        if body.script_name.strip().lower() != "sd upscale":
            raise LanskapError(f"script {body.script_name!r} is not available; lanskap has: SD upscale")
        return await a1111_extras.sd_upscale(body, state, request)
    # Pictures are decoded off the event loop, two at a time, so /health and /progress stay quick.
    init, mask, notes = await anyio.to_thread.run_sync(
        a1111.img2img_inputs, body, state.cfg.max_input_pixels, limiter=state.decode_slots()
    )
    return await _generate(state, request, body, init, mask, notes)


@router.post("/png-info")
async def png_info(body: a1111.PngInfoBody, state: StateDep) -> dict[str, Any]:
    from lanskap.generation.infotext import a1111_parameters
    from lanskap.generation.output import image_info

    raw = a1111.decode_bytes(body.image)
    # Off the event loop, a few at a time: even a header read can be slow on a crafted file.
    text, items = await anyio.to_thread.run_sync(
        image_info, raw, state.cfg.max_input_pixels, limiter=state.decode_slots()
    )
    return {"info": text, "items": items, "parameters": a1111_parameters(text) if text else {}}


def _target(service: Service, job_id: str | None) -> Job | None:
    """The job a progress, interrupt or skip call means: the one named (lanskap's ``job`` parameter,
    for a server that runs several at once), else the longest-running one (A1111's single job)."""
    if job_id:
        job = service.queue.get(job_id)
        return job if job.active else None
    return service.queue.current


#: lanskap's addition to A1111's progress, interrupt and skip: which job, when several run (a scaled server).
JOB_PARAM = Query(None, alias="job", description="A job id (from /api/v1/jobs); unset: the longest-running job.")


@router.get("/progress")
async def progress(
    service: ServiceDep, skip_current_image: bool = False, job_id: str | None = JOB_PARAM
) -> dict[str, Any]:
    job = _target(service, job_id)
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
            "job_count": waiting + len(service.queue.running()),
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created)),
            "job_no": 0,
            "sampling_step": job.step,
            "sampling_steps": job.total,
        },
        "current_image": None if skip_current_image else await anyio.to_thread.run_sync(_preview_b64, job),
        "textinfo": job.message or None,
    }


def _preview_b64(job: Job) -> str | None:
    """The running job's live preview as A1111 sends it: base64 PNG, no data-URL prefix."""
    image = job.preview()
    return None if image is None else a1111.encode_png(image, None)


@router.post("/interrupt")
async def interrupt(service: ServiceDep, job_id: str | None = JOB_PARAM) -> dict[str, Any]:
    """Stop the running job at its next step; its request gets the images so far (A1111's interrupt)."""
    job = _target(service, job_id)
    if job is not None:
        service.queue.cancel(job.id)
    return {}


@router.post("/skip")
async def skip(service: ServiceDep, job_id: str | None = JOB_PARAM) -> None:
    """End the current batch as it stands and go on with the next (A1111's skip)."""
    job = _target(service, job_id)
    if job is not None:
        job.skip.set()


def _supported(body: a1111.Txt2ImgBody) -> set[str]:
    return a1111.IMG2IMG_FIELDS if isinstance(body, a1111.Img2ImgBody) else a1111.TXT2IMG_FIELDS


def _json(obj: object) -> str:
    return json.dumps(obj)
