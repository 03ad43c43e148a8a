"""LoRA fine-tuning: settings, data sources, the loop, checkpoints and exports.

The loop is imported lazily so that ``lanskap --help`` and the config helpers don't load torch.
"""

from typing import Any

from lanskap.training.config import PRESETS, TrainConfig, build_config

__all__ = ["PRESETS", "TrainConfig", "TrainEvent", "TrainResult", "build_config", "train"]


def __getattr__(name: str) -> Any:
    if name in ("TrainEvent", "TrainResult", "train"):
        from lanskap.training import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
