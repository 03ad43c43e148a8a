"""SDXL's prompts: two text encoders, encoded the way AUTOMATIC1111 encodes them.

SDXL conditions its UNet on CLIP ViT-L and OpenCLIP bigG together. A1111 runs each encoder on
the same 75-token chunks (its own tokenizer: CLIP-L pads with EOS, bigG with "!"), takes each
one's penultimate hidden states without the final layer norm, applies the emphasis and restores
the mean per encoder, and joins them along the width (768 + 1280 = 2048). The pooled embedding
(bigG's projected EOS state) comes from the first chunk only, unweighted. An empty negative
prompt is all zeros, hidden states and pooled alike (A1111's ``force_zero_embeddings``, diffusers'
``force_zeros_for_empty_prompt``). A1111 ignores the clip skip for SDXL (its ``sdxl_clip_l_skip``
is off by default), and so does lanskap.

A second prompt (diffusers' ``prompt_2``) goes to bigG only; CLIP-L keeps the first. SDXL's
refiner has bigG alone; its encodings are that half (``DualEncoder`` without a first encoder).
For a prompt of up to 75 tokens with no weights the result is exactly diffusers' own
``encode_prompt``, so short prompts give the stock pipeline's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lanskap.prompts.encode import ScheduledPrompts, TokenizedPrompt, emphasised, pad_embeddings, tokenize_prompt

if TYPE_CHECKING:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer


@dataclass(frozen=True)
class DualEncoder:
    """SDXL's two tokenizers and text encoders (a loaded pipeline's, or a trainer's); the refiner's
    first pair is None."""

    tokenizer: CLIPTokenizer | None
    text_encoder: CLIPTextModel | None
    tokenizer_2: CLIPTokenizer
    text_encoder_2: CLIPTextModelWithProjection

    @classmethod
    def of(cls, pipe: object) -> DualEncoder:
        return cls(pipe.tokenizer, pipe.text_encoder, pipe.tokenizer_2, pipe.text_encoder_2)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DualEncoding:
    hidden: torch.Tensor  # (1, 77 * chunks, width 1 + width 2)
    pooled: torch.Tensor  # (1, projection width)
    chunks: int
    tokens: int  # the first encoder's prompt tokens


def _hidden(encoder: torch.nn.Module, tok: TokenizedPrompt) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 77 * chunks, width) penultimate hidden states with emphasis, and the encoder's first output
    for the first chunk (the projected pooled embedding for bigG)."""
    ids = torch.tensor(tok.ids, device=encoder.device)
    out = encoder(ids, output_hidden_states=True)
    z = emphasised(out.hidden_states[-2], tok.weights)
    return z.reshape(1, -1, z.shape[-1]), out[0][:1]


def encode_dual(enc: DualEncoder, text: str, text_2: str | None = None, *, zero: bool = False) -> DualEncoding:
    """One text through both encoders (``text_2`` to the second when given); ``zero`` gives A1111's
    all-zero encoding of an empty negative prompt, in the same shape."""
    tok_2 = tokenize_prompt(enc.tokenizer_2, text_2 or text)
    with torch.no_grad():
        z2, pooled = _hidden(enc.text_encoder_2, tok_2)
        if enc.tokenizer is None or enc.text_encoder is None:  # the refiner: bigG alone
            hidden, chunks, tokens = z2, tok_2.chunks, tok_2.token_count
        else:
            tok_1 = tokenize_prompt(enc.tokenizer, text)
            z1, _ = _hidden(enc.text_encoder, tok_1)
            chunks, tokens = max(tok_1.chunks, tok_2.chunks), tok_1.token_count
            if tok_1.chunks != tok_2.chunks:  # a longer second prompt: each side padded with its own empty chunk
                z1 = pad_embeddings(z1, chunks, _hidden(enc.text_encoder, tokenize_prompt(enc.tokenizer, ""))[0])
                z2 = pad_embeddings(z2, chunks, _hidden(enc.text_encoder_2, tokenize_prompt(enc.tokenizer_2, ""))[0])
            hidden = torch.cat([z1, z2.to(z1.dtype)], dim=-1)
    if zero:
        hidden, pooled = torch.zeros_like(hidden), torch.zeros_like(pooled)
    return DualEncoding(hidden, pooled, chunks, tokens)


def encode_dual_schedules(
    enc: DualEncoder, prompt: str, negative: str, steps: int, prompt_2: str | None = None
) -> ScheduledPrompts:
    """Every text the prompt and negative prompt take while sampling (A1111's prompt editing),
    each encoded once through both encoders, padded to one chunk count; pooled embeddings alongside."""
    from lanskap.prompts.schedule import prompt_schedule

    pos, neg = prompt_schedule(prompt, steps), prompt_schedule(negative, steps)
    encoded: dict[tuple[str, bool], DualEncoding] = {}
    for texts, negative_side in ((pos, False), (neg, True)):
        for _, text in texts:
            key = (text, negative_side)
            if key not in encoded:
                second = None if negative_side else prompt_2
                encoded[key] = encode_dual(enc, text, second, zero=negative_side and not text.strip())
    chunks = max(e.chunks for e in encoded.values())
    empty = encode_dual(enc, "").hidden if any(e.chunks != chunks for e in encoded.values()) else None

    def hidden(text: str, negative_side: bool) -> torch.Tensor:
        z = encoded[(text, negative_side)].hidden
        return pad_embeddings(z, chunks, empty) if empty is not None else z

    return ScheduledPrompts(
        cond=[(end, hidden(text, False)) for end, text in pos],
        uncond=[(end, hidden(text, True)) for end, text in neg],
        chunks=chunks,
        prompt_tokens=max(encoded[(text, False)].tokens for _, text in pos),
        negative_tokens=max(encoded[(text, True)].tokens for _, text in neg),
        encodings=len(encoded),
        forms=(len({t for _, t in pos}), len({t for _, t in neg})),
        pooled=[(end, encoded[(text, False)].pooled) for end, text in pos],
        negative_pooled=[(end, encoded[(text, True)].pooled) for end, text in neg],
    )
