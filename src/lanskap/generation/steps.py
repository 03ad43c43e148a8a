"""The engine's two seams for new capabilities: extra conditioning, and post-steps.

``Engine.generate`` runs named steps (set-up, denoise, finish). A capability that only adds
pipeline keyword arguments is an :class:`ExtraConditioning`; one that changes the decoded
images before the watermark and infotext is a :class:`PostStep`. Conditioning that has to act
inside every UNet call (ControlNet residuals, panorama windows) wraps the UNet's ``forward`` for
the pipeline call instead (``control/hook.py``, ``generation/compose.py``), readied in the
set-up step (``generation/controlled.py``). Each is added to an engine (``Engine.add_step``) and acts only on the
requests it applies to; it also says what it adds to the infotext, so ``generate --from``
and "use these settings" can restore it. No other step has to change to make room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image

    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest


@runtime_checkable
class ExtraConditioning(Protocol):
    name: str

    def applies(self, request: GenerationRequest) -> bool: ...

    def call_args(self, engine: Engine, request: GenerationRequest, seeds: list[int]) -> dict[str, Any]:
        """Pipeline keyword arguments to add (or replace) for this batch of seeds."""
        ...

    def infotext(self, request: GenerationRequest) -> dict[str, str]: ...


@runtime_checkable
class PostStep(Protocol):
    name: str

    def applies(self, request: GenerationRequest) -> bool: ...

    def __call__(
        self, engine: Engine, request: GenerationRequest, images: list[Image.Image], seeds: list[int]
    ) -> list[Image.Image]:
        """The images after this step (one per input image, in order)."""
        ...

    def infotext(self, request: GenerationRequest) -> dict[str, str]: ...
