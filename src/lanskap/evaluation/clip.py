"""CLIP for evaluation: CMMD image embeddings and CLIP score.

CMMD's preprocessing is written out rather than left to the CLIP processor, because
the metric is defined by google-research's code (io_util.py + embedding.py): a
centre square crop and a PIL bicubic resize to the model's 336 px input, a division
by 255, then CLIP's mean and standard deviation, with L2-normalised embeddings.
The CLIP score uses the model's own processor (shortest-edge resize, centre crop),
as torchmetrics does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lanskap.errors import LanskapError, ModelUnavailableError, SettingError
from lanskap.images import load_rgb

#: The CMMD paper's embedding model.
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14-336"

Progress = Callable[[int, int], None]


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square, resized to ``size`` with PIL's bicubic filter (CMMD's io_util)."""
    w, h = image.size
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    return image.resize((size, size), resample=Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


def _weights_hash(folder: Path | None) -> str:
    if folder is None or not folder.is_dir():
        return "unknown"
    from lanskap.models.hashing import sha256_file

    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        return "unknown"
    return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()[:10]


def _hub_folder(ref: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, local_files_only=True))
    except Exception:  # only used for the hash; absence is reported as "unknown"
        return None


class ClipEvaluator:
    """A CLIP model (text + vision towers) loaded from a hub id or a local folder."""

    def __init__(
        self, ref: str = DEFAULT_CLIP_MODEL, *, device: str = "cpu", allow_pickle: bool = False, batch_size: int = 32
    ) -> None:
        import torch
        from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

        self.ref, self.device, self.batch_size = ref, device, batch_size
        local = Path(ref).expanduser()
        source = str(local) if local.exists() else ref
        if local.exists() and not (local / "config.json").is_file():
            raise LanskapError(f"{local} is not a CLIP model folder (it has no config.json)")
        try:
            self.model = CLIPModel.from_pretrained(source, use_safetensors=None if allow_pickle else True)
            self.tokenizer = CLIPTokenizer.from_pretrained(source)
            self.processor = CLIPImageProcessorPil.from_pretrained(source)
        except OSError as exc:
            if local.exists():
                raise SettingError(
                    f"{local} holds no loadable CLIP model ({str(exc).splitlines()[0][:160]}); pickled weights "
                    "need pickle files allowed",
                    "clip_model",
                    "allow_pickle",
                ) from None
            if "safetensors" in str(exc).lower() and not allow_pickle:
                raise SettingError(
                    f"CLIP model {ref!r} has no .safetensors weights; allow pickle files to read its "
                    "pytorch_model.bin (as tensors only)",
                    "allow_pickle",
                ) from None
            raise ModelUnavailableError(
                f"CLIP model {ref!r} is not available offline: run `hf download {ref}` on a connected machine, "
                "or give a local folder as the CLIP model",
                "clip_model",
            ) from None
        self.model.to(device).eval()
        self.hash = _weights_hash(local if local.exists() else _hub_folder(ref))
        self.input_size = int(self.processor.crop_size["height"])
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)
        self._mean = np.asarray(self.processor.image_mean, np.float32)
        self._std = np.asarray(self.processor.image_std, np.float32)
        self._torch = torch

    # -- CMMD --------------------------------------------------------------------------------
    def cmmd_pixels(self, image: Image.Image) -> np.ndarray:
        """(3, S, S) float32: crop, bicubic resize, /255, CLIP mean/std (the reference's steps)."""
        arr = np.asarray(center_crop_resize(image.convert("RGB"), self.input_size), np.float32) / 255.0
        return ((arr - self._mean) / self._std).transpose(2, 0, 1)

    def _image_embeds(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            pv = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
            out = self.model.visual_projection(self.model.vision_model(pixel_values=pv).pooler_output)
        return out.float().cpu().numpy().astype(np.float64)

    def cmmd_embeddings(self, paths: Sequence[Path], progress: Progress | None = None) -> np.ndarray:
        """L2-normalised image embeddings of every file, in batches; no image is dropped."""
        chunks = []
        for start in range(0, len(paths), self.batch_size):
            batch = [self.cmmd_pixels(load_rgb(p)) for p in paths[start : start + self.batch_size]]
            emb = self._image_embeds(np.stack(batch))
            chunks.append(emb / np.linalg.norm(emb, axis=-1, keepdims=True))
            if progress:
                progress(min(start + self.batch_size, len(paths)), len(paths))
        return np.concatenate(chunks)

    # -- CLIP score --------------------------------------------------------------------------
    def truncated(self, prompt: str) -> bool:
        """Whether CLIP sees only the start of ``prompt`` (it reads at most 77 tokens)."""
        return len(self.tokenizer(prompt, verbose=False)["input_ids"]) > self.max_tokens

    def text_embeddings(self, prompts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        chunks = []
        for start in range(0, len(prompts), self.batch_size):
            tok = self.tokenizer(
                list(prompts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
                verbose=False,
            ).to(self.device)
            with torch.no_grad():
                pooled = self.model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
                chunks.append(self.model.text_projection(pooled.pooler_output).float().cpu().numpy())
        return np.concatenate(chunks).astype(np.float64)

    def score_image_embeddings(self, paths: Sequence[Path], progress: Progress | None = None) -> np.ndarray:
        """Image embeddings through the model's own processor, for the CLIP score."""
        chunks = []
        for start in range(0, len(paths), self.batch_size):
            images = [load_rgb(p) for p in paths[start : start + self.batch_size]]
            pixels = self.processor(images=images, return_tensors="np")["pixel_values"]
            chunks.append(self._image_embeds(np.asarray(pixels, np.float32)))
            if progress:
                progress(min(start + self.batch_size, len(paths)), len(paths))
        return np.concatenate(chunks)
