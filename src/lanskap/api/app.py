"""The FastAPI app behind ``lanskap serve``: A1111's ``/sdapi/v1``, lanskap's ``/api/v1``, health and metrics.

Every route is a thin mapping onto :class:`lanskap.service.Service`: the same
checks, queue, engine and gallery as the web app. Long jobs are waited for off
the event loop, so one slow generation never blocks ``/progress`` or ``/health``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from lanskap import __version__
from lanskap.api import a1111
from lanskap.api.a1111_options import A1111Options
from lanskap.api.observability import AccessMiddleware, Metrics, setup_access_log
from lanskap.api.security import GuardMiddleware, ServeConfig
from lanskap.errors import LanskapError, QueueFullError
from lanskap.prompts.styles import apply_styles


def _queue_depth(service: Any) -> float:
    return len(service.queue.pending()) + (1 if service.queue.current is not None else 0)


def create_app(service: Any, cfg: ServeConfig) -> Any:
    """The ASGI app: FastAPI routes wrapped in the guard (auth, size, rate) and the access log."""
    setup_access_log()
    metrics = Metrics(lambda: _queue_depth(service))
    api = FastAPI(
        title="lanskap",
        version=__version__,
        description="Fantasy-landscape concept art with SD 2.1 + LoRA. A1111-compatible under /sdapi/v1.",
    )
    options = A1111Options(service)
    slots: list[anyio.CapacityLimiter] = []

    def decode_slots() -> anyio.CapacityLimiter:
        """The pool that decodes user pictures (made on first use, inside the event loop)."""
        if not slots:
            slots.append(anyio.CapacityLimiter(2))
        return slots[0]

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, which fails on NaN and repeats huge bodies: where and why only.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()[:20]
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @api.exception_handler(LanskapError)
    async def _user_error(request: Request, exc: LanskapError) -> JSONResponse:
        if isinstance(exc, QueueFullError):
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"detail": str(exc)}, status_code=422)

    async def run(job: Any) -> Any:
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

    # -- A1111 -------------------------------------------------------------------------------------
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

    @api.get("/sdapi/v1/sd-models", tags=["A1111"])
    async def sd_models() -> list[dict[str, Any]]:
        info = service.engine.info()
        titles = options.model_titles()
        return [
            {
                "title": titles[name],
                "model_name": name,
                "hash": info["model_hash"] if titles[name] != name else None,
                "sha256": None,
                "filename": name,  # names, never server paths
                "config": None,
            }
            for name in service.models()
        ]

    @api.get("/sdapi/v1/samplers", tags=["A1111"])
    async def samplers() -> list[dict[str, Any]]:
        from lanskap.generation.schedulers import ALGORITHMS, SCHEDULE_IDS

        return [
            {"name": a.name, "aliases": list(a.aliases), "options": {"scheduler": SCHEDULE_IDS[a.default]}}
            if a.default != "Uniform"
            else {"name": a.name, "aliases": list(a.aliases), "options": {}}
            for a in ALGORITHMS
        ]

    @api.get("/sdapi/v1/schedulers", tags=["A1111"])
    async def schedulers() -> list[dict[str, Any]]:
        from lanskap.generation.schedulers import SCHEDULE_IDS

        rho = {"Karras": 7.0}
        listed = [("automatic", "Automatic"), *((v, k) for k, v in SCHEDULE_IDS.items())]
        return [
            {"name": name, "label": label, "aliases": ["SGMUniform"] if name == "sgm_uniform" else None,
             "default_rho": rho.get(label, -1), "need_inner_model": name in ("uniform", "sgm_uniform")}
            for name, label in listed
        ]  # fmt: skip

    @api.get("/sdapi/v1/options", tags=["A1111"])
    async def get_options() -> dict[str, Any]:
        return options.snapshot()

    @api.post("/sdapi/v1/options", tags=["A1111"])
    async def set_options(body: dict[str, Any]) -> Response:
        notes = options.update(body)
        # A1111 answers null; what lanskap stores without effect is said in a header.
        return JSONResponse(None, headers={"X-Lanskap-Warnings": _json(notes[:20])})

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

    @api.post("/sdapi/v1/png-info", tags=["A1111"])
    async def png_info(body: a1111.PngInfoBody) -> dict[str, Any]:
        from lanskap.generation.infotext import a1111_parameters
        from lanskap.generation.output import image_info

        raw = a1111.decode_bytes(body.image)
        # Off the event loop, a few at a time: even a header read can be slow on a crafted file.
        text, items = await anyio.to_thread.run_sync(image_info, raw, cfg.max_input_pixels, limiter=decode_slots())
        return {"info": text, "items": items, "parameters": a1111_parameters(text) if text else {}}

    from lanskap.api import a1111_listing

    a1111_listing.register(api, service, options, cfg)

    # -- lanskap's own API ---------------------------------------------------------------------------
    from lanskap.api.native import register

    register(api, service, cfg)

    # -- operations --------------------------------------------------------------------------------
    @api.api_route("/health", methods=["GET", "HEAD"], tags=["operations"])
    async def health() -> dict[str, Any]:
        info = service.engine.info()
        return {
            "status": "ok",
            "version": __version__,
            "model": info["model"],
            "model_loaded": info["loaded"],
            "device": info["device"],
            "queue_depth": _queue_depth(service),
        }

    @api.get("/metrics", tags=["operations"])
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        api.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["*"], allow_headers=["*"])
    app = GuardMiddleware(api, cfg)
    return AccessMiddleware(app, metrics)


def _supported(body: Any) -> set[str]:
    return a1111.IMG2IMG_FIELDS if isinstance(body, a1111.Img2ImgBody) else a1111.TXT2IMG_FIELDS


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj)
