"""The sd-webui-controlnet extension's dialect: units in ``alwayson_scripts`` and its ``/controlnet`` routes.

Clients (webuiapi's ``ControlNetUnit``, Krita and Photoshop plug-ins, bots) send units as
``alwayson_scripts: {"controlnet": {"args": [unit, …]}}`` on txt2img and img2img, with the
extension's field names and defaults, and read ``/controlnet/model_list``, ``module_list``,
``detect`` and ``version``. As the extension does, a unit without a picture on img2img takes
the init picture, disabled units are dropped, and the preprocessed maps follow the generated
images in the response (unless the ``control_net_no_detectmap`` option is set).
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Body
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lanskap.api.deps import ServiceDep, StateDep
from lanskap.api.schema import COMMON
from lanskap.control.units import MAX_UNITS, ControlUnit, control_mode, resize_mode
from lanskap.errors import LanskapError

router = APIRouter(prefix="/controlnet", tags=["ControlNet"], responses=COMMON)
API_VERSION = 2  # the extension's external_code.get_api_version()


class UnitBody(BaseModel):
    """The extension's ``ControlNetUnit`` as JSON (its defaults; older key names accepted)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, populate_by_name=True)

    enabled: bool = True
    module: str | None = "none"
    model: str | None = "None"
    weight: float = Field(1.0, ge=0, le=2)
    image: str | dict[str, Any] | None = Field(None, alias="input_image")
    mask: str | None = None
    resize_mode: int | str = "Crop and Resize"
    low_vram: bool = Field(False, alias="lowvram")
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = Field(0.0, ge=0, le=1)
    guidance_end: float = Field(1.0, ge=0, le=1, alias="guidance")
    pixel_perfect: bool = False
    control_mode: int | str = "Balanced"
    hr_option: str = "Both"


def _picture(data: str | dict[str, Any] | None, where: str, max_pixels: int | None) -> Image.Image | None:
    from lanskap.api.a1111 import decode_image
    from lanskap.images import to_rgb

    if isinstance(data, dict):  # {"image": …, "mask": …}: the extension's picture-with-mask form
        data = data.get("image")
    if not data:
        return None
    if not isinstance(data, str):
        raise LanskapError(f"{where}: the image must be a base64 picture")
    return to_rgb(decode_image(data, where, max_pixels))


def units(raw: dict[str, Any], max_pixels: int | None, init: Image.Image | None) -> tuple[ControlUnit, ...]:
    """The enabled units of ``alwayson_scripts`` (the ControlNet entry), pictures decoded and checked."""
    entry = next((v for k, v in raw.items() if k.strip().lower() == "controlnet"), None)
    others = [k for k in raw if k.strip().lower() != "controlnet"]
    if others:
        raise LanskapError(f"always-on script {others[0]!r} not found; lanskap has: controlnet")
    if entry is None:
        return ()
    args = entry.get("args", []) if isinstance(entry, dict) else None
    if not isinstance(args, list):
        raise LanskapError("alwayson_scripts.controlnet.args must be a list of units")
    out = []
    for i, item in enumerate(args):
        if not isinstance(item, dict):
            raise LanskapError(f"ControlNet unit {i} must be an object with the extension's fields")
        try:
            body = UnitBody.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or "unit"
            raise LanskapError(f"ControlNet unit {i}: {field}: {first.get('msg', 'invalid')}") from None
        if not body.enabled:
            continue
        where = f"ControlNet unit {i}"
        image = _picture(body.image, f"{where} image", max_pixels) or init
        out.append(ControlUnit(
            image, module=body.module or "none", model="" if (body.model or "None") == "None" else body.model,
            weight=body.weight, guidance_start=body.guidance_start, guidance_end=body.guidance_end,
            control_mode=control_mode(body.control_mode), resize_mode=resize_mode(body.resize_mode),
            processor_res=512 if body.processor_res == -1 else body.processor_res, threshold_a=body.threshold_a,
            threshold_b=body.threshold_b, pixel_perfect=body.pixel_perfect, hr_option=body.hr_option,
        ).validate(index=len(out)))  # fmt: skip
    if len(out) > MAX_UNITS:
        raise LanskapError(f"at most {MAX_UNITS} ControlNet units, got {len(out)}")
    return tuple(out)


@router.get("/version")
async def version() -> dict[str, int]:
    return {"version": API_VERSION}


@router.get("/model_list")
async def model_list(service: ServiceDep, update: bool = True) -> dict[str, list[str]]:
    """Installed ControlNet models as the extension names them: ``name [hash]``, "None" first."""
    from lanskap.control.models import installed

    found = await anyio.to_thread.run_sync(installed, service.settings)
    return {"model_list": ["None", *(m.title for m in found)]}


@router.get("/module_list")
async def module_list(alias_names: bool = False) -> dict[str, Any]:
    from lanskap.control.preprocess import PREPROCESSORS, module_detail

    return {"module_list": list(PREPROCESSORS), "module_detail": module_detail()}


@router.get("/settings")
async def settings() -> dict[str, int]:
    return {"control_net_unit_count": MAX_UNITS}


@router.get("/control_types")
async def control_types(service: ServiceDep) -> dict[str, Any]:
    """Per control type, its preprocessors and the installed models named for it (the extension's filter)."""
    from lanskap.control.models import KIND_WORDS, installed
    from lanskap.control.preprocess import PREPROCESSORS

    found = await anyio.to_thread.run_sync(installed, service.settings)
    types: dict[str, Any] = {}
    for kind, words in KIND_WORDS.items():
        modules = [n for n, p in PREPROCESSORS.items() if p.kind == kind]
        models = [m.title for m in found if any(w in m.name.lower() for w in words)]
        default = models[0] if models else "None"
        types[kind.capitalize()] = {"module_list": ["none", *modules], "model_list": ["None", *models],
                                    "default_option": modules[0], "default_model": default}  # fmt: skip
    return {"control_types": types}


@router.post("/detect")
async def detect(
    state: StateDep,
    controlnet_module: str = Body("none"),
    controlnet_input_images: list[str] = Body([], max_length=16),
    controlnet_images: list[str] = Body([], max_length=16),  # the name older clients (webuiapi) send
    controlnet_processor_res: int = Body(-1),
    controlnet_threshold_a: float = Body(-1),
    controlnet_threshold_b: float = Body(-1),
) -> dict[str, Any]:
    """Each picture through a preprocessor: base64 PNG maps, as the extension answers."""
    from lanskap.api.a1111 import encode_png

    pictures = controlnet_input_images or controlnet_images
    if not pictures:
        raise LanskapError("No image selected")
    res = 512 if controlnet_processor_res == -1 else controlnet_processor_res
    made = []
    for i, data in enumerate(pictures):
        image = await anyio.to_thread.run_sync(
            _picture, data, f"controlnet_input_images[{i}]", state.cfg.max_input_pixels, limiter=state.decode_slots()
        )
        a, b = controlnet_threshold_a, controlnet_threshold_b
        unit = ControlUnit(image, module=controlnet_module, processor_res=res, threshold_a=a, threshold_b=b)
        unit = unit.validate(index=i)
        controls = state.service.engine.controls
        result = await anyio.to_thread.run_sync(controls.detect, unit, *image.size, limiter=state.decode_slots())  # type: ignore[union-attr]
        made.append(encode_png(result, None))
    return {"images": made, "info": "Success"}
