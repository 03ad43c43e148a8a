"""The generate page's SDXL fields: the second prompt and the refiner (shown for an SDXL base).

The fields live in the session like the rest of the form, go into every request the page makes,
and "use these settings" puts a recorded image's back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

if TYPE_CHECKING:
    from lanskap.generation.engine import EngineInfo
    from lanskap.service.service import Service

NO_REFINER = "(none)"
DEFAULTS: dict[str, Any] = {"g_prompt_2": "", "g_refiner": NO_REFINER, "g_refiner_switch": 0.8}
#: SDXL's 3:2 training bucket, in place of the thesis's 768x512 (which SDXL renders poorly).
SDXL_SIZE = (1216, 832)


def is_sdxl(info: EngineInfo) -> bool:
    return info.family == "SDXL"


def sdxl_inputs(svc: Service, info: EngineInfo, keep: dict[str, Any]) -> None:
    """The SDXL fields, for an SDXL base; for other families they stay empty and are not sent."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    if not is_sdxl(info):
        return
    st.text_area("Second prompt (SDXL)", key="g_prompt_2", height=68, help="For SDXL's second text encoder "
                 "(OpenCLIP bigG) only; empty: the prompt above. diffusers' prompt_2.", **keep)  # fmt: skip
    # SDXL models only (a refiner or another base); a hub id not fetched yet can't be told, so it stays
    families = svc.model_families()
    names = [NO_REFINER, *(n for n, family in families.items() if family in ("SDXL", "SDXL refiner", None))]
    if st.session_state["g_refiner"] not in names:
        st.session_state["g_refiner"] = NO_REFINER
    c = st.columns([3, 2])
    c[0].selectbox("Refiner", names, key="g_refiner", help="An SDXL refiner (or base) that takes the last steps, "
                   "as A1111's refiner option does.", **keep)  # fmt: skip
    off = st.session_state["g_refiner"] == NO_REFINER
    c[1].slider("Refiner switch at", 0.01, 1.0, step=0.01, key="g_refiner_switch", help="The share of the "
                "denoising the base does first; 1: the base alone.", disabled=off, **keep)  # fmt: skip


def sdxl_fields(svc: Service) -> dict[str, Any]:
    """The request fields of the SDXL inputs (the refiner as the engine loads it)."""
    s = st.session_state
    fields: dict[str, Any] = {"prompt_2": s.get("g_prompt_2", "")}
    name = s.get("g_refiner", NO_REFINER)
    if name != NO_REFINER:
        fields["refiner"] = svc.check_model(name)
        fields["refiner_switch_at"] = float(s.get("g_refiner_switch", 0.8))
    return fields


def prefill_sdxl(svc: Service, params: dict[str, Any]) -> None:
    """A recorded image's SDXL settings into the form; a refiner no longer installed is left out."""
    spec = params.get("refiner") or ""
    name = NO_REFINER
    for shown, loads in svc.models().items():
        if spec and (spec == loads or Path(spec).name == shown):
            name = shown
    st.session_state["g_prompt_2"] = params.get("prompt_2") or ""
    st.session_state["g_refiner"] = name
    st.session_state["g_refiner_switch"] = float(params.get("refiner_switch_at") or 0.8)


def fit_sdxl_size(info: EngineInfo, defaults: tuple[int, int]) -> None:
    """An SDXL base gets SDXL's own size once per session, while the form still holds the default."""
    s = st.session_state
    if not is_sdxl(info) or s.get("g_sdxl_fitted"):
        return
    if (s["g_width"], s["g_height"]) == defaults:
        s["g_width"], s["g_height"] = SDXL_SIZE
    s["g_sdxl_fitted"] = True
