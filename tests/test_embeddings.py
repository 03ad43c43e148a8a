"""Textual-inversion embeddings in use: every exchanged format, found by name in prompts, on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import assert_one_line_error, main_cli
from lanskap.config import Settings
from lanskap.generation.engine import Engine
from lanskap.generation.params import GenerationRequest
from lanskap.prompts.embeddings import EmbeddingError, check_token, read_embedding, scan
from lanskap.prompts.encode import count_tokens

NAME = "zqxstyle"


def _vectors(width: int, count: int = 2, seed: int = 3) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed)) * 0.5


def _write_formats(folder: Path, vec: torch.Tensor) -> dict[str, Path]:
    """The same vectors as A1111 (.pt), kohya (emb_params), diffusers (one key, .safetensors and .bin)."""
    folder.mkdir(parents=True, exist_ok=True)
    a1111 = folder / "a1111.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "a1111", "step": 500,
                "sd_checkpoint": "abc", "sd_checkpoint_name": "base"}, a1111)  # fmt: skip
    kohya = folder / "kohya.safetensors"
    save_file({"emb_params": vec.contiguous()}, str(kohya))
    diffusers = folder / "diffusers.safetensors"
    save_file({"<diffusers>": vec.contiguous()}, str(diffusers))
    binary = folder / "learned.bin"
    torch.save({"<learned>": vec}, binary)
    return {"a1111": a1111, "kohya": kohya, "diffusers": diffusers, "bin": binary}


@pytest.fixture()
def ti_engine(tiny_sd: Path, isolated_home: Path) -> Engine:
    home = isolated_home
    engine = Engine(settings=Settings(home=home, model=str(tiny_sd)))
    width = engine.load().pipe.text_encoder.get_input_embeddings().embedding_dim
    (home / "embeddings").mkdir(parents=True)
    save_file({"emb_params": _vectors(width, 3).contiguous()}, str(home / "embeddings" / f"{NAME}.safetensors"))
    save_file({"emb_params": _vectors(width + 8, 1).contiguous()}, str(home / "embeddings" / "otherbase.safetensors"))
    return engine


def test_every_format_reads_to_the_same_vectors(tmp_path: Path) -> None:
    vec = _vectors(32, 2)
    files = _write_formats(tmp_path / "emb", vec)
    read = {k: read_embedding(p) for k, p in files.items()}
    for emb in read.values():
        assert torch.equal(emb.vectors, vec)
        assert emb.count == 2 and emb.width == 32
        assert len(emb.shorthash) == 12
    assert read["a1111"].step == 500 and read["a1111"].sd_checkpoint_name == "base"
    assert read["kohya"].name == "kohya"  # the file's stem is its name, as in A1111
    folder = scan(tmp_path / "emb", 32)
    assert sorted(folder.loaded) == ["a1111", "diffusers", "kohya", "learned"]
    other = scan(tmp_path / "emb", 1024)
    assert not other.loaded and sorted(other.skipped) == ["a1111", "diffusers", "kohya", "learned"]


def test_a_pickle_with_code_is_refused_not_run(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):  # what a malicious .pt carries
            return (print, ("pwned",))

    path = tmp_path / "bad.pt"
    torch.save({"string_to_param": {"*": Boom()}}, path)
    with pytest.raises(EmbeddingError, match="weights only"):
        read_embedding(path)


def test_an_embedding_changes_the_output_only_where_its_name_is_written(ti_engine: Engine) -> None:
    plain = ti_engine.encode_prompts("a castle on a hill", "")
    without = Engine(settings=Settings(home=ti_engine.settings.home / "empty", model=ti_engine.model_spec))
    assert torch.equal(plain.cond, without.encode_prompts("a castle on a hill", "").cond)
    named = ti_engine.encode_prompts(f"a castle on a hill, {NAME}", "")
    assert not torch.equal(named.cond, plain.cond)
    assert list(named.embeddings) == [NAME]
    # ComfyUI's form names the same embedding; a weight scales it like any word
    comfy = ti_engine.encode_prompts(f"a castle on a hill, embedding:{NAME}", "")
    assert torch.equal(comfy.cond, named.cond)
    weighted = ti_engine.encode_prompts(f"a castle on a hill, ({NAME}:1.4)", "")
    assert not torch.equal(weighted.cond, named.cond)
    # the negative prompt takes embeddings too
    neg = ti_engine.encode_prompts("a castle on a hill", NAME)
    assert not torch.equal(neg.uncond, plain.uncond) and torch.equal(neg.cond, plain.cond)


def test_a_multi_vector_embedding_takes_its_token_count(ti_engine: Engine) -> None:
    pipe = ti_engine.model.pipe
    table = ti_engine.networks.table(pipe.tokenizer, pipe.text_encoder)
    base = count_tokens(pipe.tokenizer, "a castle", table)
    assert count_tokens(pipe.tokenizer, f"a castle {NAME}", table) == base + 3
    assert count_tokens(pipe.tokenizer, f"a castle {NAME}") > base  # without the table: plain word pieces


def test_an_embedding_for_another_width_is_refused_when_named(ti_engine: Engine, capsys) -> None:
    with pytest.raises(EmbeddingError, match=r"otherbase.*40-wide text.*32-wide"):
        ti_engine.encode_prompts("a castle, otherbase", "")
    with pytest.raises(EmbeddingError, match="not found"):
        ti_engine.encode_prompts("a castle, embedding:nosuch", "")
    proc = main_cli(capsys, "generate", "a castle, otherbase", "--model", ti_engine.model_spec, "--steps", "1",
                    "--width", "64", "--height", "64")  # fmt: skip
    assert_one_line_error(proc, "otherbase", "wide")


def test_the_infotext_records_ti_hashes(ti_engine: Engine) -> None:
    req = GenerationRequest(f"a castle, {NAME}", steps=1, width=64, height=64, seed=1, watermark=False)
    result = ti_engine.generate(req)
    emb = read_embedding(ti_engine.settings.embeddings_dir / f"{NAME}.safetensors")
    assert f'TI hashes: "{NAME}: {emb.shorthash}"' in result.infotexts[0]
    plain = ti_engine.generate(GenerationRequest("a castle", steps=1, width=64, height=64, seed=1, watermark=False))
    assert "TI hashes" not in plain.infotexts[0]


def test_a_new_token_must_not_be_a_known_word(tiny_sd: Path) -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(tiny_sd / "tokenizer"))
    known = tok.convert_ids_to_tokens(tok("castle", add_special_tokens=False)["input_ids"])
    if len(known) == 1:
        with pytest.raises(EmbeddingError, match="already a word"):
            check_token(tok, "castle")
    check_token(tok, "<verdigris-style>")  # several word pieces: a new token


def test_the_listing_routes_answer_through_webuiapi(ti_engine: Engine) -> None:
    import webuiapi

    from lanskap.api.security import ServeConfig
    from lanskap.service import Service
    from test_api import Server

    server = Server(Service(ti_engine.settings, engine=ti_engine), ServeConfig())
    try:
        api = webuiapi.WebUIApi(host="127.0.0.1", port=int(server.url.rsplit(":", 1)[1]))
        listing = api.get_embeddings()
        assert listing["loaded"][NAME]["vectors"] == 3 and listing["loaded"][NAME]["shape"] == 32
        assert listing["skipped"]["otherbase"]["shape"] == 40
        assert listing["loaded"][NAME]["step"] is None  # a kohya file carries no step
        assert api.get_hypernetworks() == []
    finally:
        server.stop()


def test_the_listing_never_waits_for_a_running_job(ti_engine: Engine) -> None:
    """The Generate page and /sdapi/v1/embeddings list embeddings while a job holds the engine."""
    import threading

    from lanskap.generation.networks import embedding_listing

    held, release = threading.Event(), threading.Event()

    def job() -> None:
        with ti_engine._lock:  # what a running generation holds
            held.set()
            release.wait(30)

    worker = threading.Thread(target=job)
    worker.start()
    held.wait(10)
    answer: list[dict] = []
    lister = threading.Thread(target=lambda: answer.append(embedding_listing(ti_engine)))
    lister.start()
    lister.join(5)
    release.set()
    worker.join()
    assert answer and NAME in answer[0]["loaded"], "the listing waited for the job"


def test_an_embedding_in_a_region_prompt_is_used_and_recorded(ti_engine: Engine) -> None:
    from lanskap.generation.regions import Layout, Region

    def region(prompt: str) -> GenerationRequest:
        layout = Layout((Region(prompt, (0.0, 0.0, 0.5, 1.0)),))
        return GenerationRequest("a castle", steps=2, width=64, height=64, seed=1, watermark=False, regions=layout)

    plain = ti_engine.generate(region("a lake"))
    styled = ti_engine.generate(region(f"a lake, {NAME}"))
    assert f'TI hashes: "{NAME}: ' in styled.infotexts[0] and "TI hashes" not in plain.infotexts[0]
    import numpy as np

    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(styled.images[0]))


def test_an_old_a1111_file_is_refused_then_imported_once_with_pickle_allowed(
    tmp_path: Path, isolated_home: Path, capsys
) -> None:
    vec = _vectors(32, 2)
    old = tmp_path / "oldstyle.pt"  # torch 1.11-era A1111: the vectors in a ParameterDict
    torch.save({"string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(vec)}), "step": 700}, old)
    with pytest.raises(EmbeddingError, match="weights only"):
        read_embedding(old)
    refused = main_cli(capsys, "models", "import-embedding", str(old))
    assert_one_line_error(refused, "oldstyle.pt", "pickle")
    done = main_cli(capsys, "models", "import-embedding", str(old), "--allow-pickle")
    assert done.returncode == 0, done.stderr
    converted = read_embedding(isolated_home / "embeddings" / "oldstyle.safetensors")
    assert torch.equal(converted.vectors, vec) and converted.step == 700
