"""The job layer: one function per kind of job, shared by every front.

``run_generation``, ``run_training``, ``run_evaluation`` and ``run_dataset`` each check
their input once, resolve named resources once, take the GPU lock, do the work with
progress and cancel, save (the gallery, a run folder, a report, a dataset) and write the
job log. The CLI calls them directly; the Service queues the same calls for the API
and the web app. A front only parses its input and presents the result.
"""

from lanskap.jobs.control import JobControl

__all__ = ["JobControl"]
