"""The code's shape, checked: short functions, and imports that only go down the layers.

ARCHITECTURE.md draws the layers; this test keeps the code to the drawing.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "lanskap"
MAX_FUNCTION_LINES = 120
# Lower layers never import higher ones (lazily inside a function counts too).
LAYERS = {
    "base": 0,
    "auth": 0,  # the logins file: base modules only
    "models": 1,
    "prompts": 2,
    "upscale": 2,  # upscaler models and tiles: models and base only (SD upscale on the engine is generation's)
    "control": 2,  # ControlNet units, preprocessors, models, depth networks: models and base only
    "generation": 3,
    "gallery": 4,
    "data": 4,
    "training": 5,
    "evaluation": 5,
    "mini": 5,
    "jobs": 6,
    "service": 7,
    "api": 8,
    "ui": 8,
    "cli": 8,
    "scale": 8,  # Ray Serve: the api app in an ingress, Services in replicas; only lanskap serve --replicas imports it
}
# The tiny-model kit builds every kind of tiny model (SD, CLIP, BLIP, the FID Inception net, ESRGAN),
# so it reaches the Inception and RRDBNet architectures; __main__ is the entry point.
ALLOWED = {
    ("lanskap.models.tiny_aux", "lanskap.evaluation.inception"),
    ("lanskap.models.tiny", "lanskap.upscale.rrdbnet"),
    ("lanskap.__main__", "lanskap.cli.main"),
}


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        out.append((name, ast.parse(path.read_text(encoding="utf-8"))))
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else "base"


def test_no_function_is_longer_than_120_lines() -> None:
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_imports_only_go_down_the_layers() -> None:
    climbing = []
    for name, tree in _modules():
        mine = LAYERS[_layer(name)]
        for node in ast.walk(tree):
            target = node.module if isinstance(node, ast.ImportFrom) and node.module else ""
            up = target.startswith("lanskap.") and LAYERS[_layer(target)] > mine
            if up and (name, target) not in ALLOWED:
                climbing.append(f"{name} imports {target}")
    assert not climbing, climbing
