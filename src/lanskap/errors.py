"""Errors a user can act on.

Every failure the user can fix (bad parameter, missing file, wrong LoRA, no
weights) is raised as :class:`LanskapError`. The CLI, API and UI print its
message as one line instead of a traceback, so messages must be complete
sentences that say what to do.
"""

from __future__ import annotations


class LanskapError(Exception):
    """A problem the user can fix; ``str(err)`` is shown as-is, on one line."""

    exit_code: int = 2


class SettingError(LanskapError):
    """A setting's value can't be used. The message names the setting as the core knows it
    (``resolution``); each front adds how its user types it: a flag, a form field, a JSON key."""

    def __init__(self, message: str, *settings: str) -> None:
        super().__init__(message)
        self.settings = settings


class ModelUnavailableError(SettingError):
    """The base model could not be found locally or fetched from the hub."""


class UnsafeFileError(SettingError):
    """A pickled weights file was refused because pickle opt-in was not given."""


class CorruptFileError(LanskapError):
    """A weights file is truncated or not a valid safetensors file."""


class LoraError(LanskapError):
    """A LoRA is missing, corrupt or made for another base model."""


class OutOfMemoryError(SettingError):
    """Generation ran out of device memory."""


class CancelledError(LanskapError):
    """The job was interrupted by the user."""

    exit_code = 130


class QueueFullError(LanskapError):
    """The job queue is full; the caller should try again later (HTTP 503)."""

    exit_code = 75  # EX_TEMPFAIL
