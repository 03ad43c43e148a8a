"""AUTOMATIC1111's "infotext": the parameters text stored in every image.

Format (A1111 ``create_infotext``)::

    <prompt>
    Negative prompt: <negative>
    Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1, Size: 768x512, ...

Values containing ``,``, ``:`` or a newline are JSON-quoted, as A1111's
``quote()`` does, and parsed back with the same regular expression A1111 uses.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A1111's parameter regex (infotext_utils.re_param_code).
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')

KEY_ORDER = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Seed",
    "Size",
    "Model hash",
    "Model",
    "VAE",
    "Denoising strength",
    "Resize mode",
    "Mask blur",
    "Masked content",
    "Inpaint area",
    "Masked area padding",
    "Outpaint",
    "Tiling",
    "Hires upscale",
    "Hires resize",
    "Hires steps",
    "Hires upscaler",
    "Hires sampler",
    "Hires schedule type",
    "Hires prompt",
    "Hires negative prompt",
    "SD upscale overlap",
    "SD upscale upscaler",
    "SD upscale scale",
    "Postprocess upscale by",
    "Postprocess upscale to",
    "Postprocess crop to",
    "Postprocess upscaler",
    "Postprocess upscaler 2",
    "Clip skip",
    "ENSD",
    "Refiner",
    "Refiner switch at",
    "Token merging ratio",
    "Token merging downsample",
    "Cache interval",
    "Cache start",
    "Lora hashes",
    "Prompt 2",
    "Watermark",
    "Version",
)


def quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return str(json.loads(text))
        except ValueError:
            return text
    return text


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def build_infotext(prompt: str, negative_prompt: str, params: dict[str, Any]) -> str:
    """Join prompt, negative prompt and ``params`` (None values dropped) in A1111's layout."""
    ordered = [k for k in KEY_ORDER if k in params] + [k for k in params if k not in KEY_ORDER]
    line = ", ".join(f"{k}: {quote(params[k])}" for k in ordered if params[k] is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def parse_infotext(text: str) -> dict[str, str]:
    """Parse an infotext into ``{"Prompt", "Negative prompt", key: value...}`` like A1111's PNG Info."""
    result: dict[str, str] = {}
    prompt, negative = "", ""
    done_with_prompt = False
    *lines, last = text.strip().split("\n")
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    for i, line in enumerate(lines):
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[len("Negative prompt:") :].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if i == 0 else "\n") + line
    result["Prompt"] = prompt
    result["Negative prompt"] = negative
    for key, value in _RE_PARAM.findall(last):
        result[key.strip()] = unquote(value.strip())
    if "Schedule type" not in result and result.get("Sampler", "").endswith(" Karras"):
        result["Sampler"] = result["Sampler"][: -len(" Karras")]
        result["Schedule type"] = "Karras"
    return result


def parse_lora_hashes(value: str) -> dict[str, str]:
    """``"name: hash, name2: hash2"`` → ``{name: hash}``."""
    out: dict[str, str] = {}
    for part in value.split(","):
        name, sep, digest = part.strip().rpartition(":")
        if sep and name:
            out[name.strip()] = digest.strip()
    return out


_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")

#: What A1111's ``parse_generation_parameters`` fills in when an infotext leaves a key out.
A1111_DEFAULTS: dict[str, Any] = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Emphasis": "Original",
    "Refiner switch by sampling steps": False,
}


def a1111_parameters(text: str) -> dict[str, Any]:
    """The ``parameters`` A1111's PNG Info answers: values as text, ``WxH`` split into ``-1``/``-2``,
    and A1111's defaults for what the infotext leaves out."""
    parsed = parse_infotext(text)
    out: dict[str, Any] = {}
    for key, value in parsed.items():
        m = _RE_SIZE.match(value) if key not in ("Prompt", "Negative prompt") else None
        if m:
            out[f"{key}-1"], out[f"{key}-2"] = m.group(1), m.group(2)
        else:
            out[key] = value
    for key, value in A1111_DEFAULTS.items():
        out.setdefault(key, value)
    return out
