"""Depth maps from a picture: transformers' DPT (MiDaS) and Depth Anything, without torchvision.

The ControlNet extension's ``depth_midas`` is MiDaS v3 DPT-Hybrid, which transformers ships as
``Intel/dpt-hybrid-midas`` (the same estimator SD 2's depth model carries in its
``depth_estimator`` folder); ``depth_anything`` is Depth Anything. Both load as transformers
folders through ``AutoModelForDepthEstimation`` with the PIL image processor (the default
processors want torchvision, which has no CPU build here), safetensors only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lanskap.config import Settings
from lanskap.errors import LanskapError, ModelUnavailableError
from lanskap.models.device import Placement
from lanskap.models.kept import KeptModels

#: Each depth preprocessor's weights: a hub id, used when ``$LANSKAP_HOME/annotators/<name>`` is absent.
SOURCES = {"depth_midas": "Intel/dpt-hybrid-midas", "depth_anything": "LiheYoung/depth-anything-small-hf"}


class DepthEstimator:
    """A loaded depth network with its image processor."""

    def __init__(self, model: torch.nn.Module, processor: object, placement: Placement) -> None:
        self.model = model
        self.processor = processor
        self.placement = placement

    @torch.no_grad()
    def predict(self, image: Image.Image) -> torch.Tensor:
        """Relative inverse depth (near is high), (1, h, w) at the network's resolution."""
        pixels = self.processor(images=[image.convert("RGB")], return_tensors="pt").pixel_values  # type: ignore[operator]
        pixels = pixels.to(self.placement.device, next(self.model.parameters()).dtype)
        return self.model(pixel_values=pixels).predicted_depth.float().cpu()

    def depth_image(self, image: Image.Image) -> Image.Image:
        """The depth map at the picture's size as a grey image, white near (the ControlNet convention)."""
        depth = self.predict(image)
        return to_image(depth, image.size)


def to_image(depth: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """A (1, h, w) depth tensor as an 8-bit grey picture of ``size``, stretched to the full range."""
    d = torch.nn.functional.interpolate(depth[None].float(), size=(size[1], size[0]), mode="bicubic")[0, 0]
    lo, hi = float(d.min()), float(d.max())
    scaled = (d - lo) / (hi - lo) if hi > lo else torch.zeros_like(d)
    return Image.fromarray((scaled.clamp(0, 1).numpy() * 255).round().astype(np.uint8), "L")


def load_estimator(
    source: Path | str, settings: Settings, placement: Placement, *, what: str, processor: Path | None = None
) -> DepthEstimator:
    """Load a transformers depth network from a folder (or the hub cache), safetensors only.

    ``processor``: where its image processor is, when not beside it (a depth model's ``feature_extractor``).
    """
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from lanskap.models.safety import check_allowed

    path = Path(source)
    if path.is_dir():
        pickled = [p for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        if pickled and not any(p.suffix == ".safetensors" for p in path.iterdir()):
            check_allowed(pickled[0], settings.allow_pickle)
    try:
        model = AutoModelForDepthEstimation.from_pretrained(
            str(source), use_safetensors=None if settings.allow_pickle else True, local_files_only=True
        )
        image_processor = AutoImageProcessor.from_pretrained(
            str(processor or source), backend="pil", local_files_only=True
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        if path.is_dir():
            raise LanskapError(f"cannot load the {what} from {path}: {first}") from None
        raise ModelUnavailableError(f"the {what} is not here ({source})", "depth_model") from None
    model.to(placement.device).eval()
    return DepthEstimator(model, image_processor, placement)


class Estimators:
    """Depth networks loaded on one device, the last two kept (preprocessors and depth2img share them)."""

    def __init__(self, settings: Settings, placement: Placement) -> None:
        self.settings = settings
        self.placement = placement
        self._loaded: KeptModels[DepthEstimator] = KeptModels(2)

    def own(self, model_dir: Path, processor_dir: Path) -> DepthEstimator:
        """A depth model's own estimator (its ``depth_estimator`` and ``feature_extractor`` folders)."""
        return self._loaded.get(str(model_dir), lambda: load_estimator(
            model_dir, self.settings, self.placement, what="depth estimator", processor=processor_dir
        ))  # fmt: skip

    def get(self, module: str) -> DepthEstimator:
        """The estimator of a depth preprocessor, from ``annotators/<module>`` or its hub id."""
        folder = self.settings.home / "annotators" / module
        source: Path | str = folder if folder.is_dir() else SOURCES[module]

        def load() -> DepthEstimator:
            try:
                return load_estimator(source, self.settings, self.placement, what=f"{module} model")
            except ModelUnavailableError:
                raise ModelUnavailableError(
                    f"the {module} preprocessor needs its weights: put the transformers folder of "
                    f"{SOURCES[module]} (config.json, model.safetensors, preprocessor_config.json) in {folder}",
                    "module",
                ) from None

        return self._loaded.get(str(source), load)
