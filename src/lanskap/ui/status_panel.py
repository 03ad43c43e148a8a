"""The sidebar's live status: device, memory, loaded model and the job queue."""

from __future__ import annotations

import streamlit as st

from lanskap.ui.common import service


def _mb(value: float) -> str:
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


@st.fragment(run_every=2)
def status_panel() -> None:
    svc = service()
    s = svc.status()
    mem, model, queue = s["memory"], s["model"], s["queue"]
    st.markdown("**Status**")
    device = f"{s['device']} · {s['dtype']}"
    if "gpu_name" in mem:
        device += f" · {mem['gpu_name']}"
    st.caption(f":material/developer_board: {device}")
    st.caption(
        f":material/memory: process {_mb(mem['process_rss_mb'])} · "
        f"system {_mb(mem['system_used_mb'])} / {_mb(mem['system_total_mb'])}"
    )
    if "gpu_used_mb" in mem:
        st.caption(f":material/memory_alt: GPU {_mb(mem['gpu_used_mb'])} / {_mb(mem['gpu_total_mb'])}")
    loaded = f"loaded [{model['model_hash']}]" if model["loaded"] else "not loaded"
    st.caption(f":material/deployed_code: {model['model']} · {loaded}")
    if model.get("family"):
        size = f" · {model['native_size']} px" if model.get("native_size") else ""
        st.caption(f":material/category: {model['family']}{size}")
    if model.get("levers"):
        st.caption(f":material/speed: {model['levers']}")
    running = queue["running"]
    if running:
        frac = min(1.0, running["step"] / running["total"]) if running["total"] else 0.0
        st.progress(frac, text=f"running: {running['label']}")
    else:
        st.caption(":material/bedtime: idle")
    for i, job in enumerate(queue["pending"], 1):
        st.caption(f"{i}. :material/hourglass_top: {job['label']}")
    st.caption(f"queue: {len(queue['pending'])} waiting of {queue['max_pending']} places")
    gallery = s.get("gallery") or {}
    if gallery.get("backend") == "postgresql":  # shared with other machines: say which database
        st.caption(f":material/photo_library: gallery in PostgreSQL: {gallery['location'].split('@')[-1]}")
