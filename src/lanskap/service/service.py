"""The long-lived core behind the web app and the HTTP API.

One :class:`Service` per process holds the settings, the one :class:`Engine`
(so the model loads once), the gallery and the job queue. Its ``submit_*``
methods check their inputs at once, so a bad request fails before it waits
in line, and then queue the same job functions the CLI calls (``lanskap/jobs``:
``run_generation``, ``run_training``, ``run_evaluation``, ``run_dataset``). The
shells only draw widgets or map HTTP onto these methods.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanskap.config import Settings
from lanskap.errors import LanskapError, SettingError
from lanskap.gallery import Gallery
from lanskap.generation.params import GenerationRequest
from lanskap.jobs import JobControl
from lanskap.jobs.generation import GenerationOutput, check_generation, output_folder, run_generation
from lanskap.jobs.training import TrainingOutput
from lanskap.names import child
from lanskap.service.queue import Job, JobQueue

if TYPE_CHECKING:
    from PIL import Image

    from lanskap.data.prepare import PrepareOptions
    from lanskap.evaluation.run import EvalConfig, EvalResult
    from lanskap.generation.engine import Engine
    from lanskap.generation.upscale_params import UpscaleRequest
    from lanskap.jobs.upscale import UpscaleOutput, UpscaleSource
    from lanskap.training.config import TrainConfig

__all__ = ["GenerationOutput", "RunInfo", "Service", "TrainingOutput"]


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
        engine: Engine | None = None,
    ) -> None:
        from lanskap.generation.engine import Engine

        self.settings = settings
        # LoRAs by name only: the UI and the API never turn a user string into a path.
        self.engine = engine or Engine(settings=settings, prediction_type=prediction_type, allow_lora_paths=False)
        self.start_model = self.engine.model_spec  # always offered, whatever is switched to later
        self.gallery = Gallery.open(settings)
        self.queue = JobQueue(max_pending=max_pending)
        self.started = time.time()

    # -- what can be chosen --------------------------------------------------------------------
    def lora_names(self) -> list[str]:
        from lanskap.generation.lora import list_loras

        return [p.stem for p in list_loras(self.settings)]

    def embedding_names(self) -> list[str]:
        """The embeddings a prompt may name on the current model (the folder's, width-checked)."""
        from lanskap.generation.networks import embedding_listing

        return list(embedding_listing(self.engine)["loaded"])

    def hypernetwork_names(self) -> list[str]:
        from lanskap.generation.networks import hypernetwork_listing

        return [h["name"] for h in hypernetwork_listing(self.settings)]

    def datasets(self) -> list[Path]:
        """Trainable datasets under ``$LANSKAP_HOME/datasets``: folders with a dataset.json (``lanskap
        dataset prepare``) or a ``train/metadata.jsonl`` (``lanskap mini dataset``, diffusers' layout)."""
        from lanskap.data.layout import MANIFEST
        from lanskap.folders import inside

        root = self.settings.datasets_dir
        if not root.is_dir():
            return []
        found = [
            p
            for p in root.iterdir()
            if inside(p, root) and ((p / MANIFEST).is_file() or (p / "train" / "metadata.jsonl").is_file())
        ]
        return sorted(found)

    def training_runs(self) -> list[RunInfo]:
        """Run folders in ``$LANSKAP_HOME/training``, most recently changed first."""
        root = self.settings.training_dir
        folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        return [self.run_info(p) for p in sorted(folders, key=lambda q: q.stat().st_mtime, reverse=True)]

    @staticmethod
    def run_info(path: Path) -> RunInfo:
        """One run's progress, read from what the trainer writes."""
        from lanskap.training.checkpoint import list_checkpoints
        from lanskap.training.layout import RunLayout
        from lanskap.training.monitor import MetricsLog

        layout = RunLayout(path)
        rows = [r for r in MetricsLog(path).read() if "loss" in r]
        return RunInfo(
            name=path.name,
            path=path,
            steps_done=rows[-1]["step"] if rows else 0,
            max_steps=_read_yaml(layout.config).get("max_train_steps"),
            finished=layout.finished,
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
    def _submit(
        self, kind: str, label: str, work: Callable[[Job], object], params: dict[str, Any] | None = None
    ) -> Job:
        """Queue ``work`` to run under the cross-process GPU lock (another lanskap process may hold it)."""
        from lanskap.gpulock import gpu_lock

        def locked(job: Job) -> object:
            def waiting() -> None:
                job.message = "waiting for another lanskap process to finish with the GPU"

            with gpu_lock(self.settings.home, on_wait=waiting):
                return work(job)

        return self.queue.submit(kind, label, locked, params)

    def submit_load(self, model: str | None = None) -> Job:
        """Load the base model (``model``, an installed one, if given) in the background."""
        spec = self.check_model(model) if model is not None else None

        def work(job: Job) -> dict[str, Any]:
            job.report(0, 1, "loading the base model")
            if spec is not None:
                self.engine.use_model(spec)
            self.engine.load()
            job.report(1, 1, "loaded")
            return self.engine.info().to_dict()

        return self._submit("load", f"load {self.engine.model_spec}", work)

    def models(self) -> dict[str, str]:
        """The base models a request may name, name → what the engine loads: the starting one first.

        Names only: the model the server was started with is shown by its folder or file name.
        """
        from lanskap.models.resolve import installed_models

        start = self.start_model
        info = self.engine.info()
        # After a fallback the starting model is shown by what was loaded (lanskap-mini), under that name.
        shown = info.model if info.loaded and self.engine.model_spec == start else model_display_name(start)
        names = {str(shown): start}
        for name in installed_models(self.settings):
            names.setdefault(name, name)
        return names

    def model_families(self) -> dict[str, str | None]:
        """Each installed model's family (name → label), from its configs or tensor names without
        loading it, in one scan of the models (None: unknown, as for a hub id not yet fetched)."""
        from lanskap.models.resolve import family_label

        info = self.engine.info()
        loaded = self.engine.model_spec if info.loaded else None
        return {name: info.family if spec == loaded else family_label(spec, self.settings)
                for name, spec in self.models().items()}  # fmt: skip

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
            return self.engine.info().to_dict()

        return self._submit("load", f"unload {self.engine.model_spec}", work)

    def check_generation(self, request: GenerationRequest) -> GenerationRequest:
        """Validate now, including LoRA names, so a bad request never waits in line."""
        from dataclasses import replace

        # the engine's model, which a job or the options may have switched to, decides what fits it
        return check_generation(request, replace(self.settings, model=self.engine.model_spec), allow_paths=False)

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
        request, fmt, model, label = self.generation_checks(request, fmt, model)
        out_dir = output_folder(self.settings, folder or request.task)

        def work(job: Job) -> GenerationOutput:
            if model is not None:
                self.engine.use_model(model)
            gallery = self.gallery if record else None
            return run_generation(self.engine, request, out_dir, fmt=fmt, gallery=gallery, source=source,
                                  control=_control(job))  # fmt: skip

        return self._submit("generate", label, work, request.to_dict())

    def generation_checks(
        self, request: GenerationRequest, fmt: str, model: str | None
    ) -> tuple[GenerationRequest, str, str | None, str]:
        """What every way of submitting a generation checks first: the request (its seed fixed, so it is
        known and shown while waiting), the file format and the model's name; with the job's label."""
        from lanskap.generation.output import check_format

        fmt = check_format(fmt)
        request = self.check_generation(request)
        spec = self.check_model(model) if model is not None else None
        return request, fmt, spec, f"{request.task}: {_short(request.prompt)}"

    def check_upscale(self, request: UpscaleRequest, images: list[Image.Image]) -> UpscaleRequest:
        """Bounds, upscaler and LoRA names, and every result's size, checked before the job waits in line."""
        from lanskap.jobs.upscale import check_sizes, check_upscale

        request = check_upscale(request, self.settings, allow_paths=False)
        check_sizes(request, images)
        return request

    def submit_upscale(
        self, request: UpscaleRequest, sources: list[UpscaleSource], *, source: str, fmt: str = "png",
        record: bool = True,
    ) -> Job:  # fmt: skip
        """Queue an upscale (Extras, or SD upscale); its result is an :class:`UpscaleOutput` with gallery ids."""
        from lanskap.jobs.upscale import run_upscale

        request, fmt, label = self.upscale_checks(request, sources, fmt)
        out_dir = output_folder(self.settings, "upscale")

        def work(job: Job) -> UpscaleOutput:
            gallery = self.gallery if record else None
            return run_upscale(self.engine, sources, request, out_dir, fmt=fmt, gallery=gallery, source=source,
                               control=_control(job))  # fmt: skip

        return self._submit("upscale", label, work, {"mode": "upscale", "upscale": request.to_dict()})

    def upscale_checks(
        self, request: UpscaleRequest, sources: list[UpscaleSource], fmt: str
    ) -> tuple[UpscaleRequest, str, str]:
        """What every way of submitting an upscale checks first (bounds, names, sizes, format); with its label."""
        from lanskap.generation.output import check_format

        fmt = check_format(fmt)
        request = self.check_upscale(request, [s.image for s in sources])
        what = "SD upscale" if request.tiled is not None else f"upscale ({request.upscaler})"
        return request, fmt, f"{what}: {len(sources)} picture(s)"

    def submit_training(self, cfg: TrainConfig, name: str, *, resume: bool = False) -> Job:
        """Queue a training run in ``$LANSKAP_HOME/training/NAME``; its LoRA, embedding or model is published."""
        from lanskap.jobs.training import named_run, run_training

        cfg = named_run(self.settings, cfg, name, resume=resume)

        def work(job: Job) -> TrainingOutput:
            self.engine.unload()  # the trainer loads its own copy; don't hold two on the GPU
            return run_training(cfg, self.settings, control=_control(job), publish_as=name)

        return self._submit("train", f"train {name}", work)

    @property
    def incoming_dir(self) -> Path:
        """Where raw image folders wait to be prepared (the API takes folder names, never paths)."""
        return self.settings.home / "incoming"

    def submit_dataset(self, source: str, name: str, options: PrepareOptions | None = None) -> Job:
        """Queue ``lanskap dataset prepare incoming/SOURCE datasets/NAME`` (captioning uses the GPU)."""
        from lanskap.data.prepare import PrepareOptions
        from lanskap.jobs.dataset import run_dataset

        src = child(self.incoming_dir, source, "source folder")
        out = child(self.settings.datasets_dir, name, "dataset name")
        if not src.is_dir():
            raise LanskapError(f"no folder {source!r} in {self.incoming_dir}")
        opts = options or PrepareOptions()
        opts.check()

        def work(job: Job) -> dict[str, Any]:
            manifest = run_dataset(src, out, opts, self.settings, control=_control(job))
            return {"dataset": name, "path": str(out), "images": len(manifest.get("items", []))}

        return self._submit("dataset", f"dataset {name}", work)

    def metric_model(self, name: str | None, what: str, setting: str) -> str | None:
        """An installed metric model named by a client: a folder or file directly in the models folder.

        The servers take names, never paths, so a request can't point a loader at any file on the
        server, nor learn which paths exist. ``None`` stays None (the default), and "none" is kept
        for the config to read as "skip this metric".
        """
        if name is None or name.strip().lower() == "none":
            return name
        from lanskap.folders import check_entry, escapes, inside

        root = self.settings.models_dir
        path = child(root, name, f"{what} name")
        if not path.exists():
            raise SettingError(f"no {what} named {name!r} is installed in the models folder", setting)
        # The folder rules of every scan: nothing in it may lead out of the models folder, or block.
        if not inside(path, root):
            problem = "it is a link that leads out of the models folder"
        elif path.is_dir():
            found = escapes(path, root)
            problem = f"{found[0].rel} is {found[0].reason}" if found else None
        else:
            problem = check_entry(path, root, name)
        if problem:
            raise SettingError(f"the {what} {name!r} can't be used: {problem}", setting)
        return str(path)

    def submit_evaluation(self, cfg: EvalConfig) -> Job:
        """Queue an evaluation; the report lands in ``cfg.out`` (default: a timestamped folder)."""
        from lanskap.jobs.evaluation import report_folder, run_evaluation

        cfg = report_folder(self.settings, cfg)

        def work(job: Job) -> EvalResult:
            self.engine.unload()
            return run_evaluation(cfg, self.settings, control=_control(job))

        return self._submit("evaluate", f"evaluate → {Path(cfg.out).name}", work)

    # -- monitoring ----------------------------------------------------------------------------
    def replicas(self) -> list[dict[str, Any]]:
        """The replicas that run this server's jobs: none here, one process does (see lanskap.scale)."""
        return []

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
        if info.device.startswith("cuda"):
            import torch

            free, total = torch.cuda.mem_get_info()
            memory.update(
                gpu_allocated_mb=round(torch.cuda.memory_allocated() / 2**20, 1),
                gpu_used_mb=round((total - free) / 2**20, 1),
                gpu_total_mb=round(total / 2**20, 1),
                gpu_name=torch.cuda.get_device_name(),
            )
        return {
            "device": info.device,
            "dtype": info.dtype,
            "memory": memory,
            "model": info.to_dict(),
            "queue": self.queue.snapshot(),
            "uptime_s": round(time.time() - self.started, 1),
            # where the gallery's rows live: the home's SQLite file, or PostgreSQL (its URL without the password)
            "gallery": {
                "backend": "sqlite" if self.gallery.db is not None else "postgresql",
                "location": self.gallery.location,
            },
        }


def _control(job: Job) -> JobControl:
    """A queued job as the job functions see it: its progress, cancel and skip."""

    def note(message: str) -> None:
        job.message = message

    def preview(latents: Any) -> None:
        job.latents = latents.detach()

    return JobControl(report=job.report, cancel=job.cancel, skip=job.skip, note=note, preview=preview)


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
