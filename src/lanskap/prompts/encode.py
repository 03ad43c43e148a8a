"""Prompts of any length, encoded the way AUTOMATIC1111 does.

CLIP sees 77 tokens; diffusers silently drops the rest. A1111 instead splits
the prompt into chunks of 75 tokens, wraps each in BOS/EOS, encodes them one
by one and concatenates the embeddings, so every word counts. Attention weights
scale each token's embedding, after which the mean is restored (A1111's
"Original" emphasis). A chunk that would split a phrase moves the words after
the last comma (within 20 tokens) into the next chunk, as A1111's
``comma_padding_backtrack`` does.

For a prompt of up to 75 tokens with no weights the result is exactly what
diffusers' own ``encode_prompt`` produces, so short prompts give the stock
pipeline's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from lanskap.prompts.attention import BREAK, parse_attention
from lanskap.prompts.embeddings import Embedding, Fixes, Table, substituted

if TYPE_CHECKING:
    from transformers import CLIPTextModel, CLIPTokenizer


CHUNK = 75
COMMA_BACKTRACK = 20


@dataclass
class Chunk:
    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Embedding]] = field(default_factory=list)  # (offset in tokens, embedding)

    def split(self, cut: int) -> Chunk:
        """Cut this chunk at ``cut`` and return the rest (embeddings past the cut go with it)."""
        rest = Chunk(self.tokens[cut:], self.weights[cut:], [(o - cut, e) for o, e in self.fixes if o >= cut])
        self.tokens, self.weights = self.tokens[:cut], self.weights[:cut]
        self.fixes = [(o, e) for o, e in self.fixes if o < cut]
        return rest


#: The id written where an embedding's vectors go (A1111's too); the encoder never sees its vector.
PLACEHOLDER = 0


@dataclass(frozen=True)
class TokenizedPrompt:
    """The 77-token rows the text encoder sees, with one weight per token."""

    ids: list[list[int]]
    weights: list[list[float]]
    token_count: int  # prompt tokens, without BOS/EOS/padding
    fixes: Fixes = field(default_factory=list)  # per row: (offset in the row, embedding)

    @property
    def chunks(self) -> int:
        return len(self.ids)

    @property
    def embeddings(self) -> dict[str, Embedding]:
        """The embeddings this prompt names, by name."""
        return {e.name: e for row in self.fixes for _, e in row}


def _special_ids(tokenizer: CLIPTokenizer) -> tuple[int, int, int, int | None]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    if comma is None or comma == tokenizer.unk_token_id:
        comma = None
    return bos, eos, pad, comma


def tokenize_prompt(tokenizer: CLIPTokenizer, prompt: str, table: Table | None = None) -> TokenizedPrompt:
    """Split ``prompt`` into weighted 75-token chunks (A1111's ``tokenize_line``).

    With a ``table``, each embedding name found in the tokens becomes one placeholder per vector,
    kept in one chunk (a chunk without room for it is closed first, as A1111 does).
    """
    bos, eos, pad, comma = _special_ids(tokenizer)
    if table:
        prompt = table.prepare(prompt)
    parsed = parse_attention(prompt)
    texts = [t for t, _ in parsed]
    token_lists = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    chunks: list[Chunk] = []
    chunk = Chunk()
    last_comma = -1
    count = 0

    def close() -> None:
        nonlocal chunk, last_comma
        chunks.append(chunk)
        chunk = Chunk()
        last_comma = -1

    for tokens, (text, weight) in zip(token_lists, parsed, strict=True):
        if text == BREAK and weight == -1:
            close()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if comma is not None and token == comma:
                last_comma = len(chunk.tokens)
            elif len(chunk.tokens) == CHUNK and last_comma != -1 and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK:
                moved = chunk.split(last_comma + 1)
                close()
                chunk = moved
            if len(chunk.tokens) == CHUNK:
                close()
            found = table.find(tokens, position) if table else None
            if found is None:
                chunk.tokens.append(token)
                chunk.weights.append(weight)
                count += 1
                position += 1
                continue
            emb, name_length = found
            if len(chunk.tokens) + emb.count > CHUNK:
                close()
            chunk.fixes.append((len(chunk.tokens), emb))
            chunk.tokens += [PLACEHOLDER] * emb.count
            chunk.weights += [weight] * emb.count
            count += emb.count
            position += name_length
    if chunk.tokens or not chunks:
        close()

    ids: list[list[int]] = []
    weights: list[list[float]] = []
    for c in chunks:
        fill = CHUNK - len(c.tokens)
        # [BOS] tokens [EOS] pad…: SD 2.x pads with "!" (id 0), SD 1.x with EOS; the tokenizer knows which.
        ids.append([bos, *c.tokens, eos] + [pad] * fill)
        weights.append([1.0, *c.weights, 1.0] + [1.0] * fill)
    fixes = [[(offset + 1, e) for offset, e in c.fixes] for c in chunks]  # +1: after BOS
    return TokenizedPrompt(ids, weights, count, fixes if any(fixes) else [])


def count_tokens(tokenizer: CLIPTokenizer, prompt: str, table: Table | None = None) -> int:
    """How many CLIP tokens a prompt uses (weights and BREAKs not counted), for the 77-token check."""
    return tokenize_prompt(tokenizer, prompt, table).token_count


def encode_rows(text_encoder: CLIPTextModel, ids: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
    """(rows, 77) token ids → (rows, 77, dim) hidden states; shared by generation and training.

    ``clip_skip`` is A1111's: 1 is the last layer's output; N takes the hidden state N layers from
    the end and runs it through the final layer norm, as A1111's ``encode_with_transformers`` does.
    """
    # Same call as diffusers' encode_prompt with clip_skip=None; SD 2.x text encoders never use the mask.
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = torch.ones_like(ids)
    if clip_skip <= 1:
        return text_encoder(ids, attention_mask=mask)[0]
    out = text_encoder(ids, attention_mask=mask, output_hidden_states=True)
    # transformers 5's CLIPTextModel has the layer norm at the top; 4.x had it under text_model.
    norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    return norm(out.hidden_states[-clip_skip])


def text_encoder_layers(text_encoder: CLIPTextModel) -> int:
    return int(text_encoder.config.num_hidden_layers)


def encode_tokenized(text_encoder: CLIPTextModel, tok: TokenizedPrompt, clip_skip: int = 1) -> torch.Tensor:
    """Embeddings of shape (1, 77 * chunks, dim), with emphasis applied and the mean restored."""
    device = text_encoder.device
    dtype = text_encoder.dtype
    ids = torch.tensor(tok.ids, device=device)
    with torch.no_grad(), substituted(text_encoder, tok.fixes):
        z = emphasised(encode_rows(text_encoder, ids, clip_skip), tok.weights)  # (chunks, 77, dim)
    return z.reshape(1, -1, z.shape[-1]).to(dtype)


def emphasised(z: torch.Tensor, weights: list[list[float]]) -> torch.Tensor:
    """A1111's "Original" emphasis on (chunks, 77, dim) hidden states: each token scaled by its
    weight, then each chunk's mean restored, so weights change the emphasis, not the magnitude."""
    # z.device, not the encoder's: with model CPU offload the encoder sits on the CPU between calls.
    w = torch.tensor(weights, device=z.device, dtype=z.dtype).unsqueeze(-1)
    if not bool((w != 1.0).any()):
        return z
    out = []
    for row, row_w in zip(z, w, strict=True):
        before = row.float().mean()
        scaled = row * row_w
        after = scaled.float().mean()
        out.append((scaled.float() * (before / after)).to(z.dtype) if after != 0 else scaled)
    return torch.stack(out)


def pad_embeddings(z: torch.Tensor, chunks: int, empty: torch.Tensor) -> torch.Tensor:
    """Append encodings of the empty prompt until ``z`` has ``chunks`` chunks (A1111's ``pad_cond``)."""
    have = z.shape[1] // empty.shape[1]
    if have >= chunks:
        return z
    return torch.cat([z, empty.repeat(1, chunks - have, 1)], dim=1)


@dataclass(frozen=True)
class PromptPair:
    cond: torch.Tensor  # (1, 77 * chunks, dim)
    uncond: torch.Tensor  # same shape
    chunks: int
    prompt_tokens: int
    negative_tokens: int
    embeddings: dict[str, Embedding] = field(default_factory=dict)  # those the texts name


def encode_prompt_pair(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    prompt: str,
    negative: str,
    clip_skip: int = 1,
    table: Table | None = None,
) -> PromptPair:
    """Encode a prompt and a negative prompt of any length to embeddings of the same shape."""
    pos = tokenize_prompt(tokenizer, prompt, table)
    neg = tokenize_prompt(tokenizer, negative, table)
    cond = encode_tokenized(text_encoder, pos, clip_skip)
    uncond = encode_tokenized(text_encoder, neg, clip_skip)
    chunks = max(pos.chunks, neg.chunks)
    if pos.chunks != neg.chunks:
        empty = encode_tokenized(text_encoder, tokenize_prompt(tokenizer, ""), clip_skip)
        cond = pad_embeddings(cond, chunks, empty)
        uncond = pad_embeddings(uncond, chunks, empty)
    return PromptPair(cond, uncond, chunks, pos.token_count, neg.token_count, {**pos.embeddings, **neg.embeddings})


@dataclass(frozen=True)
class ScheduledPrompts:
    """Embeddings for each stretch of steps (A1111's prompt editing and alternation), all one shape.

    ``cond`` and ``uncond`` are ``(end_step, embeddings)`` lists: an entry holds for sampler steps
    ``i <= end_step``. A prompt without editing has one entry, exactly :func:`encode_prompt_pair`'s.
    """

    cond: list[tuple[int, torch.Tensor]]
    uncond: list[tuple[int, torch.Tensor]]
    chunks: int
    prompt_tokens: int
    negative_tokens: int
    encodings: int  # distinct texts encoded (each once)
    forms: tuple[int, int] = (1, 1)  # distinct texts the prompt and the negative prompt take
    embeddings: dict[str, Embedding] = field(default_factory=dict)  # those the texts name
    #: SDXL's pooled text embeddings, in the same (end_step, tensor) form; empty for SD 1.x/2.x.
    pooled: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    negative_pooled: list[tuple[int, torch.Tensor]] = field(default_factory=list)

    @property
    def static(self) -> bool:
        return len(self.cond) == 1 and len(self.uncond) == 1

    def at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, uncond) for sampler step ``step`` (from 0)."""
        return _pick(self.cond, step), _pick(self.uncond, step)

    def pooled_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """SDXL's (pooled, negative pooled) for sampler step ``step``; None for a single-encoder model."""
        if not self.pooled:
            return None
        return _pick(self.pooled, step), _pick(self.negative_pooled, step)


def _pick(entries: list[tuple[int, torch.Tensor]], step: int) -> torch.Tensor:
    for end, z in entries:
        if step <= end:
            return z
    return entries[-1][1]


def encode_prompt_schedules(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    prompt: str,
    negative: str,
    steps: int,
    clip_skip: int = 1,
    table: Table | None = None,
) -> ScheduledPrompts:
    """Encode every text the prompt and negative prompt take while sampling, each distinct one once."""
    from lanskap.prompts.schedule import prompt_schedule

    pos, neg = prompt_schedule(prompt, steps), prompt_schedule(negative, steps)
    encoded: dict[str, tuple[torch.Tensor, TokenizedPrompt]] = {}
    for _, text in (*pos, *neg):
        if text not in encoded:
            tok = tokenize_prompt(tokenizer, text, table)
            encoded[text] = (encode_tokenized(text_encoder, tok, clip_skip), tok)
    chunks = max(tok.chunks for _, tok in encoded.values())
    empty = None
    if any(tok.chunks != chunks for _, tok in encoded.values()):
        empty = encode_tokenized(text_encoder, tokenize_prompt(tokenizer, ""), clip_skip)

    def padded(text: str) -> torch.Tensor:
        z = encoded[text][0]
        return pad_embeddings(z, chunks, empty) if empty is not None else z

    return ScheduledPrompts(
        cond=[(end, padded(text)) for end, text in pos],
        uncond=[(end, padded(text)) for end, text in neg],
        chunks=chunks,
        prompt_tokens=max(encoded[text][1].token_count for _, text in pos),
        negative_tokens=max(encoded[text][1].token_count for _, text in neg),
        encodings=len(encoded),
        forms=(len({t for _, t in pos}), len({t for _, t in neg})),
        embeddings={name: e for _, tok in encoded.values() for name, e in tok.embeddings.items()},
    )
