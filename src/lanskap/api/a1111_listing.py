"""A1111's listing, refresh and model-control routes, with A1111's response shapes.

Clients (webuiapi, Krita and Photoshop plug-ins, bots) call these on start-up and stop on
a 404. Where lanskap has no such thing yet (face restorers, VAEs) the
answer is A1111's empty shape; where it has one (models, LoRAs, styles) it is the real list.
lanskap scans its folders on every listing, so a refresh route only rescans and checks.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from lanskap.api.deps import ServiceDep, StateDep
from lanskap.api.schema import COMMON, JOBS
from lanskap.generation.lora import list_loras
from lanskap.prompts.styles import load_styles

if TYPE_CHECKING:
    from lanskap.service.service import Service

router = APIRouter(prefix="/sdapi/v1", tags=["A1111"], responses=COMMON)


def lora_metadata(path: Path) -> dict[str, Any]:
    """The ``__metadata__`` of a LoRA file, JSON values decoded as A1111's ``read_metadata_from_safetensors``."""
    from lanskap.models.safety import read_safetensors_header

    try:
        meta = read_safetensors_header(path).get("__metadata__") or {}
    except Exception:  # a broken file lists with no metadata rather than failing the whole listing
        return {}
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, str) and value[:1] == "{":
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[key] = value
    return out


def _memory(service: Service) -> dict[str, Any]:
    """A1111's ``/memory``: RAM in bytes, and CUDA's figures or its error."""
    import psutil

    vm = psutil.virtual_memory()
    ram = {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}
    cuda: dict[str, Any]
    try:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device")
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        cuda = {
            "system": {"free": free, "used": total - free, "total": total},
            "active": {"current": stats["active_bytes.all.current"], "peak": stats["active_bytes.all.peak"]},
            "allocated": {"current": stats["allocated_bytes.all.current"], "peak": stats["allocated_bytes.all.peak"]},
            "reserved": {"current": stats["reserved_bytes.all.current"], "peak": stats["reserved_bytes.all.peak"]},
            "inactive": {"current": stats["inactive_split_bytes.all.current"], "peak": 0},
            "events": {"retries": stats["num_alloc_retries"], "oom": stats["num_ooms"]},
        }
    except Exception as exc:
        cuda = {"error": str(exc)}
    return {"ram": ram, "cuda": cuda}


@router.get("/sd-models")
async def sd_models(state: StateDep) -> list[dict[str, Any]]:
    info = state.service.engine.info()
    titles = state.options.model_titles()
    families = state.service.model_families()
    return [
        {
            "title": titles[name],
            "model_name": name,
            "hash": info.model_hash if titles[name] != name else None,
            "sha256": None,
            "filename": name,  # names, never server paths
            "config": None,
            "family": families[name],  # lanskap's own: SD 1.x, SD 2.x, SDXL, …
        }
        for name in families
    ]


@router.get("/samplers")
async def samplers() -> list[dict[str, Any]]:
    from lanskap.generation.schedulers import ALGORITHMS, SCHEDULE_IDS

    return [
        {"name": a.name, "aliases": list(a.aliases), "options": {"scheduler": SCHEDULE_IDS[a.default]}}
        if a.default != "Uniform"
        else {"name": a.name, "aliases": list(a.aliases), "options": {}}
        for a in ALGORITHMS
    ]


@router.get("/schedulers")
async def schedulers() -> list[dict[str, Any]]:
    from lanskap.generation.schedulers import SCHEDULE_IDS

    rho = {"Karras": 7.0}
    listed = [("automatic", "Automatic"), *((v, k) for k, v in SCHEDULE_IDS.items())]
    return [
        {"name": name, "label": label, "aliases": ["SGMUniform"] if name == "sgm_uniform" else None,
         "default_rho": rho.get(label, -1), "need_inner_model": name in ("uniform", "sgm_uniform")}
        for name, label in listed
    ]  # fmt: skip


@router.get("/options")
async def get_options(state: StateDep) -> dict[str, Any]:
    return state.options.snapshot()


@router.post("/options")
async def set_options(body: dict[str, Any], state: StateDep) -> Response:
    notes = state.options.update(body)
    # A1111 answers null; what lanskap stores without effect is said in a header.
    return JSONResponse(None, headers={"X-Lanskap-Warnings": json.dumps(notes[:20])})


@router.get("/loras")
async def loras(service: ServiceDep) -> list[dict[str, Any]]:
    found = []
    for p in list_loras(service.settings):
        meta = lora_metadata(p)
        alias = meta.get("ss_output_name", p.stem)
        found.append({"name": p.stem, "alias": alias, "path": str(p), "metadata": meta})
    return found


@router.get("/prompt-styles")
async def prompt_styles(service: ServiceDep) -> list[dict[str, Any]]:
    return [s.to_a1111() for s in load_styles(service.settings.home).values()]


@router.get("/embeddings")
async def embeddings(service: ServiceDep) -> dict[str, Any]:
    from lanskap.generation.networks import embedding_listing

    return embedding_listing(service.engine)


@router.get("/hypernetworks")
async def hypernetworks(service: ServiceDep) -> list[dict[str, str]]:
    from lanskap.generation.networks import hypernetwork_listing

    return hypernetwork_listing(service.settings)


@router.get("/scripts")
async def scripts() -> dict[str, Any]:
    return {"txt2img": ["controlnet"], "img2img": ["sd upscale", "controlnet"]}


@router.get("/upscalers")
async def upscalers(service: ServiceDep) -> list[dict[str, Any]]:
    """What is installed, as A1111 lists it: None, Lanczos, Nearest, SD x4 (when here), each model file."""
    from lanskap.upscale.upscalers import installed

    return [u.to_a1111() for u in installed(service.settings)]


@router.get("/latent-upscale-modes")
async def latent_upscale_modes() -> list[dict[str, Any]]:
    from lanskap.upscale.upscalers import LATENT_MODES

    return [{"name": name} for name in LATENT_MODES]


@router.get("/cmd-flags")
async def cmd_flags(state: StateDep) -> dict[str, Any]:
    # The flags A1111 clients read; credentials and server paths are never sent.
    cfg = state.cfg
    return {
        "api": True,
        "nowebui": True,
        "listen": cfg.host not in ("127.0.0.1", "localhost", "::1"),
        "port": cfg.port,
        "api_auth": None,
        "api_log": True,
        "cors_allow_origins": ",".join(cfg.cors_origins) or None,
        "lowvram": False,
        "medvram": False,
        "no_half": state.service.engine.placement.dtype_name == "fp32",
        "skip_torch_cuda_test": True,
    }


@router.get("/memory")
async def memory(service: ServiceDep) -> dict[str, Any]:
    return _memory(service)


async def _rescan(service: ServiceDep) -> None:
    service.models()
    list_loras(service.settings)
    load_styles(service.settings.home)


@router.post("/reload-checkpoint", responses=JOBS)
async def reload_checkpoint(state: StateDep) -> dict[str, Any]:
    state.service.submit_load(state.options.current_model_name())
    return {}


@router.post("/unload-checkpoint")
async def unload_checkpoint(service: ServiceDep) -> dict[str, Any]:
    service.submit_unload()
    return {}


async def _empty_list() -> list[Any]:
    return []


#: Listings lanskap has nothing for yet: A1111's empty answer, so clients that read them on start-up go on.
EMPTY_LISTS = (
    "face-restorers",
    "realesrgan-models",
    "sd-vae",
    "sd-modules",
    "script-info",
    "extensions",
)
for _name in EMPTY_LISTS:
    router.add_api_route(f"/{_name}", _empty_list, methods=["GET"], name=_name)
for _name in ("refresh-checkpoints", "refresh-loras", "refresh-vae", "refresh-embeddings"):
    router.add_api_route(f"/{_name}", _rescan, methods=["POST"], name=_name)
