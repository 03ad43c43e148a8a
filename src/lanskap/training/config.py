"""Training settings: defaults, presets, config files (TOML or YAML) and flags, in that order.

Names follow the diffusers ``train_text_to_image_lora.py`` example where one exists, so
that its users can carry their settings over. The effective config is written next to
the LoRA, so every result says how it was made.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lanskap.errors import LanskapError

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
OPTIMIZERS = ("auto", "adamw", "adamw8bit")
UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
UNET_PROJ = ("proj_in", "proj_out")
UNET_FF = ("ff.net.0.proj", "ff.net.2")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass
class TrainConfig:
    """Every setting of a training run. ``None`` means "work it out" (see the field comments)."""

    # what and where
    data: str = ""
    out: str = ""
    model: str | None = None  # None: the configured base model (SD 2.1 by default)
    preset: str | None = None
    image_column: str = "image"
    caption_column: str | None = None  # None: text, caption or captions
    # images
    resolution: int | None = None  # None: the base model's native size (768 for SD 2.1)
    center_crop: bool = False
    random_flip: bool = True
    crop_scale: float = 1.0  # below 1: random zoom-in crops of that area fraction at least
    color_jitter: float = 0.0
    bucketing: bool = True
    bucket_step: int = 64
    max_token_length: int = 75  # 75, 150 or 225: longer captions are encoded in 75-token chunks
    # schedule
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 1500
    learning_rate: float = 1e-4
    text_encoder_lr: float | None = None  # None: learning_rate
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 100
    lr_num_cycles: int = 1
    lr_power: float = 1.0
    max_grad_norm: float = 1.0
    optimizer: str = "auto"  # auto: 8-bit AdamW when bitsandbytes and CUDA are present
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    # LoRA
    rank: int = 16
    lora_alpha: float | None = None  # None: rank (scale 1)
    lora_dropout: float = 0.0
    train_proj: bool = False
    train_ff: bool = False
    train_text_encoder: bool = False
    # objective
    prediction_type: str | None = None  # None: the scheduler config's (v_prediction for SD 2.1 768)
    snr_gamma: float | None = 5.0
    noise_offset: float = 0.0
    # efficiency
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = True
    cache_latents: bool = False
    cache_text_embeddings: bool = False
    dataloader_num_workers: int = 0
    allow_tf32: bool = True
    # checkpoints
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint folder
    # monitoring
    validation_prompt: list[str] = field(default_factory=lambda: [THESIS_VALIDATION_PROMPT])
    validation_negative_prompt: str = ""
    num_validation_images: int = 2
    validation_seeds: list[int] | None = None  # None: seed, seed + 1, ...
    validation_inference_steps: int = 25
    validation_guidance_scale: float = 7.5
    validation_at_start: bool = True
    validation_loss: bool = True  # a fixed-noise loss on training images at each checkpoint: a smooth curve
    report_to: str = "tensorboard"
    seed: int = 42
    output_name: str = "lanskap-lora"
    save_precision: str = "fp16"  # of the kohya/A1111 file (A1111 LoRAs are usually fp16)

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

    def check(self) -> None:
        """Reject impossible settings before anything is loaded."""
        if not self.data:
            raise LanskapError("no training data: pass --data with a prepared dataset, an imagefolder or a CSV")
        if not self.out:
            raise LanskapError("no output folder: pass --out")
        if self.resolution is not None and (self.resolution <= 0 or self.resolution % 8):
            raise LanskapError(f"--resolution must be a positive multiple of 8, not {self.resolution}")
        if self.bucket_step <= 0 or self.bucket_step % 8:
            raise LanskapError(f"--bucket-step must be a positive multiple of 8, not {self.bucket_step}")
        if self.rank <= 0:
            raise LanskapError(f"--rank must be 1 or more, not {self.rank}")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise LanskapError("--lora-alpha must be positive")
        positive = {
            "train_batch_size": self.train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "max_train_steps": self.max_train_steps,
            "checkpointing_steps": self.checkpointing_steps,
            "lr_num_cycles": self.lr_num_cycles,
            "validation_inference_steps": self.validation_inference_steps,
        }
        for name, value in positive.items():
            if value < 1:
                raise LanskapError(f"--{name.replace('_', '-')} must be 1 or more, not {value}")
        if self.learning_rate <= 0:
            raise LanskapError("--learning-rate must be positive")
        if self.lr_warmup_steps < 0 or self.dataloader_num_workers < 0:
            raise LanskapError("--lr-warmup-steps and --dataloader-num-workers can't be negative")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise LanskapError(f"unknown --lr-scheduler {self.lr_scheduler!r}; choose {', '.join(LR_SCHEDULERS)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise LanskapError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}")
        if self.optimizer not in OPTIMIZERS:
            raise LanskapError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.max_token_length not in (75, 150, 225):
            raise LanskapError("--max-token-length must be 75, 150 or 225")
        if not 0 < self.crop_scale <= 1:
            raise LanskapError("--crop-scale must be in (0, 1]")
        if not 0 <= self.color_jitter < 1:
            raise LanskapError("--color-jitter must be in [0, 1)")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise LanskapError("--snr-gamma must be positive (leave it out to turn min-SNR weighting off)")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise LanskapError("--checkpoints-total-limit must be 1 or more")
        if self.save_precision not in ("fp16", "bf16", "fp32"):
            raise LanskapError("--save-precision must be fp16, bf16 or fp32")
        if self.report_to not in ("tensorboard", "none"):
            raise LanskapError("--report-to must be tensorboard or none")
        if self.cache_latents:
            if self.color_jitter > 0:
                raise LanskapError(
                    "--cache-latents can't be used with --color-jitter: every step sees new colours, "
                    "so cached latents would be wrong; turn one of them off"
                )
            if not self.center_crop:
                raise LanskapError(
                    "--cache-latents needs --center-crop: a random crop differs every step, so cached latents "
                    "would be wrong (flipped views are cached too, so --random-flip is fine)"
                )
        if self.cache_text_embeddings and self.train_text_encoder:
            raise LanskapError("--cache-text-embeddings can't be used with --train-text-encoder: the encoder changes")


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
    values.update({_key(k): v for k, v in (overrides or {}).items() if v is not None})
    values["preset"] = chosen
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise LanskapError(f"unknown setting(s): {', '.join(unknown)}")
    try:
        return replace(TrainConfig(), **{k: _coerce(k, v) for k, v in values.items()})
    except TypeError as exc:
        raise LanskapError(f"bad setting: {exc}") from None


def config_yaml(cfg: TrainConfig | dict[str, Any]) -> str:
    """The effective config as YAML that ``--config`` reads back."""
    import yaml

    data = cfg.to_dict() if isinstance(cfg, TrainConfig) else cfg
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
