"""lanskap's own API under ``/api/v1``: the gallery, and dataset, training and evaluation jobs.

Clients name things (datasets, runs, LoRAs, incoming folders); the Service turns
checked names into paths inside ``$LANSKAP_HOME``, so no request can reach a
path of its choosing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import anyio
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from lanskap.api.a1111 import Txt2ImgBody
from lanskap.api.deps import ServiceDep, StateDep
from lanskap.api.schema import COMMON, JOBS, NOT_FOUND
from lanskap.errors import LanskapError
from lanskap.names import check_name

if TYPE_CHECKING:
    from lanskap.gallery.store import Entry as GalleryEntry
    from lanskap.service.queue import Job
    from lanskap.service.service import Service

K = TypeVar("K")
V = TypeVar("V")
router = APIRouter(prefix="/api/v1", responses=COMMON)

#: SQLite's integers are 64-bit: larger ids and counts are refused at the boundary (422), not in SQLite.
MAX_INT = 2**63 - 1
ImageId = Path(ge=1, le=MAX_INT)


class DatasetJob(BaseModel):
    source: str = Field(description="A folder name in $LANSKAP_HOME/incoming")
    name: str = Field(description="The new dataset's name in $LANSKAP_HOME/datasets")
    captioner: str = "none"
    min_side: int = Field(512, ge=1, le=8192)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    enrich: bool = False


class TrainingJob(BaseModel):
    dataset: str = Field(description="A dataset name in $LANSKAP_HOME/datasets")
    name: str = Field(description="The run (and LoRA) name")
    preset: Literal["default", "thesis"] = "default"
    max_train_steps: int | None = Field(None, ge=1, le=100_000)
    learning_rate: float | None = Field(None, gt=0, le=1)
    rank: int | None = Field(None, ge=1, le=256)
    resolution: int | None = Field(None, ge=64, le=2048)
    checkpointing_steps: int | None = Field(None, ge=1)
    validation_prompt: list[str] | None = None
    resume: bool = False
    method: Literal["lora", "textual-inversion", "dreambooth"] | None = None
    token: str | None = Field(None, max_length=100, description="Textual inversion: the new token")
    init_word: str | None = Field(None, max_length=200)
    vectors: int | None = Field(None, ge=1, le=75)
    instance_prompt: str | None = Field(None, max_length=1000, description="DreamBooth: every picture's caption")
    class_prompt: str | None = Field(None, max_length=1000)
    prior_preservation: bool | None = None
    num_class_images: int | None = Field(None, ge=1, le=10_000)
    prior_loss_weight: float | None = Field(None, gt=0, le=100)
    full: bool | None = Field(None, description="DreamBooth: fine-tune the whole UNet instead of a LoRA")


class EvaluationJob(BaseModel):
    dataset: str
    lora: str | None = None
    lora_scale: float = Field(1.0, ge=-10, le=10)
    embedding: str | None = Field(None, description="An embedding in $LANSKAP_HOME/embeddings: the second set's "
                                  "captions start with its name")  # fmt: skip
    limit: int | None = Field(None, ge=1)
    steps: int = Field(25, ge=1, le=150)
    clip_model: str | None = Field(
        None, description="A CLIP model installed in $LANSKAP_HOME/models, or 'none' for no CMMD and CLIP score"
    )
    inception_model: str | None = Field(
        None, description="FID Inception weights installed in $LANSKAP_HOME/models (FID and KID)"
    )


class ExportBody(BaseModel):
    ids: list[Annotated[int, Field(ge=1, le=MAX_INT)]] = Field(min_length=1, max_length=1000)
    format: Literal["png", "jpg", "webp"] | None = None


class GridBody(BaseModel):
    ids: list[Annotated[int, Field(ge=1, le=MAX_INT)]] = Field(min_length=1, max_length=64)
    format: Literal["png", "jpg", "webp"] = "png"


def _job(job: Job) -> dict[str, Any]:
    out = job.to_dict()
    result = job.result
    if job.kind == "generate" and result is not None:
        out["result"] = {"gallery_ids": result.ids, "seeds": result.result.seeds}
    elif job.kind == "upscale" and result is not None:
        out["result"] = {"gallery_ids": result.ids, "sizes": [list(im.size) for im in result.images]}
    elif job.kind == "train" and result is not None:
        r = result.result
        lora = result.published.stem if result.published else None
        out["result"] = {"steps": r.steps, "interrupted": r.interrupted, "lora": lora, "method": r.config.method,
                         "published": str(result.published) if result.published else None}  # fmt: skip
    elif job.kind == "evaluate" and result is not None:
        out["result"] = {"report": str(result.json_path), "verdict": result.report.get("verdict", [])}
    elif isinstance(result, dict):
        out["result"] = result
    return out


def _or_404(lookup: Callable[[K], V], key: K) -> V:
    """``lookup(key)``; an unknown id is a 404 with the lookup's own message."""
    try:
        return lookup(key)
    except LanskapError as exc:
        raise HTTPException(404, detail=str(exc)) from None


@router.get("/gallery", tags=["gallery"])
async def gallery_list(
    service: ServiceDep,
    search: str | None = Query(None, max_length=500),
    lora: str | None = None,
    width: int | None = Query(None, ge=1, le=MAX_INT),
    height: int | None = Query(None, ge=1, le=MAX_INT),
    since: str | None = Query(None, max_length=64),
    until: str | None = Query(None, max_length=64),
    seed: int | None = Query(None, ge=0, le=MAX_INT),
    mode: Literal["txt2img", "img2img", "inpaint", "outpaint", "upscale"] | None = None,
    model: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_INT),
) -> dict[str, Any]:
    entries, total = service.gallery.query(
        search, lora=lora, width=width, height=height, since=since, until=until, seed=seed, mode=mode, model=model,
        limit=limit, offset=offset,
    )  # fmt: skip
    return {"total": total, "items": [_entry(e) for e in entries]}


@router.get("/gallery/{image_id}", tags=["gallery"], responses=NOT_FOUND)
async def gallery_get(service: ServiceDep, image_id: int = ImageId) -> dict[str, Any]:
    return _entry(_get(service, image_id))


@router.get("/gallery/{image_id}/image", tags=["gallery"], responses=NOT_FOUND)
async def gallery_image(
    service: ServiceDep, image_id: int = ImageId, format: Literal["png", "jpg", "webp"] | None = None
) -> Response:
    from lanskap.gallery.export import image_bytes

    data, name = image_bytes(_get(service, image_id), format)
    media = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}
    kind = media[name.rsplit(".", 1)[-1].lower()]
    return Response(data, media_type=kind, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.delete("/gallery/{image_id}", tags=["gallery"], responses=NOT_FOUND)
async def gallery_delete(service: ServiceDep, image_id: int = ImageId) -> dict[str, Any]:
    _get(service, image_id)
    return {"deleted": service.gallery.delete([image_id])}


@router.post("/gallery/export", tags=["gallery"], responses=NOT_FOUND)
async def gallery_export(body: ExportBody, service: ServiceDep) -> Response:
    from lanskap.gallery.export import zip_bytes

    data = zip_bytes([_get(service, i) for i in body.ids], body.format)
    return Response(
        data, media_type="application/zip", headers={"Content-Disposition": 'attachment; filename="lanskap.zip"'}
    )


@router.post("/gallery/grid", tags=["gallery"], responses=NOT_FOUND)
async def gallery_grid(body: GridBody, service: ServiceDep) -> Response:
    """The images as one grid picture, row by row (A1111's batch grid), with the first one's parameters."""
    from lanskap.gallery.export import grid_bytes

    entries = [_get(service, i) for i in body.ids]
    data = await anyio.to_thread.run_sync(grid_bytes, entries, body.format)
    media = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}[body.format]
    headers = {"Content-Disposition": f'attachment; filename="grid.{body.format}"'}
    return Response(data, media_type=media, headers=headers)


def _get(service: Service, image_id: int) -> GalleryEntry:
    return _or_404(service.gallery.get, image_id)


def _entry(e: GalleryEntry) -> dict[str, Any]:
    d = e.to_dict()
    d.pop("path", None)  # the server's filesystem layout is not the client's business
    d["image_url"] = f"/api/v1/gallery/{e.id}/image"
    return d


# -- jobs ------------------------------------------------------------------------------------
@router.post("/jobs/generation", tags=["jobs"], status_code=202, responses=JOBS)
async def start_generation(body: Txt2ImgBody, state: StateDep) -> dict[str, Any]:
    """A text-to-image job, queued: A1111's txt2img fields plus lanskap's ``panorama``, ``regions``,
    ``region_base`` (and ``tiling``); poll ``/api/v1/jobs/{id}`` for its gallery ids."""
    from lanskap.api.a1111 import build_request

    if body.script_name:
        raise LanskapError(f"script {body.script_name!r} is not available here")
    request = build_request(body, state.cfg)
    return _job(state.service.submit_generation(request, source="api"))


@router.post("/jobs/dataset", tags=["jobs"], status_code=202, responses=JOBS)
async def start_dataset(body: DatasetJob, service: ServiceDep) -> dict[str, Any]:
    from lanskap.data.prepare import PrepareOptions

    opts = PrepareOptions(
        captioner=body.captioner, min_side=body.min_side, test_fraction=body.test_fraction, enrich=body.enrich
    )
    return _job(service.submit_dataset(body.source, body.name, opts))


@router.post("/jobs/training", tags=["jobs"], status_code=202, responses=JOBS)
async def start_training(body: TrainingJob, service: ServiceDep) -> dict[str, Any]:
    from lanskap.training import build_config

    data = service.settings.datasets_dir / check_name(body.dataset, "dataset name")
    fields = body.model_dump(exclude={"dataset", "name", "preset", "resume"})
    cfg = build_config(body.preset, None, {**fields, "data": str(data), "output_name": body.name})
    return _job(service.submit_training(cfg, body.name, resume=body.resume))


@router.post("/jobs/evaluation", tags=["jobs"], status_code=202, responses=JOBS)
async def start_evaluation(body: EvaluationJob, service: ServiceDep) -> dict[str, Any]:
    from lanskap.evaluation import EvalConfig
    from lanskap.evaluation.clip import DEFAULT_CLIP_MODEL
    from lanskap.generation.params import LoraSpec

    data = service.settings.datasets_dir / check_name(body.dataset, "dataset name")
    from lanskap.prompts.embeddings import find_embedding

    loras = (LoraSpec(check_name(body.lora, "LoRA name"), body.lora_scale),) if body.lora else ()
    emb = find_embedding(body.embedding, service.settings.embeddings_dir, allow_paths=False) if body.embedding else None
    evaluation = EvalConfig(
        data=data,
        limit=body.limit,
        request_fields={"steps": body.steps},
        loras=loras,
        embedding=str(emb.path) if emb is not None else None,
        clip_model=service.metric_model(body.clip_model, "CLIP model", "clip_model") or DEFAULT_CLIP_MODEL,
        inception_model=service.metric_model(body.inception_model, "Inception model", "inception_model"),
    )
    return _job(service.submit_evaluation(evaluation))


@router.get("/jobs", tags=["jobs"])
async def jobs(service: ServiceDep) -> dict[str, Any]:
    q = service.queue
    return {"active": [_job(j) for j in [*q.running(), *q.pending()]], "recent": [_job(j) for j in q.recent(50)]}


@router.get("/replicas", tags=["jobs"])
async def replicas(service: ServiceDep) -> dict[str, Any]:
    """A scaled server's generation replicas (name, process, machine, device, model, job; none otherwise)
    and the process that answers HTTP."""
    import os
    import socket

    return {"replicas": service.replicas(), "ingress": {"pid": os.getpid(), "host": socket.gethostname()}}


@router.get("/jobs/{job_id}", tags=["jobs"], responses=NOT_FOUND)
async def job_status(job_id: str, service: ServiceDep) -> dict[str, Any]:
    return _job(_job_or_404(service, job_id))


@router.post("/jobs/{job_id}/cancel", tags=["jobs"], responses=NOT_FOUND)
async def job_cancel(job_id: str, service: ServiceDep) -> dict[str, Any]:
    job = _job_or_404(service, job_id)
    return {"cancelled": service.queue.cancel(job.id), "job": _job(job)}


def _job_or_404(service: Service, job_id: str) -> Job:
    return _or_404(service.queue.get, job_id)
