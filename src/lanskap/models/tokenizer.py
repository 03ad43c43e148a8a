"""Write a small CLIP-style BPE tokenizer for tiny test models.

Real CLIP tokenizer files can't be downloaded here, so tiny models need their
own. ``tokenizers``' trainer can't reproduce CLIP's vocabulary layout (256
byte symbols, the same 256 with ``</w>``, merges, then the two specials), which
``CLIPTokenizer`` relies on, so the merges are learnt here with a few lines of
classic BPE over a built-in landscape word list.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from functools import cache
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"

# Words that fantasy-landscape prompts use; learnt merges make them short token runs.
CORPUS = """
a an the of in on at with and under over above below beyond near far into across through by from
fantasy landscape concept art majestic ancient mystical enchanted magical ethereal epic dramatic
serene castle tower village ruins temple city fortress bridge cottage palace citadel walls gate
mountain mountains peak peaks hill hills valley cliff canyon plain plains desert island islands
floating sea ocean lake river waterfall stream beach coast shore water waves harbor forest trees
tree glowing bioluminescent mushrooms giant flowers meadow grass jungle woods sky clouds sun moon
moons two stars starry aurora night dawn sunset sunrise day dusk twilight mist misty fog foggy rain
snow snowy rocky green golden crimson violet purple blue red orange light lighting soft warm cold
glow shimmering sparkling crystal clear dreamy otherworldly painting digital highly detailed detail
cinematic wide view vista horizon distance style vibrant dragon creatures luminous energy hidden
treasures exotic goods mystic edge land scene feel air blurry cropped deformed distorted bad
composition missing parts unclear oversaturated
""".split()


@cache
def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte-to-printable-character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _symbols(word: str) -> tuple[str, ...]:
    table = bytes_to_unicode()
    chars = [table[b] for b in word.encode("utf-8")]
    return (*chars[:-1], chars[-1] + "</w>")


def learn_merges(words: list[str], n_merges: int) -> list[tuple[str, str]]:
    """Classic BPE: repeatedly merge the most frequent adjacent pair (ties broken by text)."""
    freq = Counter(w.lower() for w in words if re.fullmatch(r"[a-z]+", w.lower()))
    splits = {w: _symbols(w) for w in freq}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for w, f in freq.items():
            sp = splits[w]
            for pair in itertools.pairwise(sp):
                pairs[pair] += f
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for w, sp in splits.items():
            out: list[str] = []
            i = 0
            while i < len(sp):
                if i + 1 < len(sp) and (sp[i], sp[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(sp[i])
                    i += 1
            splits[w] = tuple(out)
    return merges


def write_clip_tokenizer(
    folder: Path, *, n_merges: int = 480, pad_token: str = "!", words: list[str] | None = None
) -> int:
    """Write ``vocab.json``/``merges.txt`` plus a saved ``CLIPTokenizer``; return the vocab size.

    ``pad_token="!"`` matches SD 2.x's tokenizer (SD 1.x pads with ``<|endoftext|>``).
    ``words`` adds to the built-in word list (lanskap-mini adds its caption vocabulary).
    """
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    base = list(bytes_to_unicode().values())
    merges = learn_merges((CORPUS + list(words or [])) * 3, n_merges)
    vocab_list = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=77)
    tok.save_pretrained(str(folder))
    return len(vocab)
