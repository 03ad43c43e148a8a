"""Training page: start a LoRA run from a prepared dataset with a preset, watch it live, stop or resume it.

The run itself is ``lanskap.training.train`` in the Service's queue; this page
only reads what the trainer writes (``metrics.jsonl``, validation images,
checkpoints), so it also shows runs started from the CLI into the same folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from lanskap.ui.common import job_panel, service, try_action

if TYPE_CHECKING:
    import pandas as pd

    from lanskap.service.queue import Job
    from lanskap.service.service import RunInfo, Service, TrainingOutput


def _active_training(svc: Service, name: str) -> Job | None:
    for job in [svc.queue.current, *svc.queue.pending()]:
        if job is not None and job.kind == "train" and job.label == f"train {name}":
            return job
    return None


#: The form's fields and the TrainConfig settings they show; a preset fills them all.
FORM_FIELDS = {
    "tr-steps": "max_train_steps",
    "tr-rank": "rank",
    "tr-lr": "learning_rate",
    "tr-res": "resolution",
    "tr-every": "checkpointing_steps",
    "tr-vsteps": "validation_inference_steps",
    "tr-warmup": "lr_warmup_steps",
}


def warmup_cap(steps: int) -> int:
    """At most a tenth of the run warms up: a 20-step run must reach the learning rate it was given."""
    return max(0, int(steps) // 10)


def _fill_from_preset() -> None:
    """Put the chosen preset's values in the form, so the form shows what will run."""
    from lanskap.training import build_config

    cfg = build_config(st.session_state.get("tr-preset", "default"), None, {})
    for key, name in FORM_FIELDS.items():
        value = getattr(cfg, name)
        st.session_state[key] = value if value is not None else 0  # resolution None: the model's own
    st.session_state["tr-warmup"] = min(cfg.lr_warmup_steps, warmup_cap(cfg.max_train_steps))


def _start_form(svc: Service) -> None:
    from lanskap.training import build_config
    from lanskap.training.config import PRESETS

    datasets = svc.datasets()
    if "tr-steps" not in st.session_state:
        _fill_from_preset()
    # Outside the form, so picking a preset fills the fields at once.
    preset = st.selectbox(
        "Preset",
        list(PRESETS),
        key="tr-preset",
        on_change=_fill_from_preset,
        help="Fills the form below. default: ~50 images; thesis: the thesis's run.",
    )
    method = st.selectbox(
        "Method",
        list(METHOD_LABELS),
        format_func=METHOD_LABELS.get,
        key="tr-method",
        help="LoRA: a style or subject as small adapters. Textual inversion: a new word (embedding). "
        "DreamBooth: a subject under an instance prompt, as a LoRA or a whole fine-tuned model.",
    )
    with st.form("train-start", border=True):
        st.markdown(f"**Start a {METHOD_LABELS[method]} training run**")
        choices = [str(p) for p in datasets]
        c = st.columns([3, 2])
        picked = c[0].selectbox(
            "Prepared dataset",
            choices or ["(none found)"],
            key="tr-dataset",
            help=f"Made by 'lanskap dataset prepare' or 'lanskap mini dataset', under {svc.settings.datasets_dir}.",
        )
        path = c[1].text_input("…or a dataset path", placeholder="/data/my-set", key="tr-path")
        c = st.columns(4)
        name = c[0].text_input("Run name", "my-landscape-lora", key="tr-name", help="Also the LoRA's name in Generate.")
        steps = c[1].number_input("Steps", 1, 100_000, key="tr-steps")
        rank = c[2].number_input("LoRA rank", 1, 256, key="tr-rank", disabled=method == "textual-inversion")
        lr = c[3].number_input("Learning rate", 1e-6, 1e-2, step=1e-5, format="%.2e", key="tr-lr")
        c = st.columns(4)
        resolution = c[0].number_input("Resolution (0 = model's)", 0, 2048, step=64, key="tr-res")
        warmup = c[1].number_input(
            "Warm-up steps", 0, 10_000, key="tr-warmup", help="The learning rate climbs for this many steps (≤ 10%)."
        )
        every = c[2].number_input("Checkpoint every", 1, 100_000, key="tr-every", help="And validation images.")
        val_steps = c[3].number_input("Validation steps", 1, 150, key="tr-vsteps")
        prompt = st.text_input("Validation prompt (empty = the thesis prompt)", key="tr-vprompt")
        extra = _method_fields(method)
        go = st.form_submit_button("Start training", type="primary", key="tr-go")
    if not go:
        return
    data = path.strip() or (picked if choices else "")
    overrides = {
        **extra,
        "method": method,
        "data": data,
        "max_train_steps": int(steps),
        "rank": int(rank) if method == "lora" or (method == "dreambooth" and not extra.get("full")) else None,
        "learning_rate": float(lr),
        "resolution": int(resolution) or None,
        "lr_warmup_steps": min(int(warmup), warmup_cap(int(steps))),
        "checkpointing_steps": int(every),
        "validation_inference_steps": int(val_steps),
        "validation_prompt": [prompt] if prompt.strip() else None,
        "output_name": name,
    }

    def submit() -> Job:
        if not data:
            from lanskap.errors import LanskapError

            raise LanskapError("choose a prepared dataset or type its path")
        return svc.submit_training(build_config(preset, None, overrides), name)

    job = try_action(submit)
    if job is not None:
        st.session_state["tr_run"] = name
        st.toast(f"Training {name} queued.", icon=":material/model_training:")
        st.rerun()  # the run list shows it now, not after the next click


METHOD_LABELS = {"lora": "LoRA", "textual-inversion": "textual inversion", "dreambooth": "DreamBooth"}


def _method_fields(method: str) -> dict[str, Any]:
    """The form's fields for what only one method has (the rest of the form is the same for all)."""
    if method == "textual-inversion":
        c = st.columns([3, 3, 1])
        token = c[0].text_input("Token", "<my-style>", key="tr-token", help="The new word; the file is named after it.")
        init = c[1].text_input("Initial word", "painting", key="tr-init", help="The vectors start from this word's.")
        vectors = c[2].number_input("Vectors", 1, 75, 4, key="tr-vectors")
        return {"token": token, "init_word": init or "*", "vectors": int(vectors)}
    if method == "dreambooth":
        c = st.columns(2)
        instance = c[0].text_input("Instance prompt", "a photo of sks castle", key="tr-instance")
        klass = c[1].text_input("Class prompt", "a photo of a castle", key="tr-class")
        c = st.columns([2, 2, 2, 2])
        prior = c[0].checkbox("Prior preservation", True, key="tr-prior", help="Keeps the class as it was.")
        count = c[1].number_input("Class pictures", 1, 10_000, 100, key="tr-nclass")
        weight = c[2].number_input("Prior loss weight", 0.01, 10.0, 1.0, key="tr-prior-w")
        full = c[3].checkbox("Full fine-tune", False, key="tr-full", help="The whole UNet instead of a LoRA.")
        return {"instance_prompt": instance, "class_prompt": klass or None, "prior_preservation": prior,
                "num_class_images": int(count), "prior_loss_weight": float(weight), "full": full or None}  # fmt: skip
    return {}


def loss_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The loss, its EMA and the held-out eval_loss against real step numbers (one row per point)."""
    import pandas as pd

    from lanskap.training.monitor import smoothed

    losses = [r for r in rows if "loss" in r]
    raw = [r["loss"] for r in losses]
    points = [(r["step"], "loss", r["loss"]) for r in losses]
    points += [(r["step"], "loss (EMA 0.9)", v) for r, v in zip(losses, smoothed(raw), strict=True)]
    points += [(r["step"], "eval_loss", r["eval_loss"]) for r in rows if "eval_loss" in r]
    return pd.DataFrame(points, columns=["step", "series", "value"])


def _resume(svc: Service, run: RunInfo) -> None:
    from lanskap.training import build_config
    from lanskap.training.layout import RunLayout

    def submit() -> Job:
        cfg = build_config(None, RunLayout(run.path).config, {})
        return svc.submit_training(cfg, run.name, resume=True)

    if try_action(submit) is not None:
        st.toast(f"Resuming {run.name}.", icon=":material/play_arrow:")


def _try_in_generate(lora: str) -> None:

    st.session_state["g_lora"] = lora
    st.session_state["g_pending_page"] = "generate"


def _show_run(svc: Service, run: RunInfo) -> None:
    from lanskap.training.layout import RunLayout
    from lanskap.training.monitor import MetricsLog

    job = _active_training(svc, run.name)
    total = run.max_steps or 0
    state = "running" if job and job.state == "running" else "waiting in the queue" if job else None
    if state is None:
        state = "finished" if run.finished else f"stopped at step {run.steps_done}" if run.steps_done else "not started"
    st.markdown(f"**{run.name}** · {state} · step {run.steps_done} of {total or '?'} · `{run.path}`")
    if total:
        st.progress(min(1.0, run.steps_done / total))
    c = st.columns(4)
    if job is not None:
        if c[0].button(":material/stop: Stop", key="tr-stop", help="Saves a checkpoint at the next step."):
            svc.queue.cancel(job.id)
            st.toast("Stopping after this step; a checkpoint is saved.", icon=":material/stop_circle:")
    elif (
        not run.finished
        and run.checkpoints
        and c[0].button(":material/play_arrow: Resume", key="tr-resume", type="primary", help="From the checkpoint.")
    ):
        _resume(svc, run)
        st.rerun()
    elif run.finished and run.name in svc.lora_names():
        c[0].button(
            ":material/brush: Try it in Generate",
            key="tr-try",
            type="primary",
            on_click=_try_in_generate,
            args=(run.name,),
            help="Opens Generate with this LoRA selected.",
        )
    rows = MetricsLog(run.path).read()
    losses = [r for r in rows if "loss" in r]
    if losses:
        st.line_chart(loss_table(rows), x="step", y="value", color="series", x_label="step", y_label="loss", height=260)
        last = losses[-1]
        st.caption(f"step {last['step']}: loss {last['loss']:.4f}, learning rate {last.get('lr', 0):.2e}")
    layout = RunLayout(run.path)
    folders = layout.validation_steps()
    if folders:
        step, latest = folders[-1]
        shots = sorted(latest.glob("*.png"))
        label = "the base model" if step == 0 else f"step {step}"
        st.markdown(f"**Validation images** ({label})")
        cols = st.columns(max(1, min(4, len(shots))))
        for i, shot in enumerate(shots):
            cols[i % len(cols)].image(str(shot), caption=shot.stem, width="stretch")
    for picture, caption in ((layout.loss_curve, "Loss curve"), (layout.grid, "Validation images over the run")):
        if picture.is_file() and run.finished:
            st.image(str(picture), caption=caption)


def page() -> None:
    svc = service()
    if st.session_state.pop("g_pending_page", None) == "generate":  # "Try it in Generate" was clicked
        from lanskap.ui import nav

        st.switch_page(nav.page("generate"))
    _start_form(svc)
    runs = svc.training_runs()
    known = {r.name for r in runs}
    for job in [svc.queue.current, *svc.queue.pending()]:  # queued runs have no folder yet: show them too
        queued = job.label.removeprefix("train ") if job is not None and job.kind == "train" else None
        if queued is not None and queued not in known:
            runs.insert(0, svc.run_info(svc.settings.training_dir / queued))
    if not runs:
        st.info("No training runs yet. Prepare a dataset with 'lanskap dataset prepare', then start one above.")
        return
    names = [r.name for r in runs]
    current = st.session_state.get("tr_run")
    index = names.index(current) if current in names else 0
    name = st.selectbox("Run", names, index=index, key="tr_pick")
    st.session_state["tr_run"] = name
    run = next(r for r in runs if r.name == name)
    live = _active_training(svc, name) is not None

    @st.fragment(run_every=2 if live else None)
    def watch() -> None:
        fresh = svc.run_info(run.path)
        if live and _active_training(svc, name) is None:
            st.rerun()  # finished: redraw the whole page without polling
        _show_run(svc, fresh)

    watch()
    finished = [j for j in svc.queue.recent(20) if j.kind == "train" and j.label == f"train {name}"]
    if finished:
        job_panel(finished[0].id, "tr-job", lambda out: _published(out))


def _published(out: TrainingOutput) -> None:
    if getattr(out, "published", None):
        name, method = Path(out.published).stem, out.result.config.method
        ready = f"LoRA ready: {name} is now in the Generate page's LoRA list."
        if method == "textual-inversion":
            ready = f"Embedding ready: write {name} in a prompt (it is in the Generate page's embedding list)."
        elif method == "dreambooth" and out.result.config.full:
            ready = f"Model ready: {name} is in the models folder; switch to it in the header."
        st.success(ready, icon=":material/celebration:")
    elif out.result.interrupted:
        st.info("Stopped; the latest checkpoint is saved, so Resume continues from it.", icon=":material/pause_circle:")
