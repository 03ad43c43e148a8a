"""Training settings: defaults, presets, config files (TOML or YAML) and flags, in that order.

Names follow the diffusers ``train_text_to_image_lora.py`` example where one exists, so
that its users can carry their settings over. The effective config is written next to
the LoRA, so every result says how it was made.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from lanskap.errors import LanskapError, SettingError
from lanskap.fields import setting

#: The validation prompt of the thesis's training run (section 4.3).
THESIS_VALIDATION_PROMPT = "Create a mystical fantasy landscape at the edge of an enchanted forest."

LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
METHODS = ("lora", "textual-inversion", "dreambooth")
#: Settings that only mean something for LoRA adapters (refused with a full fine-tune).
LORA_ONLY = ("rank", "lora_alpha", "lora_dropout", "train_proj", "train_ff", "train_text_encoder", "text_encoder_lr")
OPTIMIZERS = ("auto", "adamw", "adamw8bit")
UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
UNET_PROJ = ("proj_in", "proj_out")
UNET_FF = ("ff.net.0.proj", "ff.net.2")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass
class TrainConfig:
    """Every setting of a training run. ``None`` means "work it out" (see the field comments)."""

    # what and where
    method: str = setting("lora", f"Training method: {', '.join(METHODS)}.")
    data: str = setting("", "Prepared dataset, imagefolder, or thesis CSV (image,captions).", show_default=False)
    out: str = setting("", "Where the LoRA, checkpoints and logs go.", aliases=("--output-dir",), show_default=False)
    model: str | None = setting(  # None: the configured base model (SD 2.1 by default)
        None, "Base model: hub id or path [the configured one].", aliases=("--pretrained-model-name-or-path",)
    )
    preset: str | None = setting(None, "default (about 50 images), thesis (the thesis's run) or lean (SDXL, 16-24 GB).")
    image_column: str = setting("image", "CSV column with image paths.")
    caption_column: str | None = setting(None, "Caption column [text, caption or captions].")
    # images
    resolution: int | None = setting(None, "Training size, a multiple of 8 [the model's native size].")
    center_crop: bool = setting(False, "Crop at the centre, not at random.", negative="--random-crop")
    random_flip: bool = setting(True, "Horizontal flips.")
    crop_scale: float = setting(1.0, "Below 1: random zoom-in crops down to this area fraction.")
    color_jitter: float = setting(0.0, "Colour jitter strength (0: off).")
    bucketing: bool = setting(True, "Aspect-ratio buckets, so wide concept art isn't cropped away.")
    bucket_step: int = setting(64, "Bucket side step in pixels.")
    max_token_length: int = setting(75, "Caption tokens: 75, 150 or 225 (longer ones in 75-token chunks).")
    # schedule
    train_batch_size: int = setting(1, "Images per batch per device.")
    gradient_accumulation_steps: int = setting(1, "Batches per optimizer step.")
    max_train_steps: int = setting(1500, "Optimizer steps.")
    learning_rate: float = setting(1e-4, "Learning rate.")
    text_encoder_lr: float | None = setting(None, "Text encoder learning rate [the learning rate].")
    lr_scheduler: str = setting("cosine", f"One of {', '.join(LR_SCHEDULERS)}.")
    lr_warmup_steps: int = setting(100, "Learning-rate warm-up steps.")
    lr_num_cycles: int = setting(1, "Restarts for cosine_with_restarts.")
    lr_power: float = setting(1.0, "Power of the polynomial schedule.")
    max_grad_norm: float = setting(1.0, "Gradient clipping; 0 turns it off.")
    optimizer: str = setting("auto", "auto (8-bit AdamW with bitsandbytes on CUDA), adamw or adamw8bit.")
    adam_beta1: float = setting(0.9, "AdamW beta1.")
    adam_beta2: float = setting(0.999, "AdamW beta2.")
    adam_weight_decay: float = setting(1e-2, "AdamW weight decay.")
    adam_epsilon: float = setting(1e-8, "AdamW epsilon.")
    # LoRA
    rank: int = setting(16, "LoRA rank.")
    lora_alpha: float | None = setting(None, "LoRA alpha [the rank: scale 1].")
    lora_dropout: float = setting(0.0, "LoRA dropout.")
    train_proj: bool = setting(False, "Also train proj_in/proj_out.")
    train_ff: bool = setting(False, "Also train the feed-forward layers.")
    train_text_encoder: bool = setting(False, "LoRA on the text encoder too.")
    # textual inversion
    token: str | None = setting(None, 'The new embedding\'s token, such as "<verdigris-style>".')
    init_word: str = setting("*", "Word(s) whose embeddings start the new vectors.")
    vectors: int = setting(1, "Vectors per token (more: a richer style, fewer prompt tokens left).")
    # DreamBooth
    instance_prompt: str | None = setting(None, 'The caption of every picture, such as "a photo of sks castle".')
    class_prompt: str | None = setting(None, 'The class without the subject, such as "a photo of a castle".')
    prior_preservation: bool = setting(False, "Also train on class pictures of the base model, so the class stays.")
    num_class_images: int = setting(100, "Class pictures for prior preservation (missing ones are generated).")
    prior_loss_weight: float = setting(1.0, "Weight of the class pictures' loss.")
    class_inference_steps: int = setting(25, "Sampling steps of the generated class pictures.")
    full: bool = setting(False, "DreamBooth: fine-tune the whole UNet instead of a LoRA.")
    # objective
    prediction_type: str | None = setting(None, "Override the model's: epsilon or v_prediction.")
    snr_gamma: float | None = setting(5.0, "Min-SNR-γ loss weighting; 0 turns it off.")
    noise_offset: float = setting(0.0, "Noise offset.")
    # efficiency
    mixed_precision: str = setting("auto", "auto, no, fp16 or bf16.")
    gradient_checkpointing: bool = setting(True, "Trade speed for memory.")
    cache_latents: bool = setting(False, "Encode the images once (needs center_crop, no colour jitter).")
    cache_text_embeddings: bool = setting(False, "Encode the captions once (not with train_text_encoder).")
    dataloader_num_workers: int = setting(0, "Image-decoding worker processes.")
    allow_tf32: bool = setting(True, "TF32 matmuls on Ampere and newer GPUs.")
    # checkpoints
    checkpointing_steps: int = setting(500, "Save the whole state every N steps (and render validation images).")
    checkpoints_total_limit: int | None = setting(3, "Keep at most this many checkpoints.")
    resume_from_checkpoint: str | None = setting(  # "latest" or a checkpoint folder
        None, "latest, or a checkpoint folder.", aliases=("--resume",)
    )
    # monitoring
    validation_prompt: list[str] = setting(
        help="Validation prompt; repeatable [the thesis's].", factory=lambda: [THESIS_VALIDATION_PROMPT]
    )
    validation_negative_prompt: str = setting("", "Negative prompt of the validation images.", show_default=False)
    num_validation_images: int = setting(2, "Seeds per validation prompt.")
    validation_seeds: list[int] | None = setting(None, "Validation seeds; repeatable [seed, seed + 1, …].")
    validation_inference_steps: int = setting(25, "Sampling steps of the validation images.")
    validation_guidance_scale: float = setting(7.5, "Guidance scale of the validation images.")
    validation_at_start: bool = setting(True, "Render the validation images of the base model at step 0.")
    validation_loss: bool = setting(True, "A fixed-noise loss on training images at each checkpoint: a smooth curve.")
    report_to: str = setting("tensorboard", "tensorboard or none.")
    seed: int = setting(42, "Seed of the whole run.")
    output_name: str = setting("lanskap-lora", "Name of the kohya/A1111 file [an embedding: its token's letters].")
    save_precision: str = setting("fp16", "Precision of the kohya/A1111 file: fp16, bf16 or fp32.")

    # -- derived -------------------------------------------------------------------------------
    def unet_targets(self) -> list[str]:
        targets = list(UNET_ATTENTION)
        if self.train_proj:
            targets += UNET_PROJ
        if self.train_ff:
            targets += UNET_FF
        return targets

    @property
    def alpha(self) -> float:
        return float(self.lora_alpha if self.lora_alpha is not None else self.rank)

    @property
    def seeds(self) -> list[int]:
        return self.validation_seeds or [self.seed + i for i in range(self.num_validation_images)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lora_settings(self) -> dict[str, Any]:
        """What a checkpoint's LoRA must match to be resumed."""
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "unet_targets": self.unet_targets(),
            "train_text_encoder": self.train_text_encoder,
        }

    def method_settings(self) -> dict[str, Any]:
        """What a checkpoint's trained parameters must match to be resumed, for this method."""
        if self.method == "textual-inversion":
            return {"method": self.method, "token": self.token, "vectors": self.vectors}
        keys = ("instance_prompt", "class_prompt", "prior_preservation", "num_class_images")
        prompts = {k: getattr(self, k) for k in keys}
        if self.method == "dreambooth" and self.full:
            return {"method": "dreambooth-full", **prompts}
        if self.method == "dreambooth":
            return {**self.lora_settings(), "method": self.method, **prompts}
        return self.lora_settings()

    def check(self) -> None:
        """Reject impossible settings before anything is loaded (named as settings, not flags)."""
        self._check_method()
        if not self.data:
            raise SettingError("no training data: give a prepared dataset, an imagefolder or a CSV", "data")
        if not self.out:
            raise SettingError("no output folder for the run", "out")
        if self.resolution is not None and (self.resolution <= 0 or self.resolution % 8):
            raise SettingError(f"resolution must be a positive multiple of 8, not {self.resolution}", "resolution")
        if self.bucket_step <= 0 or self.bucket_step % 8:
            raise SettingError(f"bucket_step must be a positive multiple of 8, not {self.bucket_step}", "bucket_step")
        if self.rank <= 0:
            raise SettingError(f"rank must be 1 or more, not {self.rank}", "rank")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise SettingError("lora_alpha must be positive", "lora_alpha")
        self._check_schedule()
        self._check_choices()
        if self.cache_latents and self.color_jitter > 0:
            raise SettingError(
                "cache_latents can't be used with color_jitter: every step sees new colours, "
                "so cached latents would be wrong; turn one of them off",
                "cache_latents",
                "color_jitter",
            )
        if self.cache_latents and not self.center_crop:
            raise SettingError(
                "cache_latents needs center_crop: a random crop differs every step, so cached latents "
                "would be wrong (flipped views are cached too, so random_flip is fine)",
                "cache_latents",
                "center_crop",
            )
        if self.cache_text_embeddings and self.train_text_encoder:
            raise SettingError(
                "cache_text_embeddings can't be used with train_text_encoder: the encoder changes",
                "cache_text_embeddings",
                "train_text_encoder",
            )

    def _check_method(self) -> None:
        if self.method not in METHODS:
            raise SettingError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}", "method")
        if self.method == "textual-inversion":
            if not self.token or not self.token.strip():
                raise SettingError("textual inversion needs the new embedding's token", "token")
            if not 1 <= self.vectors <= 75:
                raise SettingError(f"vectors must be 1 to 75, not {self.vectors}", "vectors")
            for name in ("cache_text_embeddings", "train_text_encoder"):
                if getattr(self, name):
                    raise SettingError(f"{name} can't be used with textual inversion: the embedding trains", name)
        if self.full and self.method != "dreambooth":
            raise SettingError("a full fine-tune is a DreamBooth option", "full", "method")
        if self.method != "dreambooth":
            return
        if not self.instance_prompt:
            raise SettingError("DreamBooth needs the instance prompt that names the subject", "instance_prompt")
        if self.prior_preservation and not self.class_prompt:
            raise SettingError("prior preservation needs a class prompt", "class_prompt", "prior_preservation")
        if self.num_class_images < 1 or self.prior_loss_weight <= 0:
            raise SettingError("num_class_images and prior_loss_weight must be positive", "num_class_images")

    def _check_schedule(self) -> None:
        positive = (
            "train_batch_size",
            "gradient_accumulation_steps",
            "max_train_steps",
            "checkpointing_steps",
            "lr_num_cycles",
            "validation_inference_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingError(f"{name} must be 1 or more, not {getattr(self, name)}", name)
        if self.learning_rate <= 0:
            raise SettingError("learning_rate must be positive", "learning_rate")
        for name in ("lr_warmup_steps", "dataloader_num_workers"):
            if getattr(self, name) < 0:
                raise SettingError(f"{name} can't be negative", name)
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise SettingError("checkpoints_total_limit must be 1 or more", "checkpoints_total_limit")

    def _check_choices(self) -> None:
        choices = {
            "lr_scheduler": LR_SCHEDULERS,
            "mixed_precision": MIXED_PRECISION,
            "optimizer": OPTIMIZERS,
            "max_token_length": (75, 150, 225),
            "save_precision": ("fp16", "bf16", "fp32"),
            "report_to": ("tensorboard", "none"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                shown = ", ".join(map(str, allowed))
                raise SettingError(f"{name} must be one of {shown}, not {getattr(self, name)!r}", name)
        if not 0 < self.crop_scale <= 1:
            raise SettingError("crop_scale must be in (0, 1]", "crop_scale")
        if not 0 <= self.color_jitter < 1:
            raise SettingError("color_jitter must be in [0, 1)", "color_jitter")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise SettingError("snr_gamma must be positive (0 or none turns min-SNR weighting off)", "snr_gamma")


#: Presets; a config file and flags override them.
PRESETS: dict[str, dict[str, Any]] = {
    # A LoRA for about 50 captioned images: 30 passes at batch 1, min-SNR weighting,
    # bucketing so wide concept art isn't cropped away.
    "default": {},
    # The thesis's run (section 4.3): the diffusers example with these flags. The example
    # passes no cycle count, so its cosine_with_restarts is one plain cosine; here three
    # real restarts, one per 100 steps after warm-up, aligned with the checkpoints.
    "thesis": {
        "resolution": 768,
        "random_flip": True,
        "center_crop": False,
        "bucketing": False,
        "train_batch_size": 1,
        "gradient_accumulation_steps": 4,
        "max_train_steps": 400,
        "learning_rate": 2e-5,
        "lr_scheduler": "cosine_with_restarts",
        "lr_num_cycles": 3,
        "lr_warmup_steps": 100,
        "max_grad_norm": 1.0,
        "rank": 16,
        "mixed_precision": "fp16",
        "checkpointing_steps": 100,
        "checkpoints_total_limit": None,
        "validation_prompt": [THESIS_VALIDATION_PROMPT],
        "seed": 42,
        "report_to": "tensorboard",
        "snr_gamma": None,
        "gradient_checkpointing": False,
        "dataloader_num_workers": 8,
    },
    # Memory-lean, for SDXL on 16-24 GB cards (as kohya's SDXL LoRA guidance and diffusers' SDXL example
    # run it): every activation recomputed, the VAE and text encoders run once before training and
    # leave the GPU, 8-bit AdamW where bitsandbytes and CUDA are (optimizer auto), mixed precision.
    "lean": {
        "gradient_checkpointing": True,
        "cache_latents": True,
        "center_crop": True,
        "cache_text_embeddings": True,
        "train_text_encoder": False,
        "optimizer": "auto",
        "train_batch_size": 1,
        "mixed_precision": "auto",
    },
}

_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _key(name: str) -> str:
    return name.strip().replace("-", "_")


def read_config_file(path: Path) -> dict[str, Any]:
    """A flat table of settings from TOML or YAML; keys may use - or _."""
    path = Path(path)
    if not path.is_file():
        raise LanskapError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise LanskapError(f"config file {path.name}: use .toml, .yaml or .json")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise LanskapError(f"cannot read config file {path}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # yaml.YAMLError
        raise LanskapError(f"cannot read config file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise LanskapError(f"config file {path} must hold a table of settings")
    data = {_key(k): v for k, v in data.items()}
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise LanskapError(f"unknown setting(s) in {path.name}: {', '.join(unknown)}")
    return data


def _coerce(name: str, value: Any) -> Any:
    if name == "validation_prompt" and isinstance(value, str):
        return [value]
    if name == "validation_seeds" and value is not None:
        return [int(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def build_config(
    preset: str | None = None, config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the preset, then the config file, then ``overrides`` (None values are ignored)."""
    file_values = read_config_file(config_file) if config_file else {}
    chosen = preset or file_values.get("preset") or "default"
    if chosen not in PRESETS:
        raise LanskapError(f"unknown preset {chosen!r}; choose {', '.join(PRESETS)}")
    values: dict[str, Any] = {**PRESETS[chosen], **file_values}
    given = {_key(k): v for k, v in (overrides or {}).items() if v is not None}
    values.update(given)
    lora_only = sorted(set(LORA_ONLY) & {*file_values, *given})
    if values.get("full") and lora_only:
        raise SettingError(f"{', '.join(lora_only)}: LoRA settings, not for a full fine-tune", "full", *lora_only)
    if values.get("snr_gamma") == 0:
        values["snr_gamma"] = None  # 0 turns min-SNR weighting off, as the help says
    values["preset"] = chosen
    if values.get("method") == "textual-inversion" and values.get("token") and "output_name" not in values:
        values["output_name"] = embedding_file_name(str(values["token"]))
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise LanskapError(f"unknown setting(s): {', '.join(unknown)}")
    try:
        return replace(TrainConfig(), **{k: _coerce(k, v) for k, v in values.items()})
    except TypeError as exc:
        raise LanskapError(f"bad setting: {exc}") from None


def embedding_file_name(token: str) -> str:
    """An embedding's file name from its token, as A1111 names one (letters, digits, ``._-``): the
    file's stem is the word a prompt uses, so ``<verdigris-style>`` becomes ``verdigris-style``."""
    name = "".join(c for c in token if c.isalnum() or c in "._- ").strip().replace(" ", "-").lstrip("._-")
    return name[:64] or "embedding"


def config_yaml(cfg: TrainConfig | dict[str, Any]) -> str:
    """The effective config as YAML that ``--config`` reads back."""
    import yaml

    data = cfg.to_dict() if isinstance(cfg, TrainConfig) else cfg
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
