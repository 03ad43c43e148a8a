"""Turn the epoch plan into tensors: augmented pixels (or cached latents) and caption token ids.

A micro-batch is addressed by its global index ``g``: epoch ``g // B``, batch ``g % B``.
Process ``p`` of ``n`` takes ``g = k·n + p`` for its k-th micro-batch, so the data
order needs no state beyond the step, and the augmentation of every picture is seeded
by (seed, epoch, g, picture). That is what makes ``--resume`` exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lanskap.data.augment import Augment, augment
from lanskap.images import load_rgb
from lanskap.training.buckets import Plan
from lanskap.training.sources import Record

if TYPE_CHECKING:
    from PIL import Image
    from transformers import CLIPTokenizer

    from lanskap.prompts.embeddings import Embedding, Fixes


@dataclass
class Stream:
    plan: Plan
    batch_size: int
    seed: int
    process_index: int = 0
    num_processes: int = 1

    def __post_init__(self) -> None:
        self.batches_per_epoch = len(self.plan.epoch(0, self.batch_size, self.seed))
        self._cache: tuple[int, list[list[int]]] | None = None

    def locate(self, k: int) -> tuple[int, int, list[int]]:
        """(epoch, global index, record indices) of this process's k-th micro-batch."""
        g = k * self.num_processes + self.process_index
        epoch = g // self.batches_per_epoch
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self.plan.epoch(epoch, self.batch_size, self.seed))
        return epoch, g, self._cache[1][g % self.batches_per_epoch]


def sample_rng(seed: int, epoch: int, g: int, index: int) -> random.Random:
    return random.Random(f"lanskap-aug:{seed}:{epoch}:{g}:{index}")


def to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL RGB → (3, H, W) float in [-1, 1], as the VAE expects."""
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_view(record: Record, aug: Augment, size: tuple[int, int], rng: random.Random) -> tuple[torch.Tensor, bool]:
    view, flipped = augment(load_rgb(record.path), aug, rng, size=size)
    return to_tensor(view), flipped


def flip_decision(aug: Augment, rng: random.Random) -> bool:
    """The flip ``augment`` would draw for a centre-cropped, unjittered view (its only random draw)."""
    return aug.flip and rng.random() < 0.5


class CaptionTokens:
    """Caption → fixed-size token rows: ``chunks`` rows of BOS + 75 tokens + EOS/padding.

    With one chunk this is exactly the diffusers example's tokenisation (truncate at 77);
    longer limits concatenate chunk encodings like kohya's ``--max_token_length``. Embeddings in
    training (textual inversion) are matched in the ids as a prompt's are, and take one
    placeholder per vector; ``fixes`` says where their vectors go.
    """

    def __init__(self, tokenizer: CLIPTokenizer, max_tokens: int, embeddings: list[Embedding] | None = None) -> None:
        from lanskap.prompts.embeddings import Table

        self.tokenizer = tokenizer
        self.chunks = max_tokens // 75
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.table = Table(tokenizer, 0, embeddings, []) if embeddings else None

    def _expanded(self, caption: str) -> tuple[list[int], list[tuple[int, Embedding]]]:
        from lanskap.prompts.encode import PLACEHOLDER

        if self.table is not None:
            caption = self.table.prepare(caption)
        ids = self.tokenizer(caption, add_special_tokens=False, truncation=False, verbose=False).input_ids
        if self.table is None:
            return ids, []
        out: list[int] = []
        spots: list[tuple[int, Embedding]] = []
        i = 0
        while i < len(ids):
            found = self.table.find(ids, i)
            if found is None:
                out.append(ids[i])
                i += 1
                continue
            spots.append((len(out), found[0]))
            out += [PLACEHOLDER] * found[0].count
            i += found[1]
        return out, spots

    def rows(self, caption: str) -> list[list[int]]:
        ids = self._expanded(caption)[0][: 75 * self.chunks]
        out = []
        for c in range(self.chunks):
            part = ids[75 * c : 75 * (c + 1)]  # empty past the caption's end: BOS, EOS, padding
            row = [self.bos, *part, self.eos]
            out.append(row + [self.pad] * (77 - len(row)))
        return out

    def fixes(self, captions: list[str]) -> Fixes:
        """Per row of :meth:`batch`: where each embedding's vectors go (offset after BOS)."""
        rows: Fixes = []
        for cap in captions:
            per = [[] for _ in range(self.chunks)]  # type: list[list[tuple[int, Embedding]]]
            for pos, emb in self._expanded(cap)[1]:
                if pos // 75 < self.chunks:
                    per[pos // 75].append((pos % 75 + 1, emb))
            rows.extend(per)
        return rows if any(rows) else []

    def truncated(self, caption: str) -> bool:
        n = len(self.tokenizer(caption, add_special_tokens=False, truncation=False, verbose=False).input_ids)
        return n > 75 * self.chunks

    def batch(self, captions: list[str]) -> torch.Tensor:
        """(batch · chunks, 77) ids."""
        return torch.tensor([row for cap in captions for row in self.rows(cap)], dtype=torch.long)


class MicroBatches(torch.utils.data.Dataset):
    """Map-style dataset over this process's micro-batches, so a DataLoader can decode in workers."""

    def __init__(self, stream: Stream, records: list[Record], aug: Augment, start: int, count: int) -> None:
        self.stream, self.records, self.aug = stream, records, aug
        self.start, self.count = start, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, Any]:
        k = self.start + i
        epoch, g, idx = self.stream.locate(k)
        size = self.stream.plan.sizes[idx[0]]
        pixels, flips = [], []
        for j in idx:
            t, f = load_view(self.records[j], self.aug, size, sample_rng(self.stream.seed, epoch, g, j))
            pixels.append(t)
            flips.append(f)
        return {"k": k, "epoch": epoch, "indices": idx, "pixels": torch.stack(pixels), "flipped": flips}


class CachedMicroBatches(MicroBatches):
    """The same stream when latents are cached: only indices and flip decisions, no decoding."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        k = self.start + i
        epoch, g, idx = self.stream.locate(k)
        flips = [flip_decision(self.aug, sample_rng(self.stream.seed, epoch, g, j)) for j in idx]
        return {"k": k, "epoch": epoch, "indices": idx, "pixels": None, "flipped": flips}
