"""The engine's embeddings and hypernetworks: found by name, loaded once, readied for each job.

LoRAs have their own module (``generation/lora.py``) because diffusers applies them; the two
older personalisation methods are lanskap's own work: embeddings are matched in the prompt's
tokens (``prompts/embeddings.py``) and hypernetworks wrap the attention (``generation/hypernet.py``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanskap.generation.hypernet import ActiveHypernet, check_width
from lanskap.models.hypernetwork import Hypernetwork, find_hypernetwork, list_hypernetworks, read_hypernetwork
from lanskap.prompts.embeddings import Embedding, Library, Table

if TYPE_CHECKING:
    from transformers import CLIPTextModel, CLIPTokenizer

    from lanskap.config import Settings
    from lanskap.generation.engine import Engine
    from lanskap.prompts.lora_tags import HypernetSpec

#: Hypernetworks kept in memory between jobs (each is a few MB to a few hundred).
KEEP = 4


def text_width(text_encoder: CLIPTextModel) -> int:
    """The width of the token embeddings an embedding must match."""
    return int(text_encoder.get_input_embeddings().embedding_dim)


class ExtraNetworks:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.library = Library(settings.embeddings_dir, settings.cache_dir)
        #: Embeddings held in memory, not files: a textual-inversion run's, for its validation images.
        self.extra: dict[str, Embedding] = {}
        self._hypernets: OrderedDict[tuple[str, int], Hypernetwork] = OrderedDict()
        self._lock = threading.Lock()
        self._table: tuple[tuple[object, ...], Table] | None = None

    def table(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> Table:
        """Every embedding a prompt may name on this model (the folder's, and the in-memory ones).

        Kept while the folder, the in-memory embeddings and the tokenizer stay the same: a table
        tokenizes every name, which a library of hundreds would otherwise redo for every prompt.
        """
        width = text_width(text_encoder)
        folder = self.library.get(width)
        extra = tuple((name, id(e.vectors)) for name, e in self.extra.items())
        key = (self.library.version, width, id(tokenizer), extra)
        if self._table is None or self._table[0] != key:
            # in-memory embeddings (a file given to an evaluation) are width-checked like the folder's
            fits = {n: e for n, e in self.extra.items() if e.width == width}
            misfits = [e for e in self.extra.values() if e.width != width]
            loaded = {**folder.loaded, **fits}
            self._table = (key, Table(tokenizer, width, list(loaded.values()), [*folder.skipped.values(), *misfits]))
        return self._table[1]

    def hypernetwork(self, name: str) -> Hypernetwork:
        path = find_hypernetwork(name, self.settings.hypernetworks_dir)
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            if key not in self._hypernets:
                self._hypernets[key] = read_hypernetwork(path, self.settings.cache_dir)
                while len(self._hypernets) > KEEP:
                    self._hypernets.popitem(last=False)
            self._hypernets.move_to_end(key)
            return self._hypernets[key]

    def hypernets(self, specs: list[HypernetSpec], width: int, model_name: str) -> list[ActiveHypernet]:
        """The named hypernetworks, each checked against the model's text width, with their strengths."""
        active = []
        for spec in specs:
            net = self.hypernetwork(spec.name)
            check_width(net, width, model_name)
            active.append(ActiveHypernet(net, spec.strength))
        return active


def ti_hashes(embeddings: dict[str, Embedding]) -> str | None:
    """A1111's ``TI hashes`` value: ``name: shorthash`` for each file-backed embedding used."""
    parts = [
        f"{name.replace(':', '').replace(',', '')}: {emb.shorthash}"
        for name, emb in sorted(embeddings.items())
        if emb.shorthash
    ]
    return ", ".join(parts) or None


def hypernetwork_path(name: str, settings: Settings) -> Path:
    """The file of a named hypernetwork (checked before a job queues)."""
    return find_hypernetwork(name, settings.hypernetworks_dir)


def expected_width(engine: Engine) -> int:
    """The text width embeddings must have: the loaded model's, else the configured folder's, else SD 2.x's."""
    from lanskap.control.models import base_width
    from lanskap.models.family import SD2

    m = engine.current  # never engine.model: a page or a listing must not wait for a running job
    if m is not None:
        return text_width(m.pipe.text_encoder)
    return base_width(engine.settings) or SD2.text_width


def embedding_listing(engine: Engine) -> dict[str, dict[str, dict[str, Any]]]:
    """A1111's ``/sdapi/v1/embeddings``: those that fit the model (``loaded``) and those that don't."""
    folder = engine.networks.library.get(expected_width(engine))
    return {
        "loaded": {name: e.listing() for name, e in folder.loaded.items()},
        "skipped": {name: e.listing() for name, e in folder.skipped.items()},
    }


def hypernetwork_listing(settings: Settings) -> list[dict[str, str]]:
    """A1111's ``/sdapi/v1/hypernetworks``: each file's name and path."""
    return [{"name": p.stem, "path": str(p)} for p in list_hypernetworks(settings.hypernetworks_dir)]
