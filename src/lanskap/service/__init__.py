"""The process-wide core that the web app and the HTTP API share: one engine, one queue, one gallery."""

from lanskap.service.queue import Job, JobQueue
from lanskap.service.service import GenerationOutput, Service, TrainingOutput

__all__ = ["GenerationOutput", "Job", "JobQueue", "Service", "TrainingOutput"]
