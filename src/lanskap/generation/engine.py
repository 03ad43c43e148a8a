"""The generation engine: one loaded pipeline, shared by the CLI, API and web app.

Why an object rather than a function: loading SD 2.1 takes seconds to minutes,
so the engine keeps the pipeline in memory, switches and rescales LoRAs without
reloading the base, and serialises GPU work with a lock so that several
threads (API workers, UI sessions) can share it safely.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from lanskap import __version__, joblog
from lanskap.config import Settings, load_settings
from lanskap.control.units import infotext as control_infotext
from lanskap.errors import CancelledError, LanskapError, LoraError, OutOfMemoryError
from lanskap.generation import controlled, hires, hypernet, levers, refiner, sdxl
from lanskap.generation.compose import Composer, Conditioning
from lanskap.generation.hires import HiresPlan
from lanskap.generation.hypernet import ActiveHypernet
from lanskap.generation.infotext import build_infotext, format_number
from lanskap.generation.lora import LoraInfo, check_compatible, inspect_lora, lora_display_name, resolve_lora
from lanskap.generation.networks import ExtraNetworks, text_width, ti_hashes
from lanskap.generation.panorama import ease_poles
from lanskap.generation.params import GenerationRequest, LoraSpec
from lanskap.generation.prepare import Prepared, prepare
from lanskap.generation.schedulers import Sampler, build_scheduler, get_sampler
from lanskap.generation.steps import ExtraConditioning, PostStep
from lanskap.generation.tiling import infotext as tiling_infotext
from lanskap.generation.tiling import tiled
from lanskap.generation.watermark import MESSAGE, apply_watermark
from lanskap.models.device import Placement, resolve_placement
from lanskap.models.loader import LoadedModel, load_model
from lanskap.models.speed import configure_vae, free_memory_gib
from lanskap.prompts.embeddings import Embedding
from lanskap.prompts.encode import (
    PromptPair,
    ScheduledPrompts,
    encode_prompt_pair,
    encode_prompt_schedules,
    text_encoder_layers,
)
from lanskap.prompts.lora_tags import extract_lora_tags, extract_network_tags, lora_tag

if TYPE_CHECKING:
    from lanskap.control.hook import ActiveUnit, ControlHook, Controls
    from lanskap.generation.deepcache import FeatureCache
    from lanskap.generation.schedulers import Sampler
    from lanskap.upscale.upscalers import Runner as UpscaleRunner


MAX_CACHED_ADAPTERS = 8


@dataclass(frozen=True)
class Progress:
    """Reported after every denoising step."""

    step: int  # step within the current batch, 1-based
    steps: int
    batch: int  # 1-based
    batches: int
    done: int  # steps finished over the whole job
    total: int
    elapsed: float
    #: The batch's latents after this step (not copied), for a live preview; None where there are none.
    latents: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def eta(self) -> float:
        return self.elapsed / self.done * (self.total - self.done) if self.done else 0.0


@dataclass(frozen=True)
class AppliedLora:
    name: str
    scale: float
    hash: str


@dataclass
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    request: GenerationRequest  # with seed, width and height filled in
    model_name: str
    model_hash: str
    loras: list[AppliedLora]
    device: str
    dtype: str
    seconds: float
    notices: list[str] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)  # peak_gpu_mb (CUDA), peak_rss_mb
    partial: list[bool] = field(default_factory=list)  # per image: stopped before its last step (skip/interrupt)
    interrupted: bool = False  # the job was interrupted: later images were never made
    #: The control maps the job used, as their preprocessors made them: "ControlNet 0", …, and "Depth".
    maps: dict[str, Image.Image] = field(default_factory=dict)

    def complete(self) -> GenerationResult:
        """Only the images that ran every step (what the gallery records)."""
        keep = [i for i in range(len(self.images)) if not (self.partial and self.partial[i])]
        return replace(
            self,
            images=[self.images[i] for i in keep],
            seeds=[self.seeds[i] for i in keep],
            infotexts=[self.infotexts[i] for i in keep],
            partial=[False] * len(keep),
        )


@dataclass
class EngineInfo:
    """The engine's state: the model (loaded or not), its family, device, precision and levers."""

    model: str
    model_hash: str | None
    loaded: bool
    prediction_type: str | None
    native_size: int | None
    tiny: bool | None
    fallback: str | None  # the one-line notice when a fallback model stands in for the asked one
    device: str
    dtype: str
    levers: str | None  # the speed levers in use, in words
    loras_cached: list[str]
    family: str | None = None
    demo: str | None = None  # "tiny" or "mini" when a demonstration model is (or will be) in use
    #: A distilled model's own steps, guidance and sampler (models/distilled.py), with its kind.
    recommended: dict[str, Any] | None = None
    depth: bool | None = None  # an SD 2 depth model (runs depth2img only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Run:
    """One generation job between its steps: what set-up decided, and the progress so far."""

    started: float
    model: LoadedModel
    req: GenerationRequest
    prep: Prepared
    applied: list[AppliedLora]
    embeds: ScheduledPrompts
    sampler: Sampler
    batches: list[list[int]]
    effective: int  # denoising steps per image (fewer than req.steps for img2img)
    pipe: Any
    notices: list[str]
    done: int = 0
    hires: HiresPlan | None = None  # the second pass of a hires fix
    composer: Composer | None = None  # panorama windows and regional prompts
    control: list[ActiveUnit] = field(default_factory=list)  # ControlNet units, ready to run
    depth: torch.Tensor | None = None  # depth2img's (1, h, w) depth map
    maps: dict[str, Image.Image] = field(default_factory=dict)
    hypernets: list[ActiveHypernet] = field(default_factory=list)
    region_embeddings: dict[str, Embedding] = field(default_factory=dict)
    refiner: refiner.RefinerPlan | None = None  # SDXL's refiner, for the last steps

    def embeddings(self) -> dict[str, Embedding]:
        """The embeddings the job's prompts named (both passes, and the regions')."""
        used = {**self.embeds.embeddings, **self.region_embeddings}
        if self.hires is not None:
            used.update(self.hires.embeds.embeddings)
        return used


ProgressFn = Callable[[Progress], None]


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate")
    )


class Engine:
    """Text-to-image with SD 2.1 (or any SD 1.x/2.x or SDXL diffusers model) and LoRAs.

    >>> engine = Engine("path/to/model")          # doctest: +SKIP
    >>> result = engine.generate(GenerationRequest("a castle in the mist", seed=42))  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        prediction_type: str | None = None,
        settings: Settings | None = None,
        allow_lora_paths: bool = True,
        **setting_overrides: Any,
    ) -> None:
        self.settings = settings or load_settings(model=model, device=device, dtype=dtype, **setting_overrides)
        if settings is not None and model is not None:
            self.settings = replace(self.settings, model=model)
        self.model_spec = self.settings.model
        self.prediction_type = prediction_type
        self.allow_lora_paths = allow_lora_paths
        self._placement: Placement | None = None
        self._model: LoadedModel | None = None
        self._lock = threading.RLock()
        self._adapters: OrderedDict[str, LoraInfo] = OrderedDict()
        self._base_scheduler_config: Any = None
        self._pipes: dict[str, Any] = {}
        self._fused: tuple[tuple[str, float], ...] | None = None  # LoRAs fused into the weights, with scales
        self.on_notice: Callable[[str], None] | None = None  # told each load notice as it arises
        self.conditioning: list[ExtraConditioning] = []  # the seams for new capabilities (generation/steps.py)
        self.post_steps: list[PostStep] = []
        self._upscalers: UpscaleRunner | None = None
        self._controls: Controls | None = None
        self._refiner: LoadedModel | None = None  # the last SDXL refiner asked for, kept loaded
        self._refiner_spec = ""
        self.networks = ExtraNetworks(self.settings)  # embeddings and hypernetworks

    @property
    def controls(self) -> Controls:
        """ControlNet models and depth networks on this engine's device (loaded when first asked for)."""
        if self._controls is None:
            from lanskap.control.hook import Controls

            self._controls = Controls(self.settings, self.placement)
        return self._controls

    @property
    def upscalers(self) -> UpscaleRunner:
        """Upscaler models on this engine's device (hires fix, extras and SD upscale share them)."""
        if self._upscalers is None:
            from lanskap.upscale.upscalers import Runner

            self._upscalers = Runner(self.settings, self.placement)
        return self._upscalers

    def add_step(self, step: ExtraConditioning | PostStep) -> None:
        """Plug in a capability: extra pipeline inputs, or a step on the decoded images."""
        if isinstance(step, PostStep):
            self.post_steps.append(step)
        elif isinstance(step, ExtraConditioning):
            self.conditioning.append(step)
        else:
            raise TypeError(f"{step!r} is neither an ExtraConditioning nor a PostStep")

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_loaded(cls, model: LoadedModel, settings: Settings) -> Engine:
        """An engine around a model that is already in memory (the trainer's, with its LoRA attached).

        Validation during training then renders exactly as ``lanskap generate`` would.
        """
        engine = cls(settings=settings)
        engine.model_spec = model.ref.name
        engine._placement = model.placement
        engine._model = model
        engine._base_scheduler_config = model.pipe.scheduler.config
        return engine

    @property
    def placement(self) -> Placement:
        if self._placement is None:
            self._placement = resolve_placement(self.settings.device, self.settings.dtype)
        return self._placement

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def current(self) -> LoadedModel | None:
        """The loaded model or None, without waiting for a running job (``load`` holds the engine's lock)."""
        return self._model

    def load(self) -> LoadedModel:
        """Load the base model once; later calls return the same pipeline."""
        with self._lock:
            if self._model is None:
                self._model = load_model(
                    self.model_spec,
                    self.placement,
                    self.settings,
                    prediction_type=self.prediction_type,
                    on_notice=self.on_notice,
                )
                self._base_scheduler_config = self._model.pipe.scheduler.config
            return self._model

    def refiner_model(self, spec: str) -> LoadedModel:
        """The SDXL refiner ``spec`` names, loaded once and kept beside the base until another is asked for."""
        with self._lock:
            if self._refiner is None or self._refiner_spec != spec:
                self._refiner = None
                self._refiner = load_model(spec, self.placement, self.settings, on_notice=self.on_notice,
                                           role="refiner")  # fmt: skip
                self._refiner_spec = spec
            return self._refiner

    def _refiner_plan(self, req: GenerationRequest, prompt: str, schedule_steps: int) -> refiner.RefinerPlan | None:
        if not req.refiner or req.refiner_switch_at >= 1.0:
            return None
        refiner.check(self.model, req)
        from lanskap.prompts.dual import DualEncoder, encode_dual_schedules

        rm = self.refiner_model(req.refiner)
        pipe = refiner.pipeline(rm, req.mode)
        enc = DualEncoder(pipe.tokenizer, pipe.text_encoder, pipe.tokenizer_2, pipe.text_encoder_2)
        embeds = encode_dual_schedules(enc, prompt, req.negative_prompt, schedule_steps, req.prompt_2 or None)
        return refiner.RefinerPlan(rm, pipe, embeds, req.refiner_switch_at)

    def use_model(self, spec: str) -> bool:
        """Make ``spec`` the base model (loaded by the next job); True when it changed.

        Waits for a running generation; the old pipeline is dropped first so two models never
        share the device.
        """
        with self._lock:
            if spec == self.model_spec:
                return False
            self.unload()
            self.model_spec = spec
            return True

    def unload(self) -> bool:
        """Drop the pipeline so a training or evaluation run in this process gets the memory.

        Waits for a running generation (the lock); the next ``generate`` loads again.
        """
        with self._lock:
            if self._model is None:
                return False
            self._model = None
            self._controls = None  # ControlNets and depth networks go with the base they were loaded for
            self._refiner, self._refiner_spec = None, ""  # and so does an SDXL refiner
            self._pipes.clear()
            self._adapters.clear()
            self._fused = None
            self._base_scheduler_config = None
            import gc

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return True

    @property
    def model(self) -> LoadedModel:
        return self.load()

    def info(self) -> EngineInfo:
        """What is loaded and where, for status panels and the APIs."""
        m = self._model
        return EngineInfo(
            model=m.name if m else self.model_spec,
            model_hash=m.hash if m else None,
            loaded=m is not None,
            prediction_type=m.prediction_type if m else None,
            native_size=m.native_size if m else self._native_spec(),
            tiny=m.tiny if m else None,
            fallback=next((n for n in m.notices if n.startswith("FALLBACK")), None) if m else None,
            device=str(self.placement.device),
            dtype=self.placement.dtype_name,
            levers=f"{m.speed.summary()}; speed {self.settings.speed_level}" if m else None,
            loras_cached=[i.name for i in self._adapters.values()],
            family=m.family.label if m else self._family_spec(),
            demo=m.demo if m else self._demo_spec(),
            recommended=asdict(m.recommended) if m and m.recommended else None,
            depth=m.depth if m else None,
        )

    def _native_spec(self) -> int | None:
        """Before loading: the configured folder's native size from its configs (the web app sizes its form
        from this, so lanskap-mini's 128 px shows at once rather than after the model loads)."""
        import json
        from pathlib import Path

        from lanskap.models import builtin

        try:
            folder = builtin.shipped() if self.model_spec == builtin.NAME else Path(self.model_spec or "")
            unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
            vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
            return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
        except (OSError, ValueError, KeyError, TypeError, LanskapError):
            return None  # a hub id, a single file or an unusual folder: known once it is loaded

    def _family_spec(self) -> str | None:
        """Before loading: "SDXL" when the configured folder's configs say so (the web app shows the
        SDXL fields and sizes at once); other families are told apart once loaded."""
        from pathlib import Path

        from lanskap.models.family import SDXL, detect_folder

        try:
            return SDXL.label if self.model_spec and detect_folder(Path(self.model_spec)) == "sdxl" else None
        except OSError:
            return None

    def _demo_spec(self) -> str | None:
        """Before loading: whether the configured model names a demonstration model."""
        from pathlib import Path

        from lanskap.models import builtin
        from lanskap.models.loader import demo_kind

        if self.model_spec == builtin.NAME:
            return "mini"
        try:
            return demo_kind(Path(self.model_spec)) if self.model_spec else None
        except OSError:  # not a usable path (too long, unreadable): a hub id, not a demo folder
            return None

    # -- LoRA ----------------------------------------------------------------------------------
    def _load_lora_state(self, info: LoraInfo) -> dict[str, torch.Tensor]:
        # Only reachable with allow_pickle (resolve_lora refuses pickles otherwise).
        return torch.load(str(info.path), map_location="cpu", weights_only=True)

    def _apply_loras(self, specs: list[LoraSpec]) -> list[AppliedLora]:
        """Make exactly ``specs`` active, loading new adapters and rescaling cached ones."""
        m = self.load()
        merged: OrderedDict[str, tuple[LoraInfo, float]] = OrderedDict()
        for spec in specs:
            info = inspect_lora(
                resolve_lora(spec.name, self.settings, allow_paths=self.allow_lora_paths), self.settings
            )
            check_compatible(info, m.cross_attention_dim, m.name)
            adapter = f"lora_{info.hash}"
            prev = merged.get(adapter)
            merged[adapter] = (info, spec.scale + (prev[1] if prev else 0.0))
        applied = [AppliedLora(info.name, scale, info.hash) for info, scale in merged.values()]
        key = tuple((adapter, scale) for adapter, (_, scale) in merged.items())
        if self._fused is not None:
            if self._fused == key:  # same LoRAs at the same scales: already in the weights
                return applied
            m.pipe.unfuse_lora()  # back to the base weights before anything is loaded or rescaled
            self._fused = None
        for adapter, (info, _) in merged.items():
            if adapter in self._adapters:
                self._adapters.move_to_end(adapter)
                continue
            try:
                if info.path.suffix == ".safetensors":
                    # By path, not as a dict: diffusers then also reads the adapter metadata in the
                    # header (lora_alpha when it differs from the rank), which a bare dict loses.
                    m.pipe.load_lora_weights(
                        str(info.path.parent), weight_name=info.path.name, adapter_name=adapter, local_files_only=True
                    )
                else:
                    m.pipe.load_lora_weights(self._load_lora_state(info), adapter_name=adapter)
            except (ValueError, RuntimeError, KeyError, TypeError) as exc:
                with contextlib.suppress(Exception):
                    m.pipe.delete_adapters(adapter)
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                if "size mismatch" in str(exc) or "shape" in str(exc):
                    raise LoraError(
                        f"LoRA {info.name!r} does not fit model {m.name!r} (made for another base?): {first}"
                    ) from None
                raise LoraError(f"cannot apply LoRA {info.name!r}: {first}") from None
            self._adapters[adapter] = info
        self._evict(keep=set(merged))
        if merged:
            m.pipe.enable_lora()
            m.pipe.set_adapters(list(merged), adapter_weights=[scale for _, scale in merged.values()])
        elif self._adapters:
            m.pipe.disable_lora()
        if merged and m.speed.fuse_lora:
            # The scale is fixed until the next job asks for another: fold the LoRA into the weights
            # so the steps run at the base model's speed. Unfused above when the request changes.
            m.pipe.fuse_lora(adapter_names=list(merged), lora_scale=1.0)
            self._fused = key
        return applied

    def _evict(self, keep: set[str]) -> None:
        while len(self._adapters) > MAX_CACHED_ADAPTERS:
            victim = next((a for a in self._adapters if a not in keep), None)
            if victim is None:
                return
            self._model.pipe.delete_adapters(victim)  # type: ignore[union-attr]
            del self._adapters[victim]

    # -- generation ----------------------------------------------------------------------------
    def _initial_latents(self, seeds: list[int], height: int, width: int, ensd: int = 0) -> tuple[torch.Tensor, list]:
        """Per-image CPU generators: the same seed gives the same noise in any batch, on any device.

        The generators go on to draw the sampler's per-step noise; with an eta noise seed delta they
        are reseeded at ``seed + ensd`` after the first draw, as A1111's ``ImageRNG.first`` does.
        """
        m = self.model
        channels = 4 if m.inpainting or m.depth else m.pipe.unet.config.in_channels
        shape = (1, channels, height // m.pipe.vae_scale_factor, width // m.pipe.vae_scale_factor)
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        latents = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in gens])
        if ensd:
            gens = [torch.Generator("cpu").manual_seed(s + ensd) for s in seeds]
        return latents.to(m.placement.device, m.placement.dtype), gens

    def _pipeline(self, kind: str) -> Any:
        """The diffusers pipeline for ``kind``, sharing the loaded components (no second copy in memory).

        The model family names the pipeline class of each mode (``models/family.py``).
        """
        import diffusers

        m = self.model
        if m.inpainting:
            kind = "inpaint"  # a 9-channel UNet runs every mode through the inpainting pipeline
        if kind not in m.family.pipelines:
            raise LanskapError(f"{m.name} is {m.family.label}, which has no {kind} pipeline")
        cls = getattr(diffusers, m.family.pipelines[kind])
        if type(m.pipe) is cls:
            return m.pipe
        if kind not in self._pipes:
            # depth2img gets its depth map from the engine (controlled.depth_map), never its own estimator
            extra = {"depth_estimator": None, "feature_extractor": None} if kind == "depth2img" else {}
            self._pipes[kind] = cls.from_pipe(m.pipe, **extra)
            self._pipes[kind].set_progress_bar_config(disable=True)
            if hasattr(self._pipes[kind], "watermark"):
                self._pipes[kind].watermark = None  # SDXL pipelines' own mark; lanskap marks every picture once
        return self._pipes[kind]

    def encode_prompts(self, prompt: str, negative_prompt: str, clip_skip: int = 1) -> PromptPair:
        """A1111-style embeddings for a prompt pair, any length, with weights (LoRAs must be applied first)."""
        m = self.load()
        self._check_clip_skip(clip_skip)
        table = self.networks.table(m.pipe.tokenizer, m.pipe.text_encoder)
        return encode_prompt_pair(m.pipe.tokenizer, m.pipe.text_encoder, prompt, negative_prompt, clip_skip, table)

    def encode_schedule(
        self, prompt: str, negative_prompt: str, steps: int, clip_skip: int = 1, prompt_2: str = ""
    ) -> ScheduledPrompts:
        """Like :meth:`encode_prompts`, for every text A1111's prompt editing and alternation make of them.

        An SDXL model encodes through both its text encoders (``prompts/dual.py``; ``prompt_2`` goes
        to the second one), with pooled embeddings, as A1111 does.
        """
        m = self.load()
        if m.family.is_sdxl:
            from lanskap.prompts.dual import DualEncoder, encode_dual_schedules

            return encode_dual_schedules(DualEncoder.of(m.pipe), prompt, negative_prompt, steps, prompt_2 or None)
        self._check_clip_skip(clip_skip)
        tok, te = m.pipe.tokenizer, m.pipe.text_encoder
        return encode_prompt_schedules(tok, te, prompt, negative_prompt, steps, clip_skip, self.networks.table(tok, te))

    def _check_clip_skip(self, clip_skip: int) -> None:
        layers = text_encoder_layers(self.load().pipe.text_encoder)
        if clip_skip > layers:
            raise LanskapError(f"clip skip {clip_skip} is more than this model's {layers} text-encoder layers")

    def generate(
        self,
        request: GenerationRequest,
        *,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        skip: threading.Event | None = None,
        keep_partial: bool = False,
    ) -> GenerationResult:
        """Run one job: ``num_images`` images in batches of ``batch_size``, seeds seed, seed+1, …

        txt2img, img2img and inpainting (``request.mode``) share every step: set-up (seeds, LoRAs,
        the prompt schedule), denoising batch by batch, then watermark, infotext and the job log.
        ``cancel`` stops at the next step: with ``keep_partial`` the images so far come back (the
        current one as it stands, as A1111's interrupt does), else it raises ``CancelledError``.
        ``skip`` ends the current batch as it stands and goes on with the next (A1111's skip).
        """
        request.validate(self.settings.max_regions)
        with self._lock:
            run = self._start(request)
            pipe, req = run.model.pipe, run.req
            assert req.width is not None and req.height is not None
            unet_wrap = run.composer.unet_wrap(req.width, req.height) if run.composer is not None else req.wrap
            with tiled([pipe.unet], unet_wrap), tiled([pipe.vae], req.wrap):
                images, partial = self._denoise(run, progress, cancel, skip)
            if cancel is not None and cancel.is_set() and not keep_partial:
                raise CancelledError("generation interrupted")
            return self._finish(run, images, partial, interrupted=cancel is not None and cancel.is_set())

    def _start(self, request: GenerationRequest) -> _Run:
        """Load, fix the seed and size, apply LoRAs, encode the prompt schedule, pick the sampler."""
        start = time.perf_counter()
        m = self.load()
        joblog.reset_peak(m.placement.device)
        seeded = request.with_seed()  # once: a random seed must be the same one everywhere below
        if m.recommended is not None and seeded.model_defaults:  # a distilled model's few-step settings
            rec = m.recommended
            fields = {f: getattr(rec, f) for f in seeded.model_defaults}
            seeded = replace(seeded, **fields).validate(self.settings.max_regions)
        seeded = levers.resolve(seeded, self.settings.speed_level)  # unset levers: the speed level's
        if seeded.panorama is not None and seeded.panorama.equirectangular and seeded.width is None:
            side = seeded.height or m.native_size  # a 360° sky at the model's height, twice as wide
            seeded = replace(seeded, width=2 * side, height=side).validate(self.settings.max_regions)
        seeded = controlled.check_mode(m, seeded)
        prep = prepare(seeded, m.native_size)
        req = replace(seeded, width=prep.width, height=prep.height)
        assert req.width is not None and req.height is not None and req.seed is not None
        prompt, tag_loras, hypernet_tags = extract_network_tags(req.prompt)
        if m.family.is_sdxl:
            sdxl.check(req, m.name, bool(hypernet_tags))
        unused_prompt_2 = bool(req.prompt_2) and not m.family.is_sdxl
        if unused_prompt_2:  # one text encoder: nothing to send a second prompt to, and nothing recorded
            req = replace(req, prompt_2="")
        applied = self._apply_loras([*tag_loras, *req.loras])
        hypernets = self.networks.hypernets(hypernet_tags, text_width(m.pipe.text_encoder), m.name)
        sampler = get_sampler(req.scheduler)
        # A1111 schedules prompt edits over twice the steps for samplers that call the model twice a step.
        schedule_steps = req.steps * (2 if sampler.second_order else 1)
        embeds = self.encode_schedule(prompt, req.negative_prompt, schedule_steps, req.clip_skip, req.prompt_2)
        seeds = req.seeds
        size = 1 if sampler.batch_noise else req.batch_size
        effective = req.steps if req.mode == "txt2img" else min(int(req.steps * prep.strength), req.steps)
        batches = [seeds[i : i + size] for i in range(0, len(seeds), size)]
        pipe = self._pipeline(req.mode)
        run = _Run(start, m, req, prep, applied, embeds, sampler, batches, effective, pipe, list(m.notices))
        run.hypernets = hypernets
        run.refiner = self._refiner_plan(req, prompt, schedule_steps)
        if unused_prompt_2:
            run.notices.append(f"the second prompt is for SDXL's second text encoder; {m.name} has one: not used")
        if req.hires is not None:
            from lanskap.upscale.upscalers import find

            hires.check_model(m.inpainting)
            upscaler = find(req.hires.upscaler, self.settings, latent=True)
            self.upscalers.check(upscaler)  # a bad upscaler file is reported before any step runs

            def encode(p: str, n: str, steps: int) -> ScheduledPrompts:
                return self.encode_schedule(extract_network_tags(p)[0], n, steps, req.clip_skip, req.prompt_2)

            run.hires = hires.plan(req.hires, req, sampler, upscaler, encode)
        run.composer = self._composer(req, run.region_embeddings)
        if req.control:
            run.control, run.maps = controlled.ready_units(self.controls, m, req, prep)
            run.req = replace(req, control=tuple(u.unit for u in run.control))  # models named as resolved
        if req.depth is not None:
            run.depth, run.maps["Depth"] = controlled.depth_map(self.controls, m, req)
        run.notices += self._notices(run)
        return run

    def _composer(self, req: GenerationRequest, named: dict[str, Embedding]) -> Composer | None:
        """The window and region plan of a panorama or a regional layout (None for a plain frame);
        the embeddings the regions' prompts name are added to ``named``."""
        if req.panorama is None and req.regions is None:
            return None
        conditionings = []
        if req.regions is not None:
            for i, region in enumerate(req.regions.regions):
                pair = self.encode_prompts(region.prompt, region.negative_prompt or req.negative_prompt, req.clip_skip)
                conditionings.append(Conditioning(pair.cond, pair.uncond, i))
                named.update(pair.embeddings)
        m = self.model
        return Composer(req.panorama, m.native_size, req.wrap, req.batch_size, m.pipe.vae_scale_factor,
                        req.regions, conditionings)  # fmt: skip

    def _notices(self, run: _Run) -> list[str]:
        req, m, embeds = run.req, run.model, run.embeds
        assert req.width is not None and req.height is not None
        notes = sdxl.notices(req) if m.family.is_sdxl else []
        if embeds.chunks > 1:
            notes.append(
                f"long prompt: {embeds.prompt_tokens} + {embeds.negative_tokens} tokens encoded "
                f"in {embeds.chunks} chunks of 75"
            )
        if not embeds.static:
            p, n = embeds.forms
            notes.append(
                f"prompt editing: the prompt takes {p} form(s) and the negative prompt {n} while sampling; "
                "each is encoded once"
            )
        if req.ensd and req.mode != "txt2img":
            notes.append("the eta noise seed delta applies to text-to-image only; it was not used")
        if run.composer is not None and req.panorama is not None:
            window, stride = req.panorama.layout(m.native_size, req.width, req.height)
            count = run.composer.window_count(req.width, req.height)
            batch = req.panorama.batch
            notes.append(f"panorama: {count} window(s) of {window} px, {stride} px apart, {batch} at a time")
        elif max(req.width, req.height) > 2 * m.native_size:
            notes.append(
                f"{m.name} was trained at {m.native_size} px; at {req.width}x{req.height} it tends to repeat "
                "its subjects (leave the size out to use the native one)"
            )
        if run.effective < 1:
            notes.append("strength too low for any denoising step: the input is returned unchanged")
        return notes

    def _denoise(
        self,
        run: _Run,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
        skip: threading.Event | None,
    ) -> tuple[list[Image.Image], list[bool]]:
        """Every batch through the pipeline; returns the images and which of them stopped early."""
        req, prep = run.req, run.prep
        images: list[Image.Image] = []
        partial: list[bool] = []
        for b, batch_seeds in enumerate(run.batches, 1):
            if cancel is not None and cancel.is_set():
                break
            if run.effective < 1:
                assert req.init is not None
                images.extend(req.init.image.convert("RGB") if req.mask else prep.start(s) for s in batch_seeds)
                partial += [False] * len(batch_seeds)
                continue
            stopped = self._batch(run, b, batch_seeds, progress, cancel, skip, images)
            partial += [stopped] * len(batch_seeds)
            if skip is not None:
                skip.clear()  # a skip ends one batch only
        return images, partial

    def _batch(
        self,
        run: _Run,
        b: int,
        batch_seeds: list[int],
        progress: ProgressFn | None,
        cancel: threading.Event | None,
        skip: threading.Event | None,
        images: list[Image.Image],
    ) -> bool:
        """One batch (and its hires pass); appends its images and says whether it was stopped early."""
        req, m, pipe = run.req, run.model, run.pipe
        assert req.width is not None and req.height is not None
        vae_note = configure_vae(
            pipe, m.speed, req.width, req.height, len(batch_seeds), free_memory_gib(m.placement.device)
        )
        if vae_note and vae_note not in run.notices:
            run.notices.append(vae_note)
        args = self._call_args(run, batch_seeds)
        stops = (progress, cancel, skip)
        if run.refiner is not None:
            return self._refined(run, b, batch_seeds, args, stops, images)
        if run.hires is None:
            out, stopped = self._call(run, pipe, args, run.sampler, run.embeds, b, batch_seeds, stops, 0)
            images.extend(run.prep.finish(im) for im in out.images)
            return stopped
        args["output_type"] = "latent"
        out, stopped = self._call(run, pipe, args, run.sampler, run.embeds, b, batch_seeds, stops, run.hires.effective)
        if stopped or (cancel is not None and cancel.is_set()) or (skip is not None and skip.is_set()):
            images.extend(hires.decode(pipe, out.images))  # the first pass as it stands: no second pass
            return True
        return self._hires_pass(run, b, batch_seeds, out.images, stops, images)

    def _refined(
        self,
        run: _Run,
        b: int,
        seeds: list[int],
        args: dict[str, Any],
        stops: tuple[ProgressFn | None, threading.Event | None, threading.Event | None],
        images: list[Image.Image],
    ) -> bool:
        """One batch through the base up to the switch, then through the refiner from there."""
        plan, req = run.refiner, run.req
        assert plan is not None and req.width is not None and req.height is not None
        later = plan.steps(req.steps)
        args = {**args, "denoising_end": plan.switch, "output_type": "latent"}
        out, stopped = self._call(run, run.pipe, args, run.sampler, run.embeds, b, seeds, stops, later)
        cancel, skip = stops[1], stops[2]
        if stopped or (cancel is not None and cancel.is_set()) or (skip is not None and skip.is_set()):
            images.extend(run.prep.finish(im) for im in hires.decode(run.pipe, out.images))  # the base's part
            return True
        refine = refiner.call_args(plan, out.images, args, req.width, req.height)
        out, stopped = self._call(run, plan.pipe, refine, run.sampler, plan.embeds, b, seeds, stops, req.steps - later)
        images.extend(run.prep.finish(im) for im in out.images)
        return stopped

    def _hires_pass(
        self,
        run: _Run,
        b: int,
        seeds: list[int],
        latents: torch.Tensor,
        stops: tuple[ProgressFn | None, threading.Event | None, threading.Event | None],
        images: list[Image.Image],
    ) -> bool:
        """The hires fix's second pass over one batch's first-pass latents."""
        plan = run.hires
        assert plan is not None
        start = hires.upscale(plan, run.pipe, latents, self.upscalers, run.req.prompt, seeds)
        if plan.effective < 1:  # denoise 0: the upscaled first pass, untouched
            images.extend(start if isinstance(start, list) else hires.decode(run.pipe, start))
            return False
        pipe = self._pipeline("img2img")
        cond, uncond = plan.embeds.at(0)
        n = len(seeds)
        args: dict[str, Any] = {
            "prompt_embeds": cond.expand(n, -1, -1),
            "negative_prompt_embeds": uncond.expand(n, -1, -1),
            "num_inference_steps": plan.steps,
            "guidance_scale": run.req.guidance,
            "image": start,
            "strength": plan.fix.denoise,
            "generator": [torch.Generator("cpu").manual_seed(s) for s in seeds],  # A1111: fresh noise per seed
            "output_type": "pil",
        }
        if plan.embeds.pooled:
            args.update(sdxl.call_args(plan.embeds, n, *plan.crop))
        out, stopped = self._call(run, pipe, args, plan.sampler, plan.embeds, b, seeds, stops, run.effective, True)
        images.extend(out.images)
        return stopped

    def _call(
        self,
        run: _Run,
        pipe: Any,
        args: dict[str, Any],
        sampler: Sampler,
        embeds: ScheduledPrompts,
        b: int,
        batch_seeds: list[int],
        stops: tuple[ProgressFn | None, threading.Event | None, threading.Event | None],
        other_steps: int,
        second_pass: bool = False,
    ) -> tuple[Any, bool]:
        """One pipeline call with progress, cancel, skip and prompt edits; ``other_steps`` are the
        steps of the job's other pass (hires fix) per batch, counted in the total."""
        req, m = run.req, run.model
        progress, cancel, skip = stops
        pipe.scheduler = build_scheduler(sampler, self._base_scheduler_config, noise_seed=batch_seeds[0])
        stopped = False
        cache: FeatureCache | None = None
        control: ControlHook | None = None
        if run.control:
            control = controlled.hook(run.control, len(batch_seeds), int(pipe.vae_scale_factor), second_pass)

        def on_step(p: Any, i: int, t: Any, kwargs: dict) -> dict:
            nonlocal stopped
            run.done += 1
            steps = int(getattr(p, "num_timesteps", 0) or run.effective)
            if cache is not None:
                cache.next_step(steps)
            if control is not None:
                control.next_step(steps)
            if progress:
                elapsed = time.perf_counter() - run.started
                total = (steps + other_steps) * len(run.batches)
                progress(Progress(i + 1, steps, b, len(run.batches), run.done, total, elapsed, kwargs.get("latents")))
            if (cancel is not None and cancel.is_set()) or (skip is not None and skip.is_set()):
                p._interrupt, stopped = True, i + 1 < steps
            elif not embeds.static:
                kwargs["prompt_embeds"] = self._step_embeds(embeds, i + 1, len(batch_seeds), p)
                pooled = sdxl.step_pooled(embeds, i + 1, len(batch_seeds), p.do_classifier_free_guidance)
                if pooled is not None:
                    kwargs["add_text_embeds"] = pooled
            return kwargs

        inputs = ["latents"] if embeds.static else ["latents", "prompt_embeds"]
        if not embeds.static and embeds.pooled:
            inputs.append("add_text_embeds")
        controlling = control.patched(pipe.unet) if control is not None else contextlib.nullcontext()
        composing = contextlib.nullcontext()
        if run.composer is not None:
            run.composer.images = len(batch_seeds)
            composing = run.composer.patched(pipe.unet)  # type: ignore[assignment]
        try:
            hypernetworks = hypernet.applied(pipe.unet, run.hypernets)
            with controlling, composing, hypernetworks, levers.applied(pipe.unet, req) as cache:
                out = pipe(**args, callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=inputs)
        except Exception as exc:
            if _is_oom(exc):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                w, h = run.hires.size if run.hires is not None and pipe is not run.pipe else (req.width, req.height)
                raise OutOfMemoryError(
                    f"out of memory generating {len(batch_seeds)} image(s) at {w}x{h} "
                    f"on {m.placement.device}; lower the size or the batch size, or use fp16/bf16 precision",
                    "width",
                    "height",
                    "batch_size",
                    "dtype",
                ) from None
            raise
        return out, stopped

    @staticmethod
    def _step_embeds(embeds: ScheduledPrompts, step: int, n: int, pipe: Any) -> torch.Tensor:
        """The conditioning the pipeline uses from ``step`` on: [uncond, cond] under guidance, as it batches them."""
        cond, uncond = embeds.at(step)
        cond = cond.expand(n, -1, -1)
        if getattr(pipe, "do_classifier_free_guidance", False):
            return torch.cat([uncond.expand(n, -1, -1), cond])
        return cond

    def _finish(
        self, run: _Run, images: list[Image.Image], partial: list[bool], *, interrupted: bool
    ) -> GenerationResult:
        """Post-steps, watermark, infotext, the result and the job log."""
        req, m = run.req, run.model
        seeds = [s for batch in run.batches for s in batch][: len(images)]
        if req.panorama is not None and req.panorama.equirectangular:
            images = [ease_poles(im) for im in images]
        for step in self.post_steps:
            if step.applies(req) and images:
                images = list(step(self, req, images, seeds))
        marked = [False] * len(images)
        if req.watermark:
            for i, im in enumerate(images):
                done_im = apply_watermark(im)
                if done_im is not None:
                    images[i], marked[i] = done_im, True
            if not all(marked):
                run.notices.append(
                    "watermark skipped on images under 256x256 or too busy to carry it; "
                    "their infotext does not claim it"
                )
        infotexts = [self._infotext(req, run, s, wm) for s, wm in zip(seeds, marked, strict=True)]
        for img, text in zip(images, infotexts, strict=True):
            img.info["parameters"] = text
        if any(partial):
            run.notices.append(f"{sum(partial)} image(s) stopped before their last step: not saved to the gallery")
        result = GenerationResult(
            images=images,
            seeds=seeds,
            infotexts=infotexts,
            request=req,
            model_name=m.name,
            model_hash=m.hash,
            loras=run.applied,
            device=str(m.placement.device),
            dtype=m.placement.dtype_name,
            seconds=time.perf_counter() - run.started,
            notices=run.notices,
            memory=joblog.peak_memory(m.placement.device),
            partial=partial,
            interrupted=interrupted,
            maps=run.maps,
        )
        joblog.append(
            self.settings.home,
            "generations",
            {
                "mode": req.task,
                "params": req.to_dict(),
                "seeds": seeds,
                "model": m.name,
                "model_hash": m.hash,
                "loras": [lo.__dict__ for lo in run.applied],
                "device": result.device,
                "dtype": result.dtype,
                "seconds": round(result.seconds, 4),
                "interrupted": interrupted,
                **result.memory,
            },
        )
        return result

    def _call_args(self, run: _Run, seeds: list[int]) -> dict[str, Any]:
        """Keyword arguments for the diffusers pipeline of ``req.mode`` (on this model)."""
        m, req, prep = self.model, run.req, run.prep
        n = len(seeds)
        cond, uncond = run.embeds.at(0)
        assert req.width is not None and req.height is not None
        args: dict[str, Any] = {
            "prompt_embeds": cond.expand(n, -1, -1),
            "negative_prompt_embeds": uncond.expand(n, -1, -1),
            "num_inference_steps": req.steps,
            "guidance_scale": req.guidance,
            "width": req.width,
            "height": req.height,
            "output_type": "pil",
        }
        if m.family.is_sdxl:
            args.update(sdxl.call_args(run.embeds, n, req.width, req.height))
        if req.mode == "txt2img":
            # The generators continue past the initial noise, for ancestral samplers' per-step noise.
            args["latents"], args["generator"] = self._initial_latents(seeds, req.height, req.width, req.ensd)
            if m.inpainting:  # nothing known: grey picture, everything masked
                args["image"] = [Image.new("RGB", (req.width, req.height), (127, 127, 127))] * n
                args["mask_image"] = [Image.new("L", (req.width, req.height), 255)] * n
                args["strength"] = 1.0
            return self._conditioned(args, req, seeds)
        assert prep.start is not None
        args["generator"] = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        args["image"] = [prep.start(s) for s in seeds]
        args["strength"] = prep.strength
        if req.mode == "depth2img":
            args["depth_map"] = run.depth
            args.pop("width"), args.pop("height")  # the depth pipeline takes its size from the picture
        if req.mode == "inpaint":
            args["mask_image"] = [prep.mask] * n
        elif m.inpainting:  # img2img on an inpainting model: repaint everything, starting from the picture
            args["mask_image"] = [Image.new("L", (req.width, req.height), 255)] * n
        return self._conditioned(args, req, seeds)

    def _conditioned(self, args: dict[str, Any], req: GenerationRequest, seeds: list[int]) -> dict[str, Any]:
        """The pipeline arguments with every applicable extra conditioning added."""
        for extra in self.conditioning:
            if extra.applies(req):
                args.update(extra.call_args(self, req, seeds))
        return args

    def _infotext(self, req: GenerationRequest, run: _Run, seed: int, watermarked: bool) -> str:
        sampler, m, loras = run.sampler, run.model, run.applied
        prompt = req.prompt
        # LoRAs given outside the prompt are written as tags, A1111's record of them.
        _, in_prompt = extract_lora_tags(prompt)
        named = {s.name for s in in_prompt}
        extra = [lora_tag(lora_display_name(spec.name), spec.scale) for spec in req.loras if spec.name not in named]
        if extra:
            prompt = f"{prompt} {' '.join(extra)}".strip()
        params: dict[str, Any] = {
            "Steps": req.steps,
            "Sampler": sampler.name,
            "Schedule type": sampler.infotext_schedule,
            "CFG scale": format_number(req.guidance),
            "Seed": seed,
            "Size": f"{req.width}x{req.height}",
            "Model hash": m.hash,
            "Model": m.name,
            "VAE": m.vae,
            "Lora hashes": ", ".join(f"{a.name}: {a.hash}" for a in loras) or None,
            "TI hashes": ti_hashes(run.embeddings()),
            **hypernet.infotext(run.hypernets),
            "Clip skip": req.clip_skip if req.clip_skip > 1 else None,  # A1111 writes it only when it skips
            "ENSD": (req.ensd or None) if req.mode == "txt2img" else None,
        }
        if req.prompt_2:  # lanskap's own key: SDXL's second prompt (diffusers' prompt_2)
            params["Prompt 2"] = req.prompt_2
        if req.init is not None:
            params["Denoising strength"] = format_number(req.init.strength)
            if req.mask is None:
                params["Resize mode"] = req.init.resize_mode
        if req.mask is not None:
            params["Mask blur"] = format_number(req.mask.blur)
            params["Masked content"] = req.mask.fill
            if req.mask.only_masked:
                params["Inpaint area"] = "Only masked"
                params["Masked area padding"] = req.mask.padding
            if req.mask.outpaint is not None:  # lanskap's own key: the margins, left right up down
                params["Outpaint"] = " ".join(map(str, req.mask.outpaint))
        if req.hires is not None:
            params.update(hires.infotext(req.hires, req, sampler))
        params.update(refiner.infotext(run.refiner))
        params.update(tiling_infotext(req.tiling))
        params.update(levers.infotext(req))
        if m.recommended is not None and req.model_defaults:
            params["Model defaults"] = m.recommended.kind  # steps, CFG or sampler came from a distilled model
        if req.panorama is not None:
            params.update(req.panorama.infotext(m.native_size, req.width or 0, req.height or 0))
        if req.regions is not None:
            params.update(req.regions.infotext())
        params.update(control_infotext(req.control))
        if req.depth is not None:  # lanskap's own key: whether the depth came from a picture or the model
            params["Depth map"] = "given" if req.depth.map is not None else "estimated"
        if watermarked:
            params["Watermark"] = MESSAGE.decode()
        for step in [*self.conditioning, *self.post_steps]:
            if step.applies(req):
                params.update(step.infotext(req))
        params["Version"] = f"lanskap {__version__}"
        return build_infotext(prompt, req.negative_prompt, params)
