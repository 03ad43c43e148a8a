"""A1111 hypernetworks: read as A1111 writes them, applied to the attention as A1111 applies them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, main_cli
from lanskap.config import Settings
from lanskap.generation.engine import Engine
from lanskap.generation.params import GenerationRequest
from lanskap.models.hypernetwork import HypernetworkError, Structure, read_hypernetwork

STRUCTURE = Structure(layer_structure=(1, 2, 1), activation_func="relu", is_layer_norm=True, use_dropout=True,
                      activate_output=False, last_layer_dropout=True)  # fmt: skip


def _a1111_file(path: Path, widths: list[int], *, zero_out: bool, seed: int = 5) -> Path:
    """A hypernetwork saved the way A1111's ``Hypernetwork.save`` does: int keys, (k, v) state dicts."""
    torch.manual_seed(seed)
    data: dict = {}
    for w in widths:
        pair = []
        for _ in range(2):
            seq = STRUCTURE.build(w)
            linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
            for lin in linears:
                torch.nn.init.normal_(lin.weight, std=0.3)
            if zero_out:
                torch.nn.init.zeros_(linears[-1].weight)
                torch.nn.init.zeros_(linears[-1].bias)
            pair.append({f"linear.{k}": v for k, v in seq.state_dict().items()})
        data[w] = tuple(pair)
    data.update(step=100, name=path.stem, layer_structure=[1, 2, 1], activation_func="relu", is_layer_norm=True,
                weight_initialization="Normal", use_dropout=True, sd_checkpoint=None, sd_checkpoint_name=None,
                activate_output=False, last_layer_dropout=True)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return path


def _widths(engine: Engine) -> list[int]:
    unet = engine.load().pipe.unet
    inner = {m.to_k.in_features for name, m in unet.named_modules() if name.endswith("attn1")}
    return sorted({unet.config.cross_attention_dim, *inner})


@pytest.fixture()
def hn_engine(tiny_sd: Path, isolated_home: Path) -> Engine:
    engine = Engine(settings=Settings(home=isolated_home, model=str(tiny_sd)))
    folder = engine.settings.hypernetworks_dir
    widths = _widths(engine)
    _a1111_file(folder / "quiet.pt", widths, zero_out=True)
    _a1111_file(folder / "bold.pt", widths, zero_out=False)
    _a1111_file(folder / "sd1only.pt", [768, 320], zero_out=False)
    return engine


def _pixels(engine: Engine, prompt: str) -> np.ndarray:
    req = GenerationRequest(prompt, steps=2, width=64, height=64, seed=7, watermark=False)
    return np.asarray(engine.generate(req).images[0], dtype=np.int16)


def test_the_layers_land_where_a1111_put_them(hn_engine: Engine) -> None:
    hn = read_hypernetwork(hn_engine.settings.hypernetworks_dir / "bold.pt")
    k_net = hn.layers[hn.widths[0]][0]
    # Linear, ReLU?, LayerNorm, Dropout for the first layer; the last layer has no activation (activate_output off)
    kinds = [type(m).__name__ for m in k_net.linear]
    assert kinds == ["Linear", "ReLU", "LayerNorm", "Dropout", "Linear", "LayerNorm"]
    assert hn.meta["step"] == 100


def test_zero_output_layers_leave_the_image_unchanged_and_a_real_one_changes_it(hn_engine: Engine) -> None:
    base = _pixels(hn_engine, "a castle")
    assert np.array_equal(_pixels(hn_engine, "a castle <hypernet:quiet:1>"), base)
    bold = _pixels(hn_engine, "a castle <hypernet:bold:1>")
    assert np.abs(bold - base).mean() > 0.5
    weaker = _pixels(hn_engine, "a castle <hypernet:bold:0.3>")
    assert 0 < np.abs(weaker - base).mean() < np.abs(bold - base).mean()
    # the UNet's processors are back as they were: the next plain image is the base one
    assert np.array_equal(_pixels(hn_engine, "a castle"), base)


def test_the_infotext_names_the_hypernetwork_and_replays(hn_engine: Engine) -> None:
    from lanskap.generation.replay import replay_from_infotext

    req = GenerationRequest("a castle <hypernet:bold:0.6>", steps=2, width=64, height=64, seed=7, watermark=False)
    result = hn_engine.generate(req)
    text = result.infotexts[0]
    assert "Hypernet: bold" in text and "Hypernet strength: 0.6" in text and "Hypernet hash: " in text
    again = hn_engine.generate(GenerationRequest(**replay_from_infotext(text).fields))
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(result.images[0]))


def test_import_converts_to_safetensors_with_the_same_effect(hn_engine: Engine, capsys) -> None:
    src = hn_engine.settings.hypernetworks_dir / "bold.pt"
    proc = main_cli(capsys, "models", "import-hypernetwork", str(src), "--name", "bold-st")
    assert proc.returncode == 0, proc.stderr
    out = hn_engine.settings.hypernetworks_dir / "bold-st.safetensors"
    assert out.is_file() and "<hypernet:bold-st:1>" in proc.stdout
    a = read_hypernetwork(src)
    b = read_hypernetwork(out)
    for w in a.widths:
        for na, nb in zip(a.layers[w], b.layers[w], strict=True):
            for (ka, ta), (kb, tb) in zip(na.state_dict().items(), nb.state_dict().items(), strict=True):
                assert ka == kb and torch.equal(ta, tb)
    converted = _pixels(hn_engine, "a castle <hypernet:bold-st:1>")
    assert np.array_equal(converted, _pixels(hn_engine, "a castle <hypernet:bold:1>"))


def test_a_hypernetwork_for_another_width_is_a_one_line_error(hn_engine: Engine, capsys) -> None:
    with pytest.raises(HypernetworkError, match=r"made for SD 1\.x"):
        _pixels(hn_engine, "a castle <hypernet:sd1only:1>")
    proc = main_cli(capsys, "generate", "a castle <hypernet:nosuch:1>", "--model", hn_engine.model_spec,
                    "--steps", "1")  # fmt: skip
    assert_one_line_error(proc, "nosuch", "not found")


def test_the_listing_route_answers_through_webuiapi(hn_engine: Engine) -> None:
    import webuiapi

    from lanskap.api.security import ServeConfig
    from lanskap.service import Service
    from test_api import Server

    server = Server(Service(hn_engine.settings, engine=hn_engine), ServeConfig())
    try:
        api = webuiapi.WebUIApi(host="127.0.0.1", port=int(server.url.rsplit(":", 1)[1]))
        names = sorted(h["name"] for h in api.get_hypernetworks())
        assert names == ["bold", "quiet", "sd1only"]
        # A1111's txt2img with the tag, through the client
        out = api.txt2img(prompt="a castle <hypernet:bold:1>", steps=2, width=64, height=64, seed=7)
        assert "Hypernet: bold" in out.info["infotexts"][0]
        import requests

        for bad in ("<hypernet:nosuch:1>", "<hypernet:sd1only:1>", "<hypernet:bold:x>"):
            r = requests.post(server.url + "/sdapi/v1/txt2img", json={"prompt": f"a castle {bad}", "steps": 1,
                              "width": 64, "height": 64}, timeout=60)  # fmt: skip
            assert r.status_code == 422 and "hypernet" in r.json()["detail"], (bad, r.text)
    finally:
        server.stop()
