"""A training run's folder on disk: the one place that names its files.

The trainer writes these, and the Service and the web app read them, so every
reader asks this module instead of spelling ``validation/step-*`` or
``loss.png`` again (as ``data/layout.py`` does for prepared datasets).

    <out>/train_config.yaml          the settings the run used (what a resume restores)
    <out>/metrics.jsonl              one line per optimizer step, plus the fixed-noise loss
    <out>/checkpoint-<step>/         whole-state checkpoints (``training/checkpoint.py``)
    <out>/validation/step-<step>/    validation renders, ``p<prompt>-s<seed>.png``
    <out>/loss.png                   the loss curve
    <out>/validation_grid.png        validation renders by step
    <out>/pytorch_lora_weights.safetensors   the diffusers LoRA (a finished run)
    <out>/<output_name>.safetensors  the kohya/A1111 LoRA
    <out>/logs/                      TensorBoard
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "metrics.jsonl"
LOSS_PNG = "loss.png"
GRID_PNG = "validation_grid.png"
VALIDATION_DIR = "validation"
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
LOGS_DIR = "logs"


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def loss_curve(self) -> Path:
        return self.root / LOSS_PNG

    @property
    def grid(self) -> Path:
        return self.root / GRID_PNG

    @property
    def validation(self) -> Path:
        return self.root / VALIDATION_DIR

    @property
    def lora(self) -> Path:
        """The diffusers LoRA; it exists once the run has finished."""
        return self.root / DIFFUSERS_FILE

    @property
    def logs(self) -> Path:
        return self.root / LOGS_DIR

    def kohya(self, output_name: str) -> Path:
        return self.root / f"{output_name}.safetensors"

    def validation_step(self, step: int) -> Path:
        return self.validation / f"step-{step}"

    def validation_steps(self) -> list[tuple[int, Path]]:
        """Validation folders by step, oldest first (step 0 is the base model)."""
        if not self.validation.is_dir():
            return []
        found = []
        for p in self.validation.iterdir():
            number = p.name.removeprefix("step-")
            if p.name.startswith("step-") and number.isdigit() and p.is_dir() and not p.is_symlink():
                found.append((int(number), p))
        return sorted(found)

    @property
    def finished(self) -> bool:
        return self.lora.is_file()
