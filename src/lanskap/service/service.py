"""The long-lived core behind the web app and the HTTP API.

One :class:`Service` per process holds the settings, the one :class:`Engine`
(so the model loads once), the gallery and the job queue. Its ``submit_*``
methods check their inputs at once, so a bad request fails before it waits
in line, and then queue the same core calls the CLI makes (``Engine.generate``
+ ``save_result``, ``train``, ``evaluate``). The shells only draw widgets or
map HTTP onto these methods.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from lanskap.config import Settings
from lanskap.errors import LanskapError
from lanskap.gallery import Gallery
from lanskap.gallery.store import Entry
from lanskap.generation.params import GenerationRequest
from lanskap.io import atomic_write
from lanskap.names import check_name, child
from lanskap.service.queue import Job, JobQueue


@dataclass
class GenerationOutput:
    """What a finished generation job hands back: the engine's result and where each image went."""

    result: Any  # GenerationResult
    paths: list[Path]
    entries: list[Entry | None]

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.entries if e is not None]


@dataclass
class TrainingOutput:
    result: Any  # TrainResult
    published: Path | None  # the LoRA copied into the LoRA folder, ready for the Generate page


@dataclass
class RunInfo:
    """A training run folder as the Training page lists it."""

    name: str
    path: Path
    steps_done: int
    max_steps: int | None
    finished: bool
    checkpoints: list[int] = field(default_factory=list)


class Service:
    """Settings + engine + gallery + queue, shared by every request of a server process."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_pending: int = 16,
        prediction_type: str | None = None,
        engine: Any = None,
    ) -> None:
        from lanskap.generation.engine import Engine

        self.settings = settings
        # LoRAs by name only: the UI and the API never turn a user string into a path.
        self.engine = engine or Engine(settings=settings, prediction_type=prediction_type, allow_lora_paths=False)
        self.start_model = self.engine.model_spec  # always offered, whatever is switched to later
        self.gallery = Gallery(settings.home)
        self.queue = JobQueue(max_pending=max_pending)
        self.started = time.time()

    # -- what can be chosen --------------------------------------------------------------------
    def lora_names(self) -> list[str]:
        from lanskap.generation.lora import list_loras

        return [p.stem for p in list_loras(self.settings)]

    def datasets(self) -> list[Path]:
        """Prepared datasets under ``$LANSKAP_HOME/datasets`` (folders with a dataset.json)."""
        from lanskap.data.layout import MANIFEST

        root = self.settings.datasets_dir
        return sorted(p for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []

    def training_runs(self) -> list[RunInfo]:
        """Run folders in ``$LANSKAP_HOME/training``, most recently changed first."""
        root = self.settings.training_dir
        folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        return [self.run_info(p) for p in sorted(folders, key=lambda q: q.stat().st_mtime, reverse=True)]

    @staticmethod
    def run_info(path: Path) -> RunInfo:
        """One run's progress, read from what the trainer writes."""
        from lanskap.training.adapters import DIFFUSERS_FILE
        from lanskap.training.checkpoint import list_checkpoints
        from lanskap.training.monitor import MetricsLog
        from lanskap.training.trainer import CONFIG_FILE

        rows = [r for r in MetricsLog(path).read() if "loss" in r]
        return RunInfo(
            name=path.name,
            path=path,
            steps_done=rows[-1]["step"] if rows else 0,
            max_steps=_read_yaml(path / CONFIG_FILE).get("max_train_steps"),
            finished=(path / DIFFUSERS_FILE).is_file(),
            checkpoints=[s for s, _ in list_checkpoints(path)],
        )

    def evaluations(self) -> list[Path]:
        """Report folders, newest first."""
        root = self.settings.evaluations_dir
        if not root.is_dir():
            return []
        found = [p for p in root.iterdir() if (p / "report.json").is_file()]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    # -- jobs ----------------------------------------------------------------------------------
    def _submit(self, kind: str, label: str, work: Any) -> Job:
        """Queue ``work`` to run under the cross-process GPU lock (another lanskap process may hold it)."""
        from lanskap.gpulock import gpu_lock

        def locked(job: Job) -> Any:
            def waiting() -> None:
                job.message = "waiting for another lanskap process to finish with the GPU"

            with gpu_lock(self.settings.home, on_wait=waiting):
                return work(job)

        return self.queue.submit(kind, label, locked)

    def submit_load(self, model: str | None = None) -> Job:
        """Load the base model (``model``, an installed one, if given) in the background."""
        spec = self.check_model(model) if model is not None else None

        def work(job: Job) -> dict[str, Any]:
            job.report(0, 1, "loading the base model")
            if spec is not None:
                self.engine.use_model(spec)
            self.engine.load()
            job.report(1, 1, "loaded")
            return self.engine.info()

        return self._submit("load", f"load {self.engine.model_spec}", work)

    def models(self) -> dict[str, str]:
        """The base models a request may name, name → what the engine loads: the starting one first.

        Names only: the model the server was started with is shown by its folder or file name.
        """
        from lanskap.models.resolve import installed_models

        start = self.start_model
        info = self.engine.info()
        # After a fallback the starting model is shown by what was loaded (lanskap-mini), under that name.
        shown = info["model"] if info["loaded"] and self.engine.model_spec == start else model_display_name(start)
        names = {str(shown): start}
        for name in installed_models(self.settings):
            names.setdefault(name, name)
        return names

    def check_model(self, name: str) -> str:
        """What the engine loads for an installed model's name, or a one-line error listing the names."""
        choices = self.models()
        if name not in choices:
            raise LanskapError(f"model {name!r} is not installed; choose one of: {', '.join(choices)}")
        return choices[name]

    def submit_unload(self) -> Job:
        """Drop the base model from memory (A1111's unload-checkpoint); the next job loads it again."""

        def work(job: Job) -> dict[str, Any]:
            self.engine.unload()
            return self.engine.info()

        return self._submit("load", f"unload {self.engine.model_spec}", work)

    def check_generation(self, request: GenerationRequest) -> GenerationRequest:
        """Validate now, including LoRA names, so a bad request never waits in line."""
        from lanskap.generation.lora import resolve_lora
        from lanskap.prompts.lora_tags import extract_lora_tags

        request.validate()
        for spec in [*extract_lora_tags(request.prompt)[1], *request.loras]:
            resolve_lora(spec.name, self.settings, allow_paths=False)
        return request

    def submit_generation(
        self,
        request: GenerationRequest,
        *,
        source: str,
        fmt: str = "png",
        folder: str | None = None,
        record: bool = True,
        model: str | None = None,
    ) -> Job:
        """Queue one generation; its result is a :class:`GenerationOutput` with gallery ids.

        ``model`` (an installed model's name, see :meth:`models`) is switched to before this job runs.
        """
        from lanskap.gallery.record import save_result
        from lanskap.generation.output import check_format

        fmt = check_format(fmt)
        request = self.check_generation(request).with_seed()  # the seed is known (and shown) while waiting
        mode_folder = folder or request.mode
        if model is not None:
            model = self.check_model(model)

        def work(job: Job) -> GenerationOutput:
            def progress(p: Any) -> None:
                batch = f", batch {p.batch} of {p.batches}" if p.batches > 1 else ""
                job.report(p.done, p.total, f"step {p.step} of {p.steps}{batch}")

            if model is not None:
                self.engine.use_model(model)
            job.report(0, request.steps * request.num_images, "loading the model" if not self.engine.loaded else "")
            # Interrupted or skipped, the images so far come back (A1111's habit); only whole ones are saved.
            result = self.engine.generate(
                request, progress=progress, cancel=job.cancel, skip=job.skip, keep_partial=True
            )
            out_dir = self.settings.outputs / mode_folder / date.today().isoformat()
            saved = save_result(result.complete(), out_dir, fmt, self.gallery if record else None, source=source)
            return GenerationOutput(result, [p for p, _ in saved], [e for _, e in saved])

        label = f"{request.mode}: {_short(request.prompt)}"
        return self._submit("generate", label, work)

    def submit_training(self, cfg: Any, name: str, *, resume: bool = False) -> Job:
        """Queue a LoRA training run in ``$LANSKAP_HOME/training/NAME``; on success the LoRA is published."""
        from lanskap.training import train

        run_dir = child(self.settings.training_dir, check_name(name, "run name"), "run name")
        cfg = replace(cfg, out=str(run_dir), resume_from_checkpoint="latest" if resume else cfg.resume_from_checkpoint)
        if not resume and run_dir.exists() and any(run_dir.iterdir()):
            raise LanskapError(f"a training run named {name!r} already exists; resume it or choose another name")
        if resume and not run_dir.is_dir():
            raise LanskapError(f"no training run named {name!r} to resume")
        cfg.check()

        def work(job: Job) -> TrainingOutput:
            self.engine.unload()  # the trainer loads its own copy; don't hold two on the GPU

            def events(e: Any) -> None:
                if e.kind == "step":
                    job.report(e.step, e.total, f"step {e.step} of {e.total}, loss {e.metrics.get('loss', 0):.4f}")
                elif e.kind == "cache":
                    job.report(0, cfg.max_train_steps, f"caching latents {e.step}/{e.total}")
                elif e.message:
                    job.message = e.message

            result = train(cfg, self.settings, events=events, cancel=job.cancel)
            published = None
            if not result.interrupted and result.kohya is not None:
                published = self._publish_lora(result.kohya, name)
            return TrainingOutput(result, published)

        return self._submit("train", f"train {name}", work)

    def _publish_lora(self, source: Path, name: str) -> Path:
        dest = child(self.settings.default_lora_dir, f"{name}.safetensors", "LoRA name")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as src:
            atomic_write(dest, lambda fh: shutil.copyfileobj(src, fh))
        return dest

    @property
    def incoming_dir(self) -> Path:
        """Where raw image folders wait to be prepared (the API takes folder names, never paths)."""
        return self.settings.home / "incoming"

    def submit_dataset(self, source: str, name: str, options: Any = None) -> Job:
        """Queue ``lanskap dataset prepare incoming/SOURCE datasets/NAME`` (captioning uses the GPU)."""
        from lanskap.data.prepare import PrepareOptions, prepare_dataset

        src = child(self.incoming_dir, source, "source folder")
        out = child(self.settings.datasets_dir, name, "dataset name")
        if not src.is_dir():
            raise LanskapError(f"no folder {source!r} in {self.incoming_dir}")
        opts = options or PrepareOptions()
        opts.check()

        def work(job: Job) -> dict[str, Any]:
            def progress(stage: str, done: int, total: int) -> None:
                job.report(done, total, f"{stage} {done}/{total}")

            manifest = prepare_dataset(src, out, opts, progress)
            return {"dataset": name, "path": str(out), "images": len(manifest.get("items", []))}

        return self._submit("dataset", f"dataset {name}", work)

    def submit_evaluation(self, cfg: Any) -> Job:
        """Queue an evaluation; the report lands in ``cfg.out`` (default: a timestamped folder)."""
        from lanskap.evaluation import evaluate

        if not cfg.out:
            cfg = replace(cfg, out=self.settings.evaluations_dir / datetime.now().strftime("%Y%m%d-%H%M%S"))
        cfg.check()

        def work(job: Job) -> Any:
            self.engine.unload()

            def events(e: Any) -> None:
                job.report(e.done, e.total, f"{e.phase} {e.done}/{e.total}" + (f": {e.message}" if e.message else ""))

            return evaluate(cfg, self.settings, events=events, cancel=job.cancel)

        return self._submit("evaluate", f"evaluate → {Path(cfg.out).name}", work)

    # -- monitoring ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Device, memory, loaded model and queue, for the status panel and ``/health``."""
        import psutil

        proc = psutil.Process(os.getpid())
        vm = psutil.virtual_memory()
        memory: dict[str, Any] = {
            "process_rss_mb": round(proc.memory_info().rss / 2**20, 1),
            "system_used_mb": round((vm.total - vm.available) / 2**20, 1),
            "system_total_mb": round(vm.total / 2**20, 1),
        }
        info = self.engine.info()
        if info["device"].startswith("cuda"):
            import torch

            free, total = torch.cuda.mem_get_info()
            memory.update(
                gpu_allocated_mb=round(torch.cuda.memory_allocated() / 2**20, 1),
                gpu_used_mb=round((total - free) / 2**20, 1),
                gpu_total_mb=round(total / 2**20, 1),
                gpu_name=torch.cuda.get_device_name(),
            )
        return {
            "device": info["device"],
            "dtype": info["dtype"],
            "memory": memory,
            "model": info,
            "queue": self.queue.snapshot(),
            "uptime_s": round(time.time() - self.started, 1),
        }


def model_display_name(spec: str) -> str:
    """A model reference as a name: ``/models/sd21`` → ``sd21``, ``owner/name`` stays."""
    path = Path(spec)
    if path.is_absolute() or path.exists():
        return path.stem if path.suffix == ".safetensors" else path.name
    return spec


def _short(text: str, n: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}
