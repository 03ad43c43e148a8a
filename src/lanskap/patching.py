"""Route a module's ``forward`` through a wrapper for one block of code.

The engine changes what a UNet call does for one pipeline call only (panorama windows and
regional prompts in ``generation/compose.py``, ControlNet residuals in ``control/hook.py``),
without subclassing the model or touching diffusers' pipelines. Wrappers stack: one entered later
wraps the one entered before, and each leaving restores what was there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def wrapped_forward(module: Any, wrapper: Callable[..., Any]) -> Iterator[None]:
    """While the block runs, ``module(*a, **k)`` calls ``wrapper(original_forward, *a, **k)``."""
    had = "forward" in module.__dict__
    original: Callable[..., Any] = module.forward
    module.forward = lambda *a, **k: wrapper(original, *a, **k)
    try:
        yield
    finally:
        if had:
            module.forward = original
        else:
            del module.forward
