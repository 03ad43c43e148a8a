"""ControlNet on the command line: ``--control`` units on every generating command, the control maps
saved beside the images, and ``lanskap control`` (list models and preprocessors, run one)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from lanskap.errors import LanskapError

if TYPE_CHECKING:
    from lanskap.control.units import ControlUnit

SPEC_HELP = (
    "MODULE:IMAGE[:WEIGHT[:START[:END[:MODE]]]], then any of model=NAME resize=crop|fill|just-resize res=N "
    "a=N b=N pixel=on hr=both|low|high; MODE balanced, prompt or control; repeatable (at most 3)."
)
#: (name, type, typer option), added to REQUEST_FLAGS by cli/options.py.
CONTROL_FLAGS: list[tuple[str, Any, Any]] = [
    ("control", list[str], typer.Option(None, "--control", metavar="<spec>", help="A ControlNet unit: " + SPEC_HELP)),
    (
        "control_image",
        list[Path],
        typer.Option(
            None, "--control-image", metavar="<path>", help="With --from: the pictures of the recorded units, in order."
        ),
    ),
]
_HR = {"both": "Both", "low": "Low res only", "high": "High res only"}


def parse_spec(spec: str) -> ControlUnit:
    """One ``--control`` value as a unit (its picture read and checked)."""
    from lanskap.control.units import ControlUnit, control_mode, resize_mode
    from lanskap.images import load_rgb

    parts = spec.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise LanskapError(f"--control {spec!r}: give MODULE:IMAGE, e.g. canny:edges.png:0.8")
    module, image = parts[0], parts[1]
    named = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in parts[2:] if "=" in p)}
    plain = [p for p in parts[2:] if "=" not in p]
    fields: dict[str, Any] = {}
    try:
        for name, text in zip(("weight", "guidance_start", "guidance_end"), plain[:3], strict=False):
            fields[name] = float(text)
        if len(plain) > 3:
            fields["control_mode"] = control_mode(plain[3])
        if len(plain) > 4:
            raise LanskapError(f"--control {spec!r}: too many parts")
        for key, value in named.items():
            if key == "model":
                fields["model"] = value
            elif key == "resize":
                fields["resize_mode"] = resize_mode(value)
            elif key == "res":
                fields["processor_res"] = int(value)
            elif key in ("a", "b"):
                fields[f"threshold_{key}"] = float(value)
            elif key == "hr" and value.lower() in _HR:
                fields["hr_option"] = _HR[value.lower()]
            elif key == "pixel" and value.lower() in ("on", "off"):
                fields["pixel_perfect"] = value.lower() == "on"
            elif key == "mode":
                fields["control_mode"] = control_mode(value)
            else:
                raise LanskapError(f"--control {spec!r}: unknown setting {key}={value}")
    except ValueError:
        raise LanskapError(f"--control {spec!r}: weight, start, end, res, a and b must be numbers") from None
    return ControlUnit(load_rgb(Path(image), what="control image"), module=module, **fields)


def control_fields(clean: dict[str, Any]) -> None:
    """Replace ``--control``/``--control-image`` in ``clean`` by ``control`` units, over any recorded ones."""
    given, images = clean.pop("control", None) or [], clean.pop("control_image", None) or []
    # --control texts, or the units --from restored (whose pictures are missing)
    specs = [s for s in given if isinstance(s, str)]
    recorded: tuple[ControlUnit, ...] = tuple(u for u in given if not isinstance(u, str))
    if specs:
        clean["control"] = tuple(parse_spec(s) for s in specs)
    elif recorded:
        from lanskap.images import load_rgb

        if len(images) != len(recorded):
            raise LanskapError(
                f"the image was made with {len(recorded)} ControlNet unit(s), whose pictures no infotext holds; "
                f"give {len(recorded)} --control-image (in order), or new --control units"
            )
        clean["control"] = tuple(
            replace(unit, image=load_rgb(path, what="control image"))
            for unit, path in zip(recorded, images, strict=True)
        )
    elif images:
        raise LanskapError("--control-image fills the units of --from; for new units use --control MODULE:IMAGE")


def save_maps(maps: dict[str, Any], first: Path) -> list[Path]:
    """Each control map as ``<first image>-controlnet0.png``, ``-depth.png``, … beside the images."""
    from lanskap.io import atomic_write

    paths = []
    for key, image in maps.items():
        path = first.with_name(f"{first.stem}-{key.lower().replace(' ', '')}.png")
        atomic_write(path, lambda fh, im=image: im.save(fh, format="PNG"))
        paths.append(path)
    return paths


app = typer.Typer(help="ControlNet: installed models, preprocessors, and a preprocessor run on a picture.")


@app.command("list")
def list_cmd() -> None:
    """The ControlNet models in $LANSKAP_HOME/controlnet and the preprocessors."""
    from lanskap.config import load_settings
    from lanskap.control import models, preprocess

    settings = load_settings()
    found = models.installed(settings)
    typer.echo(f"models ({settings.controlnet_dir}):")
    for m in found:
        typer.echo(f"  {m.title}")
    if not found:
        typer.echo("  none; put ControlNet .safetensors files (e.g. the controlnet-sd21 family) there")
    typer.echo("preprocessors: " + ", ".join(preprocess.PREPROCESSORS))


@app.command("detect")
def detect_cmd(
    image: Path = typer.Argument(..., help="The picture to preprocess."),
    module: str = typer.Option("canny", "--module", help="canny, depth_midas, depth_anything, invert, binary, …"),
    res: int = typer.Option(512, "--res", help="Preprocessor resolution (the short side), 64-2048."),
    threshold_a: float = typer.Option(-1, "--threshold-a", help="The module's first setting [its default]."),
    threshold_b: float = typer.Option(-1, "--threshold-b", help="The module's second setting [its default]."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the map (.png)."),
    device: str = typer.Option(None, "--device", help="auto, cuda, mps or cpu (depth models)."),
) -> None:
    """Run a preprocessor on IMAGE and save its control map."""
    from lanskap.config import load_settings
    from lanskap.control.hook import Controls
    from lanskap.control.units import ControlUnit
    from lanskap.images import load_rgb
    from lanskap.io import atomic_write
    from lanskap.models.device import resolve_placement

    settings = load_settings(device=device)
    unit = ControlUnit(load_rgb(image, what="control image"), module=module, processor_res=res,
                       threshold_a=threshold_a, threshold_b=threshold_b).validate()  # fmt: skip
    controls = Controls(settings, resolve_placement(settings.device, "fp32"))
    result = controls.detect(unit, *unit.image.size)  # type: ignore[union-attr]
    atomic_write(out, lambda fh: result.save(fh, format="PNG"))
    typer.echo(str(out))
