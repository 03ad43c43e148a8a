"""Preprocessors: a picture in, a control map out, under the ControlNet extension's module names.

``controlnet_aux`` can't be used (it requires torchvision and timm), so the model-free ones are
written here with OpenCV, each following the extension's own arithmetic (``annotator`` and
``scripts/processor.py``): canny, invert, binary, scribble_xdog and lineart_standard. The soft
edge networks (HED, PiDiNet) have no transformers port; ``softedge_opencv`` is a plain OpenCV
soft edge (smoothed gradient strength). The depth ones run transformers' DPT or Depth Anything
(``control/depth.py``). Like the extension, a picture is first scaled so its short side is the
processor resolution, and the map is fitted to the output size afterwards (:func:`fit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from lanskap.errors import LanskapError

if TYPE_CHECKING:
    from lanskap.control.depth import Estimators
    from lanskap.control.units import ControlUnit

Run = Callable[[np.ndarray, float, float, "Estimators | None"], np.ndarray]


@dataclass(frozen=True)
class Preprocessor:
    name: str
    kind: str  # the control type a matching model is named after (canny, depth, scribble, …)
    run: Run
    defaults: tuple[float, float] = (-1, -1)  # threshold_a, threshold_b
    sliders: list[dict[str, Any]] = field(default_factory=list)  # the extension's module_detail sliders

    @property
    def model_free(self) -> bool:
        return self.kind != "depth"


def _hwc3(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[:, :, :3]


def _none(img: np.ndarray, a: float, b: float, est: Estimators | None) -> np.ndarray:
    return img


def _invert(img: np.ndarray, a: float, b: float, est: Estimators | None) -> np.ndarray:
    return 255 - img


def _canny(img: np.ndarray, a: float, b: float, est: Estimators | None) -> np.ndarray:
    import cv2

    return _hwc3(cv2.Canny(img, int(a), int(b)))


def _binary(img: np.ndarray, a: float, b: float, est: Estimators | None) -> np.ndarray:
    """Dark strokes on light paper become white lines on black; threshold 0 picks one (Otsu)."""
    import cv2

    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if a <= 0 or a >= 255:
        _, out = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    else:
        _, out = cv2.threshold(grey, int(a), 255, cv2.THRESH_BINARY_INV)
    return _hwc3(out)


def _scribble_xdog(img: np.ndarray, a: float, b: float, est: Estimators | None) -> np.ndarray:
    import cv2

    g1 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.5)
    g2 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
    out = np.zeros_like(img, dtype=np.uint8)
    out[2 * (255 - dog) > a] = 255
    return out


def _lineart_standard(img: np.ndarray, a: float, b: float, est: Estimators | None) -> np.ndarray:
    import cv2

    x = img.astype(np.float32)
    g = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(g - x, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong)) if strong.size else 16.0)
    intensity *= 127
    return _hwc3(intensity.clip(0, 255).astype(np.uint8))


def _softedge_opencv(img: np.ndarray, a: float, b: float, est: Estimators | None) -> np.ndarray:
    """Soft edges without a network: gradient strength at two scales, normalised, gently curved."""
    import cv2

    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    total = np.zeros_like(grey)
    for sigma in (1.0, 2.5):
        smooth = cv2.GaussianBlur(grey, (0, 0), sigma)
        gx, gy = cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1)
        total += np.sqrt(gx * gx + gy * gy)
    top = float(np.percentile(total, 99)) or 1.0
    return _hwc3((np.clip(total / top, 0, 1) ** 0.7 * 255).astype(np.uint8))


def _depth(module: str) -> Run:
    def run(img: np.ndarray, a: float, b: float, est: Estimators | None) -> np.ndarray:
        if est is None:
            raise LanskapError(f"the {module} preprocessor needs a depth model, and none is loaded here")
        return _hwc3(np.asarray(est.get(module).depth_image(Image.fromarray(img))))

    return run


def _slider(name: str, value: float, lo: float, hi: float, step: float = 1) -> dict[str, Any]:
    return {"name": name, "value": value, "min": lo, "max": hi, "step": step}


_RES = _slider("Resolution", 512, 64, 2048)
PREPROCESSORS: dict[str, Preprocessor] = {
    p.name: p
    for p in (
        Preprocessor("none", "none", _none),
        Preprocessor("canny", "canny", _canny, (100, 200),
                     [_RES, _slider("Low Threshold", 100, 1, 255), _slider("High Threshold", 200, 1, 255)]),
        Preprocessor("depth_midas", "depth", _depth("depth_midas"), sliders=[_RES]),
        Preprocessor("depth_anything", "depth", _depth("depth_anything"), sliders=[_RES]),
        Preprocessor("invert", "scribble", _invert, sliders=[_RES]),
        Preprocessor("binary", "scribble", _binary, (0, -1), [_RES, _slider("Binary threshold", 0, 0, 255)]),
        Preprocessor("scribble_xdog", "scribble", _scribble_xdog, (32, -1),
                     [_RES, _slider("XDoG Threshold", 32, 1, 64)]),
        Preprocessor("lineart_standard", "lineart", _lineart_standard, sliders=[_RES]),
        Preprocessor("softedge_opencv", "softedge", _softedge_opencv, sliders=[_RES]),
    )
}  # fmt: skip
#: Names clients send for the same modules (the extension's UI labels and legacy names).
ALIASES = {
    "depth": "depth_midas",
    "midas": "depth_midas",
    "invert (from white bg & black line)": "invert",
    "lineart_standard (from white bg & black line)": "lineart_standard",
    "threshold": "binary",
    "scribble": "invert",
    "softedge": "softedge_opencv",
    "lineart": "lineart_standard",
}


def canonical(module: str) -> str:
    """The module's own name for a name or alias (case-insensitive), or a one-line error listing them."""
    key = (module or "none").strip().lower()
    key = ALIASES.get(key, key)
    if key not in PREPROCESSORS:
        raise LanskapError(f"unknown preprocessor {module!r}; choose one of: {', '.join(PREPROCESSORS)}")
    return key


def processor_res(unit: ControlUnit, width: int, height: int) -> int:
    """The unit's preprocessor resolution; with pixel perfect, the extension's estimate for the output size."""
    if not unit.pixel_perfect or unit.image is None:
        return unit.processor_res
    raw_w, raw_h = unit.image.size
    k0, k1 = height / raw_h, width / raw_w
    k = min(k0, k1) if unit.resize_mode == "Resize and Fill" else max(k0, k1)
    return max(64, round(k * min(raw_w, raw_h)))


def run(image: Image.Image, module: str, res: int = 512, threshold_a: float = -1, threshold_b: float = -1,
        estimators: Estimators | None = None) -> Image.Image:  # fmt: skip
    """The control map of ``image`` by preprocessor ``module`` (an RGB picture, short side ``res``)."""
    import cv2

    pre = PREPROCESSORS[canonical(module)]
    a = pre.defaults[0] if threshold_a == -1 else threshold_a
    b = pre.defaults[1] if threshold_b == -1 else threshold_b
    img = np.asarray(image.convert("RGB"))
    if pre.name != "none":
        h, w = img.shape[:2]
        k = res / min(h, w)
        size = (max(1, round(w * k)), max(1, round(h * k)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    out = pre.run(np.ascontiguousarray(img), a, b, estimators)
    return Image.fromarray(np.ascontiguousarray(out.astype(np.uint8)), "RGB")


def fit(control: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """The map at the output size: stretched, cropped to cover it, or fitted inside and padded black."""
    w, h = control.size
    if mode == "Just Resize":
        return control.resize((width, height), Image.Resampling.LANCZOS)
    k = max(width / w, height / h) if mode == "Crop and Resize" else min(width / w, height / h)
    sw, sh = max(1, round(w * k)), max(1, round(h * k))
    scaled = control.resize((sw, sh), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(scaled, ((width - sw) // 2, (height - sh) // 2))
    return canvas


def module_detail() -> dict[str, dict[str, Any]]:
    """The extension's ``module_detail``: per module, whether it needs a model, and its sliders."""
    return {name: {"model_free": p.model_free, "sliders": p.sliders} for name, p in PREPROCESSORS.items()}
