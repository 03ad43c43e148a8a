"""The parameters of one generation job, validated in one place.

The CLI, the HTTP API and the web app all build a :class:`GenerationRequest`, so
the bounds and their messages are identical everywhere.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lanskap.errors import LanskapError
from lanskap.generation.schedulers import DEFAULT_SAMPLER, get_sampler

MIN_SIDE, MAX_SIDE = 64, 2048
MIN_STEPS, MAX_STEPS = 1, 150
MAX_IMAGES = 1000
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA by name (in the LoRA folders) or path, with its scale."""

    name: str
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """``NAME``, ``NAME:0.7`` or ``C:\\path\\x.safetensors:0.7``."""
        text = text.strip()
        head, sep, tail = text.rpartition(":")
        if sep and head:
            try:
                return cls(head, float(tail))
            except ValueError:
                pass
        if not text:
            raise LanskapError("empty --lora value; use NAME or NAME:SCALE")
        return cls(text, 1.0)

    def __str__(self) -> str:
        return f"{self.name}:{self.scale:g}"


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that determines the pixels (with the model, device and dtype)."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = 25
    guidance: float = 7.5
    width: int | None = None  # None: the model's native size (768 for SD 2.1 768-v)
    height: int | None = None
    num_images: int = 1
    batch_size: int = 1
    scheduler: str = DEFAULT_SAMPLER
    loras: tuple[LoraSpec, ...] = field(default_factory=tuple)

    def validate(self) -> GenerationRequest:
        """Raise a LanskapError naming the first bad parameter; return self."""
        for side, value in (("width", self.width), ("height", self.height)):
            if value is None:
                continue
            if not MIN_SIDE <= value <= MAX_SIDE:
                raise LanskapError(f"{side} must be between {MIN_SIDE} and {MAX_SIDE}, got {value}")
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
        for lora in self.loras:
            if lora.scale != lora.scale or abs(lora.scale) > 10:
                raise LanskapError(f"LoRA scale for {lora.name!r} must be between -10 and 10")
        return self

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
        d = asdict(self)
        d["loras"] = [str(lora) for lora in self.loras]
        return d
