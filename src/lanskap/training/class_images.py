"""DreamBooth's class pictures: made by the base model through the engine, cached by their settings.

Prior preservation trains on pictures of the class ("a photo of a castle") as the base model draws
them, so fine-tuning on one castle doesn't turn every castle into it. They are made before
anything trains, with seeds 0, 1, …, and kept under ``$LANSKAP_HOME/cache/class-images/<key>``,
where the key hashes everything that sets their pixels (the model, the prompt, the size, the steps
and guidance): a second run with the same settings generates nothing, and more pictures only
add the missing seeds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from lanskap.io import atomic_write
from lanskap.training.events import TrainEvent

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.models.loader import LoadedModel
    from lanskap.training.config import TrainConfig
    from lanskap.training.context import Session

GUIDANCE = 7.5


def class_folder(settings: Settings, model: LoadedModel, cfg: TrainConfig) -> Path:
    identity = {
        "model": model.hash,
        "prompt": cfg.class_prompt,
        "size": cfg.resolution,
        "steps": cfg.class_inference_steps,
        "guidance": GUIDANCE,
        "dtype": model.placement.dtype_name,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return settings.cache_dir / "class-images" / key


def ensure_class_images(session: Session, settings: Settings, model: LoadedModel, cfg: TrainConfig) -> list[Path]:
    """The class pictures for prior preservation, generating the missing ones with the base model."""
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest

    folder = class_folder(settings, model, cfg)
    paths = [folder / f"{seed:05d}.png" for seed in range(cfg.num_class_images)]
    missing = [p for p in paths if not p.is_file()]
    if missing and session.main:
        session.say(f"making {len(missing)} class picture(s) of {cfg.class_prompt!r} with the base model ({folder})")
        engine = Engine.from_loaded(model, settings)
        size = int(cfg.resolution)  # type: ignore[arg-type]
        scheduler = model.pipe.scheduler  # the sampler is set per job; training's noise schedule is built from this
        try:
            for n, path in enumerate(missing):
                req = GenerationRequest(str(cfg.class_prompt), seed=int(path.stem), steps=cfg.class_inference_steps,
                                        guidance=GUIDANCE, width=size, height=size, watermark=False)  # fmt: skip
                image = engine.generate(req).images[0]
                atomic_write(path, lambda fh, im=image: im.save(fh, format="PNG"))
                session.emit(TrainEvent("cache", step=n + 1, total=len(missing), message="making class pictures"))
        finally:
            model.pipe.scheduler = scheduler
    session.accelerator.wait_for_everyone()
    return paths
