"""Evaluation page: the reports from ``lanskap evaluate`` (and new runs of it through the queue).

A report folder is shown from its ``report.json`` and plots; the full
self-contained ``report.html`` can be opened inline or downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from lanskap.ui.common import job_panel, service, try_action

if TYPE_CHECKING:
    from lanskap.service.queue import Job
    from lanskap.service.service import Service


NAMES = {"cmmd": "CMMD ↓", "fid": "FID ↓", "kid": "KID ↓", "clip_score": "CLIP score ↑"}


def _start_form(svc: Service) -> None:
    from lanskap.evaluation import EvalConfig
    from lanskap.evaluation.clip import DEFAULT_CLIP_MODEL
    from lanskap.generation.params import LoraSpec

    title = "Run a new evaluation (base model vs base + LoRA or embedding on a dataset's test split)"
    with st.expander(title), st.form("eval-start", border=False):
        datasets = [str(p) for p in svc.datasets()]
        c = st.columns([3, 2])
        picked = c[0].selectbox("Prepared dataset", datasets or ["(none found)"])
        path = c[1].text_input("…or a dataset path")
        c = st.columns(4)
        lora = c[0].selectbox("LoRA", [*svc.lora_names(), "(none)"])
        scale = c[1].number_input("LoRA scale", 0.0, 2.0, 1.0, 0.05)
        limit = c[2].number_input("Captions (0 = all)", 0, 10_000, 0)
        steps = c[3].number_input("Steps", 1, 150, 25)
        c = st.columns([2, 2, 2])
        no_emb = "(none)"
        embedding = c[2].selectbox("Embedding", [no_emb, *svc.embedding_names()], key="ev-embedding",
                                   help="Its name leads every caption of the second set.")  # fmt: skip
        clip = c[0].text_input("CLIP model (CMMD, CLIP score)", value=DEFAULT_CLIP_MODEL)
        inception = c[1].text_input("Inception weights (FID, KID; empty = skip)")
        go = st.form_submit_button("Evaluate", type="primary")
    if not go:
        return
    data = path.strip() or (picked if datasets else "")

    def submit() -> Job:
        from lanskap.errors import LanskapError

        if not data:
            raise LanskapError("choose a prepared dataset or type its path")
        cfg = EvalConfig(
            data=Path(data),
            limit=int(limit) or None,
            request_fields={"steps": int(steps)},
            loras=(LoraSpec(lora, float(scale)),) if lora != "(none)" else (),
            embedding=embedding if embedding != no_emb else None,
            clip_model=clip.strip() or None,
            inception_model=inception.strip() or None,
        )
        return svc.submit_evaluation(cfg)

    job = try_action(submit)
    if job is not None:
        st.session_state["ev_job"] = job.id


def _show(folder: Path) -> None:
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    st.markdown(f"### {report.get('title', folder.name)}")
    st.caption(f"{report.get('created', '')} · {report.get('mode', '')} mode · {report.get('device', '')} · `{folder}`")
    for line in report.get("verdict", []):
        st.markdown(f"- {line}")
    for warning in report.get("warnings", []):
        st.warning(warning, icon=":material/warning:")
    sets = report.get("sets", {})
    rows = []
    for name, metrics in report.get("metrics", {}).items():
        row: dict[str, Any] = {"set": sets.get(name, {}).get("label", name)}
        for key, title in NAMES.items():
            if key in metrics:
                m = metrics[key]
                value = f"{m['value']:.4g}"
                if m.get("std") is not None:
                    value += f" ± {m['std']:.2g}"
                row[title] = value
        row["N"] = sets.get(name, {}).get("n")
        rows.append(row)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    plots = [(folder / p, c) for p, c in (("metrics.png", "Metrics"), ("clip_scores.png", "CLIP score per image"))]
    for p, caption in plots:  # each at its own size (narrower on a phone), never stretched
        if p.is_file():
            st.image(str(p), caption=caption, width="content")
    if (folder / "embeddings.png").is_file():
        st.image(str(folder / "embeddings.png"), caption="CLIP embeddings (PCA)", width=560)
    html = folder / "report.html"
    if html.is_file():
        c = st.columns([1, 3])
        c[0].download_button(
            ":material/download: report.html",
            data=html.read_bytes(),
            file_name=f"{folder.name}-report.html",
            mime="text/html",
        )
        with st.expander("Full report (side by side images, details)"):
            st.components.v1.html(html.read_text(encoding="utf-8"), height=900, scrolling=True)


def page() -> None:
    svc = service()
    _start_form(svc)
    job_panel(st.session_state.get("ev_job"), "ev", lambda res: st.success(f"Report written to {res.html_path.parent}"))
    reports = svc.evaluations()
    if not reports:
        st.info(
            "No evaluation reports yet. Run one above, or from the command line: "
            "`lanskap evaluate DATASET --lora NAME`.",
            icon=":material/analytics:",
        )
        return
    names = [p.name for p in reports]
    name = st.selectbox("Report", names, key="ev_pick", help=f"Folders in {svc.settings.evaluations_dir}")
    try_action(lambda: _show(reports[names.index(name)]))
