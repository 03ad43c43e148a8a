"""Load a Stable Diffusion pipeline from a resolved reference.

This is the one code path for real and tiny models alike. It validates weight
files, keeps the model's prediction type (SD 2.1 768 is v-prediction), turns on
upcast attention for fp16, and reports in ``notices`` what it decided and why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lanskap.config import DEFAULT_MODEL, DEFAULT_SDXL_MODEL, DEFAULT_SDXL_REFINER, Settings
from lanskap.errors import LanskapError, ModelUnavailableError, SettingError
from lanskap.models.builtin import SIZE as MINI_SIZE
from lanskap.models.device import Placement
from lanskap.models.distilled import Recommended, recommended
from lanskap.models.family import SD1, ModelFamily, family_of
from lanskap.models.hashing import model_hash
from lanskap.models.resolve import MINI_NAME, ModelRef, fetch_hub_model, resolve_model_ref
from lanskap.models.safety import read_safetensors_header, safetensors_metadata, validate_weights_dir
from lanskap.models.speed import SpeedPlan, apply_plan, free_memory_gib, make_plan
from lanskap.models.tiny import is_tiny

PREDICTION_TYPES = ("epsilon", "v_prediction")
log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A ready pipeline plus the facts the engine and infotext need."""

    pipe: Any
    ref: ModelRef
    source: Path
    hash: str
    prediction_type: str
    placement: Placement
    tiny: bool = False
    notices: list[str] = field(default_factory=list)
    speed: SpeedPlan = field(default_factory=SpeedPlan)
    recommended: Recommended | None = None  # a distilled model's few-step settings (models/distilled.py)
    vae: str | None = None  # the VAE used instead of the model's own, as the infotext names it

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def demo(self) -> str | None:
        """ "tiny" (random weights), "mini" (lanskap-mini, 128 px) or None for a real model."""
        return demo_kind(self.source)

    @property
    def native_size(self) -> int:
        return int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)

    @property
    def cross_attention_dim(self) -> int:
        dim = self.pipe.unet.config.cross_attention_dim
        return int(dim[0] if isinstance(dim, list | tuple) else dim)

    @property
    def family(self) -> ModelFamily:
        """SD 1.x, SD 2.x, SD 2.x 768-v or SDXL: what the pipelines, LoRA checks and exports go by."""
        dual = getattr(self.pipe, "text_encoder_2", None) is not None
        return family_of(self.cross_attention_dim, self.prediction_type, dual_text=dual)

    @property
    def inpainting(self) -> bool:
        return int(self.pipe.unet.config.in_channels) == 9

    @property
    def depth(self) -> bool:
        """SD 2's depth model: a 5-channel UNet (latents and a depth map), run as depth2img."""
        return int(self.pipe.unet.config.in_channels) == 5


def normalize_prediction_type(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    aliases = {
        "v": "v_prediction",
        "v-prediction": "v_prediction",
        "v_prediction": "v_prediction",
        "eps": "epsilon",
        "epsilon": "epsilon",
    }
    if v not in aliases:
        raise LanskapError(f"unknown prediction type {value!r}; use v_prediction or epsilon")
    return aliases[v]


def _yaml_prediction(path: Path) -> str | None:
    """A1111 convention: ``model.yaml`` beside ``model.safetensors`` with ``parameterization: v``."""
    sidecar = path.with_suffix(".yaml")
    if not sidecar.is_file():
        return None
    import yaml

    try:
        cfg = yaml.safe_load(sidecar.read_text(encoding="utf-8")) or {}
        param = cfg.get("model", {}).get("params", {}).get("parameterization")
    except (OSError, yaml.YAMLError, AttributeError):
        raise LanskapError(f"cannot read {sidecar.name}") from None
    return "v_prediction" if param == "v" else "epsilon"


def _metadata_prediction(meta: dict[str, str]) -> str | None:
    pred = meta.get("modelspec.prediction_type", "").lower()
    if pred in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if pred in ("epsilon", "eps"):
        return "epsilon"
    arch = meta.get("modelspec.architecture", "")
    if "-v/" in arch or arch.endswith("768-v"):
        return "v_prediction"
    if meta.get("ss_v_parameterization", "").lower() == "true":
        return "v_prediction"
    return None


def probe_v_prediction(unet: Any) -> bool:
    """A1111's test: at t=999 a v-model's output sits far below its input.

    Only meaningful for trained SD 2.x weights, so it runs last, after any
    explicit declaration.
    """
    dim = unet.config.cross_attention_dim
    p = next(unet.parameters())
    with torch.no_grad():
        x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, dtype=p.dtype, device=p.device)
        cond = torch.full((1, 2, int(dim)), 0.5, dtype=p.dtype, device=p.device)
        out = unet(x, torch.tensor([999], device=p.device), encoder_hidden_states=cond).sample
    return float((out[:, :4].float() - x[:, :4].float()).mean()) < -1


def _pipeline_class(kind: str) -> Any:
    import diffusers

    names = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline",
             "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline"}  # fmt: skip
    return getattr(diffusers, names[kind])


def _load_folder(
    folder: Path, placement: Placement, settings: Settings, pred: str | None, notices: list[str], kind: str = "sd"
):
    from diffusers import UNet2DConditionModel

    validate_weights_dir(folder, settings.allow_pickle)
    use_st = None if settings.allow_pickle else True
    xl = kind != "sd"
    unet_kwargs: dict[str, Any] = {}
    if placement.dtype == torch.float16 and not xl:
        unet_kwargs["upcast_attention"] = True  # SD 2.1 in fp16 gives black images without it (SDXL doesn't)
    unet = UNet2DConditionModel.from_pretrained(
        str(folder), subfolder="unet", dtype=placement.dtype, use_safetensors=use_st, **unet_kwargs
    )
    extra: dict[str, Any] = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if xl:  # no safety checker to drop; its own watermark off (the engine marks every picture once)
        extra = {"add_watermarker": False}
    pipe = _pipeline_class(kind).from_pretrained(
        str(folder), unet=unet, dtype=placement.dtype, use_safetensors=use_st, **extra
    )
    config_pred = pipe.scheduler.config.get("prediction_type", "epsilon")
    if pred and pred != config_pred:
        notices.append(f"prediction type {pred} declared; the model's scheduler config says {config_pred}")
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=pred)
    return pipe, pred or config_pred


def _config_source(settings: Settings, default: str = DEFAULT_MODEL) -> str:
    """Configs (and tokenizer) for single-file checkpoints; they carry weights only."""
    spec = settings.model_config or default
    ref = resolve_model_ref(spec, settings)
    if ref.kind == "single_file":
        raise SettingError("the model config must be a diffusers folder or hub id, not a single file", "model_config")
    if ref.kind == "hub":
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(
                ref.location,
                allow_patterns=["model_index.json", "*/*.json", "*/*.txt"],
            )
        except Exception:
            raise ModelUnavailableError(
                f"a single-file checkpoint needs the model's configs and tokenizer, and {spec!r} can't be "
                "fetched; give the configs of a local diffusers folder of the same architecture",
                "model_config",
            ) from None
    return ref.location


_KINDS = {4: "a text-to-image", 5: "an SD 2 depth", 9: "an inpainting"}


def _check_input_channels(path: Path, config: Path) -> None:
    """A checkpoint's UNet input (4: txt2img, 5: depth, 9: inpainting) must match its configs' UNet,
    or loading fails deep in diffusers with a shape error; say which configs it needs instead."""
    info = read_safetensors_header(path).get("model.diffusion_model.input_blocks.0.0.weight")
    try:
        wanted = int(json.loads((config / "unet" / "config.json").read_text(encoding="utf-8"))["in_channels"])
        have = int(info["shape"][1]) if isinstance(info, dict) else wanted
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return  # an unusual file or config: diffusers' own loading says what is wrong
    if have != wanted:
        kind = _KINDS.get(have, f"a {have}-channel")
        raise SettingError(
            f"{path.name} is {kind} checkpoint, but the model config's UNet takes {wanted} channels; "
            "give the configs of a model of its kind (for a depth model, sd2-community/stable-diffusion-2-depth)",
            "model_config",
        )


def _load_single_file(
    path: Path, placement: Placement, settings: Settings, pred: str | None, notices: list[str], kind: str = "sd"
):
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    xl = kind != "sd"
    how = "declared"
    meta: dict[str, str] = {}
    if path.suffix == ".safetensors":
        read_safetensors_header(path)
        meta = safetensors_metadata(path)
    if pred is None:
        pred, how = _yaml_prediction(path), "from the .yaml beside it"
    if pred is None:
        pred, how = _metadata_prediction(meta), "from its metadata"
    default = {"sd": DEFAULT_MODEL, "sdxl": DEFAULT_SDXL_MODEL}.get(kind, DEFAULT_SDXL_REFINER)
    config = _config_source(settings, default)
    if path.suffix == ".safetensors":
        _check_input_channels(path, Path(config))
    scheduler_cfg = json.loads((Path(config) / "scheduler" / "scheduler_config.json").read_text())
    from diffusers import DDIMScheduler

    extra: dict[str, Any] = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if xl:
        extra = {"add_watermarker": False}
    try:
        scheduler = DDIMScheduler.from_config(scheduler_cfg)
        pipe = _pipeline_class(kind).from_single_file(
            str(path), config=config, dtype=placement.dtype, local_files_only=True, scheduler=scheduler, **extra
        )
    except (OSError, ValueError, KeyError, RuntimeError, SingleFileComponentError) as exc:
        raise LanskapError(f"cannot load checkpoint {path.name}: {str(exc).splitlines()[0][:200]}") from None
    if placement.dtype == torch.float16 and not xl:
        # upcast attention, set on the built modules (the config flag is read only at build)
        from diffusers.models.attention_processor import Attention

        pipe.unet.register_to_config(upcast_attention=True)
        for module in pipe.unet.modules():
            if isinstance(module, Attention):
                module.upcast_attention = True
    if pred is None and xl:
        pred, how = "epsilon", "SDXL architecture"
    elif pred is None:
        if pipe.unet.config.cross_attention_dim == SD1.text_width:
            pred, how = SD1.prediction_type, "SD 1.x architecture"
        else:
            pred = "v_prediction" if probe_v_prediction(pipe.unet) else "epsilon"
            how = "detected by probing the UNet; set the prediction type to override"
    notices.append(f"{path.name}: prediction type {pred} ({how})")
    pipe.scheduler = DDIMScheduler.from_config(scheduler_cfg, prediction_type=pred)
    return pipe, pred


MODEL_FAMILIES = ("auto", "sd", "sdxl")


def architecture(name: str, source: Path, declared: str = "auto", role: str = "base") -> str:
    """ "sd", "sdxl" or (as a refiner) "sdxl-refiner": from the folder's configs or the single file's
    tensor names, or as declared (``model_family``). What doesn't run in ``role`` (the SDXL refiner as
    a base, an SD model as a refiner) is named in one line, and a declaration the configs contradict
    too, before a loader would fail with a shape error."""
    from lanskap.models.family import UNSUPPORTED, detect_file, detect_folder

    if declared not in MODEL_FAMILIES:
        raise SettingError(f"model family must be one of {', '.join(MODEL_FAMILIES)}, not {declared!r}", "model_family")
    if source.is_dir():
        kind = detect_folder(source) or "sd"
    elif source.suffix.lower() == ".safetensors":
        kind = detect_file(read_safetensors_header(source))
    else:
        kind = "sd"  # a pickled checkpoint (opted in): its names aren't read before loading
    if role == "refiner":
        if kind == "sd":
            raise SettingError(f"{name!r} is not an SDXL model; the refiner must be an SDXL refiner or base", "refiner")
        return kind
    if kind in UNSUPPORTED:
        raise SettingError(f"{name!r} is {UNSUPPORTED[kind]}", "model")
    if declared != "auto" and declared != kind:
        if source.is_dir():
            raise SettingError(f"{name!r} is an {kind.upper()} model by its configs, not {declared.upper()}",
                               "model_family")  # fmt: skip
        kind = declared  # a single file's names can mislead (a merge, an odd export): the person decides
    return kind


def demo_kind(source: Path) -> str | None:
    """Whether a model folder is a demonstration model rather than real weights, and which kind."""
    from lanskap.models.builtin import is_mini

    if not source.is_dir():
        return None
    if is_tiny(source):
        return "tiny"
    return "mini" if is_mini(source) else None


def _tiny_fallback(exc: Exception, settings: Settings, notices: list[str]) -> tuple[ModelRef, Path]:
    from lanskap.models.tiny import make_tiny

    tiny_dir = settings.models_dir / "lanskap-tiny-sd"
    if not is_tiny(tiny_dir):
        make_tiny(tiny_dir, "sd", overwrite=True)
    notices.append(f"{str(exc).split(':')[0]}: not available here.")
    notices.append(
        "FALLBACK: using the tiny RANDOM-WEIGHT model 'lanskap-tiny-sd'. Its images are noise: they "
        "show the whole flow (parameters, seeds, metadata, files), not real landscapes."
    )
    ref = ModelRef("folder", str(tiny_dir.resolve()), "lanskap-tiny-sd")
    source = tiny_dir
    return ref, source


class _Notices(list[str]):
    """The load's notices, also told as they arise (``on_notice``): a fallback is announced before
    the fallback model's loading progress, not after it."""

    def __init__(self, on_notice: Callable[[str], None] | None) -> None:
        super().__init__()
        self.on_notice = on_notice

    def append(self, notice: str) -> None:
        super().append(notice)
        if self.on_notice is not None:
            self.on_notice(notice)

    def extend(self, notices: Iterable[str]) -> None:
        for notice in notices:
            self.append(notice)


def load_model(
    spec: str | None,
    placement: Placement,
    settings: Settings,
    *,
    prediction_type: str | None = None,
    on_notice: Callable[[str], None] | None = None,
    role: str = "base",
) -> LoadedModel:
    """Resolve and load a base model; if it can't be had, fall back as ``settings.fallback`` says.

    ``mini`` (the default) loads the built-in lanskap-mini, so a machine without SD 2.1 still
    makes real landscapes; the notice says so in one line and the infotext names the model.
    """
    spec = spec or settings.model
    pred = normalize_prediction_type(prediction_type)
    notices = _Notices(on_notice)
    try:
        ref = resolve_model_ref(spec, settings)
        source = fetch_hub_model(ref.location, settings) if ref.kind == "hub" else ref.path
    except ModelUnavailableError as exc:
        if role == "refiner":  # no stand-in for a refiner: the job says what is missing
            raise ModelUnavailableError(str(exc).replace("base model", "refiner", 1), "refiner") from None
        if settings.fallback == "none":
            raise
        if settings.fallback == "mini":
            ref = resolve_model_ref(MINI_NAME, settings)
            source = ref.path
            notices.append(
                f"FALLBACK: {spec!r} is not available here, so this is lanskap-mini, the small built-in "
                f"landscape model ({MINI_SIZE} px; not SD 2.1). Get the real base with `hf download {spec}` "
                "or give a local model; a fallback of none makes this an error."
            )
        else:
            ref, source = _tiny_fallback(exc, settings, notices)
    kind = architecture(ref.name, source, settings.model_family if role == "base" else "auto", role)
    try:
        if ref.kind == "single_file":
            pipe, pred = _load_single_file(source, placement, settings, pred, notices, kind)
        else:
            pipe, pred = _load_folder(source, placement, settings, pred, notices, kind)
    except (OSError, ValueError) as exc:
        raise LanskapError(f"cannot load model {ref.name!r}: {str(exc).splitlines()[0][:200]}") from None
    if settings.vae:
        from lanskap.models.vae import load_vae

        pipe.vae = load_vae(settings.vae, dict(pipe.vae.config), placement.dtype)
        notices.append(f"VAE: {settings.vae} (instead of the model's own)")
    speed = make_plan(placement, settings.speed, free_memory_gib(placement.device))
    apply_plan(pipe, speed, placement, settings.cache_dir)
    notices.extend(speed.reasons)
    pipe.set_progress_bar_config(disable=True)
    tiny = source.is_dir() and is_tiny(source)
    scheduler = {**pipe.scheduler.config, "_class_name": type(pipe.scheduler).__name__}
    advice = recommended(ref.name, source, scheduler, dict(pipe.unet.config))
    if advice is not None:
        notices.append(advice.notice())
    if tiny and not any("RANDOM-WEIGHT" in n for n in notices):
        notices.append(f"model {ref.name!r} is a tiny RANDOM-WEIGHT test model: its images are noise.")
    return LoadedModel(
        pipe=pipe,
        ref=ref,
        source=source,
        hash=model_hash(source, settings.cache_dir),
        prediction_type=pred,
        placement=placement,
        tiny=tiny,
        notices=list(notices),
        speed=speed,
        recommended=advice,
        vae=Path(settings.vae).stem if settings.vae else None,
    )
