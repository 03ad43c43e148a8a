"""The parameters of one generation job, validated in one place.

The CLI, the HTTP API and the web app all build a :class:`GenerationRequest`, so
the bounds and their messages are identical everywhere.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from PIL import Image

from lanskap.control.units import MAX_UNITS, ControlUnit
from lanskap.errors import LanskapError
from lanskap.generation.imageops import FILL_MODES, RESIZE_MODES
from lanskap.generation.panorama import MAX_PANORAMA_SIDE, Panorama
from lanskap.generation.regions import MAX_REGIONS, Layout
from lanskap.generation.schedulers import DEFAULT_SAMPLER, get_sampler
from lanskap.prompts.lora_tags import LoraSpec

#: What a generation can be, as the gallery files it (GenerationRequest.task).
#: upscale: jobs/upscale.py (Extras, SD upscale).
TASKS = ("txt2img", "img2img", "inpaint", "outpaint", "depth2img", "upscale")
MIN_SIDE, MAX_SIDE = 64, 2048
MIN_STEPS, MAX_STEPS = 1, 150
MAX_IMAGES = 1000
MAX_SEED = 2**32 - 1
MAX_CLIP_SKIP = 12  # A1111's slider


@dataclass(frozen=True)
class InitImage:
    """img2img: start from this picture; ``strength`` 0 keeps it, 1 ignores it."""

    image: Image.Image
    strength: float = 0.75
    resize_mode: str = "just-resize"


@dataclass(frozen=True)
class InpaintMask:
    """Inpainting: repaint where the mask is white, keep the rest."""

    mask: Image.Image
    blur: float = 4  # pixels of feathering at the mask edge
    fill: str = "original"  # what the masked area starts from: fill, original or noise
    only_masked: bool = False  # work on the mask's bounding box at full resolution
    padding: int = 32  # context around that box, in pixels
    #: Set by outpainting: the margins (left, right, up, down) this canvas added round the picture,
    #: so the job is filed and described as an outpaint although it runs as an inpaint.
    outpaint: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class DepthInput:
    """depth2img (an SD 2 depth model): keep the init picture's depth. ``map``: a depth picture
    (white near) to use instead of the model's own estimate."""

    map: Image.Image | None = None


#: The hires fix's bounds: A1111's slider for the scale, and the second pass's largest side.
MAX_HIRES_SCALE = 4.0
MAX_HIRES_SIDE = 4096


@dataclass(frozen=True)
class HiresFix:
    """A1111's hires fix: upscale the first pass, then repaint it at the larger size as img2img.

    ``resize_x``/``resize_y`` (either may be 0) replace ``scale`` when given, as A1111's
    ``hr_resize_x``/``hr_resize_y`` do. ``steps`` 0 means the first pass's steps; an empty
    ``sampler``, ``prompt`` or ``negative_prompt`` means the first pass's.
    """

    scale: float = 2.0
    upscaler: str = "Latent"
    steps: int = 0
    denoise: float = 0.7
    resize_x: int = 0
    resize_y: int = 0
    sampler: str = ""
    prompt: str = ""
    negative_prompt: str = ""

    def target(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(upscale-to width, height, then crop-to width, height), as A1111's ``calculate_target_resolution``.

        Every side is a multiple of 8, as the second pass's latents make it.
        """
        rx, ry = self.resize_x, self.resize_y
        if not rx and not ry:
            w, h = int(width * self.scale), int(height * self.scale)
            return w // 8 * 8, h // 8 * 8, w // 8 * 8, h // 8 * 8
        if not ry:
            w, h = rx, rx * height // width
        elif not rx:
            w, h = ry * width // height, ry
        elif width / height < rx / ry:  # cover the box, then crop the middle
            w, h = rx, rx * height // width
        else:
            w, h = ry * width // height, ry
        tw, th = (rx or w), (ry or h)
        return w // 8 * 8, h // 8 * 8, tw // 8 * 8, th // 8 * 8

    def validate(self, width: int | None, height: int | None) -> None:
        if not 1.0 <= self.scale <= MAX_HIRES_SCALE or self.scale != self.scale:
            raise LanskapError(f"hires scale must be between 1 and {MAX_HIRES_SCALE:g}, got {self.scale:g}")
        if not 0 <= self.steps <= MAX_STEPS:
            raise LanskapError(f"hires steps must be between 0 and {MAX_STEPS}, got {self.steps}")
        if not 0.0 <= self.denoise <= 1.0:
            raise LanskapError(f"hires denoising strength must be between 0 and 1, got {self.denoise:g}")
        for side, value in (("hires resize width", self.resize_x), ("hires resize height", self.resize_y)):
            if value and not MIN_SIDE <= value <= MAX_HIRES_SIDE:
                raise LanskapError(f"{side} must be 0 or between {MIN_SIDE} and {MAX_HIRES_SIDE}, got {value}")
        if self.sampler:
            get_sampler(self.sampler)
        if width is not None and height is not None:
            self.check_size(width, height)

    def check_size(self, width: int, height: int) -> None:
        """Refuse a second pass larger than the limit (known once the first pass's size is)."""
        w, h, _, _ = self.target(width, height)
        if max(w, h) > MAX_HIRES_SIDE:
            raise LanskapError(
                f"hires fix would make {w}x{h} from {width}x{height}; the largest side allowed is {MAX_HIRES_SIDE} "
                "(lower the hires scale or the size)"
            )
        if min(w, h) < MIN_SIDE:
            raise LanskapError(f"hires fix would make {w}x{h}; each side must be at least {MIN_SIDE}")


#: What a distilled model may set when a request leaves it unset (models/distilled.FIELDS).
MODEL_DEFAULT_FIELDS = ("steps", "guidance", "scheduler")


def left_unset(fields: dict[str, Any]) -> tuple[str, ...]:
    """The model-default fields that ``fields`` (request keyword arguments, None = unset) leave open."""
    return tuple(f for f in MODEL_DEFAULT_FIELDS if fields.get(f) is None)


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that determines the pixels (with the model, device and dtype)."""

    prompt: str
    negative_prompt: str = ""
    prompt_2: str = ""  # SDXL: the second text encoder's prompt (diffusers' prompt_2); empty = the prompt
    seed: int | None = None
    steps: int = 25
    guidance: float = 7.5
    width: int | None = None  # None: the model's native size (768 for SD 2.1 768-v)
    height: int | None = None
    num_images: int = 1
    batch_size: int = 1
    scheduler: str = DEFAULT_SAMPLER
    loras: tuple[LoraSpec, ...] = field(default_factory=tuple)
    init: InitImage | None = None
    mask: InpaintMask | None = None
    watermark: bool = True
    clip_skip: int = 1  # A1111's "Clip skip": 1 uses the text encoder's last layer, 2 the one before, ...
    ensd: int = 0  # A1111's eta noise seed delta: sampler noise after the first draw comes from seed + ensd
    hires: HiresFix | None = None  # text-to-image only: a second pass at a larger size
    refiner: str = ""  # SDXL: the refiner model that takes over the last steps (A1111's refiner_checkpoint)
    refiner_switch_at: float = 0.8  # the share of the denoising done by the base before the refiner takes over
    tiling: str = ""  # seamless tiling along x, y or xy (A1111's tiling is xy)
    panorama: Panorama | None = None  # denoise the canvas in windows (MultiDiffusion), any size
    regions: Layout | None = None  # prompts by region, over the base prompt
    control: tuple[ControlUnit, ...] = ()  # ControlNet units (lanskap.control)
    depth: DepthInput | None = None  # depth2img: repaint the init picture keeping its depth
    # Speed levers that change the step's arithmetic (generation/levers.py); None: the speed level's choice.
    cache_interval: int | None = None  # deep UNet blocks run every N steps (DeepCache); 0 = every step
    cache_start: float | None = None  # the share of the steps run in full before caching starts
    token_merging: float | None = None  # share of self-attention tokens merged (ToMe); 0 = none
    token_merging_downsample: int = 1  # deepest level merged: 1 = the highest resolution only (A1111's default)
    #: Fields the person left unset (of steps, guidance, scheduler): a distilled model's own values
    #: replace them (models/distilled.py); other models keep the defaults above.
    model_defaults: tuple[str, ...] = ()

    @property
    def wrap(self) -> str:
        """The axes the picture wraps around: the tiling's, and x for a 360° panorama."""
        axes = set(self.tiling) | ({"x"} if self.panorama is not None and self.panorama.equirectangular else set())
        return "".join(a for a in "xy" if a in axes)

    @property
    def mode(self) -> str:
        """txt2img, img2img or inpaint: which pipeline the engine runs."""
        if self.mask is not None:
            return "inpaint"
        if self.depth is not None:
            return "depth2img"
        return "img2img" if self.init is not None else "txt2img"

    @property
    def task(self) -> str:
        """What the person asked for: :attr:`mode`, except that an outpaint says so (it runs as inpaint)."""
        if self.mask is not None and self.mask.outpaint is not None:
            return "outpaint"
        return self.mode

    def validate(self, max_regions: int = MAX_REGIONS) -> GenerationRequest:
        """Raise a LanskapError naming the first bad parameter; return self."""
        for name, text in (("prompt", self.prompt), ("negative prompt", self.negative_prompt),
                           ("second prompt", self.prompt_2)):  # fmt: skip
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise LanskapError(f"the {name} holds something that is not text (a lone surrogate)") from None
        top = MAX_SIDE if self.panorama is None else MAX_PANORAMA_SIDE
        for side, value in (("width", self.width), ("height", self.height)):
            if value is None:
                continue
            if not MIN_SIDE <= value <= top:
                raise LanskapError(f"{side} must be between {MIN_SIDE} and {top}, got {value}")
            if value % 8:
                raise LanskapError(f"{side} must be a multiple of 8, got {value} (try {value // 8 * 8 or 8})")
        if not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise LanskapError(f"steps must be between {MIN_STEPS} and {MAX_STEPS}, got {self.steps}")
        if self.guidance < 0 or self.guidance != self.guidance:
            raise LanskapError(f"guidance must be 0 or more, got {self.guidance}")
        if not 1 <= self.num_images <= MAX_IMAGES:
            raise LanskapError(f"num-images must be between 1 and {MAX_IMAGES}, got {self.num_images}")
        if not 1 <= self.batch_size <= 64:
            raise LanskapError(f"batch-size must be between 1 and 64, got {self.batch_size}")
        if self.seed is not None and self.seed != -1 and not 0 <= self.seed <= MAX_SEED:
            raise LanskapError(f"seed must be between 0 and {MAX_SEED} (or -1 for random), got {self.seed}")
        get_sampler(self.scheduler)
        if not 1 <= self.clip_skip <= MAX_CLIP_SKIP:
            raise LanskapError(f"clip skip must be between 1 and {MAX_CLIP_SKIP}, got {self.clip_skip}")
        if not 0 <= self.ensd <= MAX_SEED:
            raise LanskapError(f"eta noise seed delta must be between 0 and {MAX_SEED}, got {self.ensd}")
        for lora in self.loras:
            if lora.scale != lora.scale or abs(lora.scale) > 10:
                raise LanskapError(f"LoRA scale for {lora.name!r} must be between -10 and 10")
        if self.init is not None:
            self._validate_init(self.init)
        if self.mask is not None:
            self._validate_mask(self.mask)
        if self.tiling:
            from lanskap.generation.tiling import check

            check(self.tiling)
        self._validate_composition(max_regions)
        self._validate_control()
        self._validate_levers()
        if self.refiner:
            self._validate_refiner()
        if self.hires is not None:
            if self.init is not None:
                raise LanskapError("hires fix is for text-to-image; for a picture, upscale it (SD upscale) instead")
            self.hires.validate(self.width, self.height)
        return self

    def _validate_composition(self, max_regions: int) -> None:
        if self.panorama is not None:
            self.panorama.validate(self.width, self.height)
        if self.regions is not None:
            self.regions.validate(max_regions)

    def _validate_control(self) -> None:
        if len(self.control) > MAX_UNITS:
            raise LanskapError(f"at most {MAX_UNITS} ControlNet units, got {len(self.control)}")
        for i, unit in enumerate(self.control):
            unit.validate(self.width, self.height, i)
        if self.control and self.panorama is not None:
            raise LanskapError("ControlNet units can't steer a panorama yet; use them on a single frame")
        if self.depth is not None:
            if self.init is None:
                raise LanskapError("depth2img repaints a picture: give the picture whose depth to keep")
            if self.mask is not None:
                raise LanskapError("depth2img repaints the whole picture; it takes no mask")
            if self.depth.map is not None and not isinstance(self.depth.map, Image.Image):
                raise LanskapError("the depth map must be a picture")

    def _validate_levers(self) -> None:
        from lanskap.generation.levers import check

        check(self)
        unknown = set(self.model_defaults) - set(MODEL_DEFAULT_FIELDS)
        if unknown:
            raise LanskapError(f"only {', '.join(MODEL_DEFAULT_FIELDS)} can come from the model, not {sorted(unknown)}")

    def _validate_refiner(self) -> None:
        if not 0.01 <= self.refiner_switch_at <= 1.0:  # A1111's slider
            raise LanskapError(f"refiner switch must be between 0.01 and 1, got {self.refiner_switch_at:g}")
        if self.hires is not None:
            raise LanskapError("the refiner and the hires fix can't be combined yet; use one of them")

    def _validate_init(self, init: InitImage) -> None:
        if not 0.0 <= init.strength <= 1.0:
            raise LanskapError(f"strength must be between 0.0 and 1.0, got {init.strength:g}")
        if init.resize_mode not in RESIZE_MODES:
            raise LanskapError(f"unknown resize mode {init.resize_mode!r}; use one of {', '.join(RESIZE_MODES)}")
        if not isinstance(init.image, Image.Image):
            raise LanskapError("the init image must be a picture")

    def _validate_mask(self, mask: InpaintMask) -> None:
        if self.init is None:
            raise LanskapError("a mask needs an image to inpaint")
        if mask.mask.size != self.init.image.size:
            w, h = self.init.image.size
            mw, mh = mask.mask.size
            raise LanskapError(f"mask is {mw}x{mh} but the image is {w}x{h}; they must be the same size")
        if mask.fill not in FILL_MODES:
            raise LanskapError(f"unknown masked content {mask.fill!r}; use one of {', '.join(FILL_MODES)}")
        if not 0 <= mask.blur <= 64:
            raise LanskapError(f"mask blur must be between 0 and 64 pixels, got {mask.blur:g}")
        if not 0 <= mask.padding <= 512:
            raise LanskapError(f"padding must be between 0 and 512 pixels, got {mask.padding}")
        if mask.mask.convert("L").getbbox() is None:
            raise LanskapError("the mask is empty (all black): nothing to repaint")

    def with_seed(self) -> GenerationRequest:
        """A copy with a concrete seed: random when none (or -1) was given."""
        if self.seed is None or self.seed == -1:
            return replace(self, seed=secrets.randbelow(MAX_SEED - MAX_IMAGES))
        return self

    @property
    def seeds(self) -> list[int]:
        """A1111's rule: image i of a job uses seed + i, so each can be remade alone."""
        if self.seed is None or self.seed == -1:
            raise ValueError("seed not fixed; call with_seed() first")
        return [self.seed + i for i in range(self.num_images)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly parameters; pictures are described by their size, not copied."""
        skip = ("init", "mask", "loras", "hires", "panorama", "regions", "control", "depth")
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        d["hires"] = asdict(self.hires) if self.hires is not None else None
        d["panorama"] = asdict(self.panorama) if self.panorama is not None else None
        d["regions"] = self.regions.to_list() if self.regions is not None else None
        if self.regions is not None:
            d["region_base"] = self.regions.base
        d["loras"] = [str(lora) for lora in self.loras]
        d["model_defaults"] = list(self.model_defaults)
        d["mode"] = self.task
        if self.init is not None:
            d["init"] = {**_plain(self.init, "image"), "image_size": list(self.init.image.size)}
        if self.mask is not None:
            d["mask"] = _plain(self.mask, "mask")
        d["control"] = [{**_plain(u, "image"), "image_size": list(u.image.size) if u.image else None}
                        for u in self.control]  # fmt: skip
        if self.depth is not None:
            d["depth"] = {"map": self.depth.map is not None}
        return d


def _plain(obj: Any, skip: str) -> dict[str, Any]:
    return {k: v for k, v in asdict(replace(obj, **{skip: None})).items() if k != skip}
