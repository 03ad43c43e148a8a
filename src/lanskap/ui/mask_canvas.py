"""Paint an inpainting mask over the picture, in the browser.

Written by hand because the usual package (streamlit-drawable-canvas) has not
kept up with Streamlit's component API; Streamlit's own components v2 make a
small canvas enough. The browser keeps a full-resolution black-and-white mask
next to the visible overlay and sends it back as a PNG data URL after each
stroke, so the mask has exactly the picture's size.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from lanskap.errors import LanskapError

HTML = """
<div class="lk-mask">
  <div class="lk-tools">
    <label>Brush <input class="lk-brush" type="range" min="4" max="160" value="40"></label>
    <button class="lk-clear" type="button">Clear mask</button>
    <span class="lk-hint">Paint where the picture should change.</span>
  </div>
  <div class="lk-stage"><img class="lk-img" alt="picture to inpaint"><canvas class="lk-view"></canvas></div>
</div>
"""

CSS = """
.lk-mask { font-family: var(--st-font); }
.lk-tools { display: flex; gap: 1rem; align-items: center; margin-bottom: .4rem; flex-wrap: wrap; }
.lk-hint { opacity: .7; font-size: .85rem; }
.lk-stage { position: relative; display: inline-block; max-width: 100%; line-height: 0; }
.lk-img { max-width: 100%; display: block; border-radius: 4px; }
.lk-view { position: absolute; left: 0; top: 0; width: 100%; height: 100%; cursor: crosshair; touch-action: none; }
button.lk-clear { border: 1px solid var(--st-border-color); border-radius: 6px; padding: .2rem .7rem;
  background: var(--st-secondary-background-color); color: var(--st-text-color); cursor: pointer; }
"""

JS = """
export default function(component) {
  const { data, setStateValue, parentElement } = component;
  const img = parentElement.querySelector('.lk-img');
  const view = parentElement.querySelector('.lk-view');
  const brush = parentElement.querySelector('.lk-brush');
  const W = data.width, H = data.height;
  if (data.hint) parentElement.querySelector('.lk-hint').textContent = data.hint;
  if (data.clear) parentElement.querySelector('.lk-clear').textContent = data.clear;
  const mask = document.createElement('canvas');
  mask.width = W; mask.height = H;
  const mctx = mask.getContext('2d');
  const vctx = view.getContext('2d');
  view.width = W; view.height = H;
  mctx.fillStyle = 'black'; mctx.fillRect(0, 0, W, H);
  const redraw = () => {
    vctx.clearRect(0, 0, W, H);
    vctx.globalAlpha = 0.55;
    vctx.drawImage(mask, 0, 0);
    vctx.globalAlpha = 1;
  };
  if (data.mask) {
    const prev = new Image();
    prev.onload = () => { mctx.drawImage(prev, 0, 0, W, H); redraw(); };
    prev.src = data.mask;
  }
  img.src = data.image;
  let drawing = false, last = null;
  const at = (e) => {
    const r = view.getBoundingClientRect();
    return [(e.clientX - r.left) * W / r.width, (e.clientY - r.top) * H / r.height];
  };
  const stroke = (p) => {
    const r = view.getBoundingClientRect();
    mctx.strokeStyle = 'white'; mctx.fillStyle = 'white';
    mctx.lineCap = 'round'; mctx.lineJoin = 'round';
    mctx.lineWidth = Number(brush.value) * W / Math.max(1, r.width);
    mctx.beginPath();
    mctx.moveTo(...(last || p)); mctx.lineTo(...p); mctx.stroke();
    last = p; redraw();
  };
  const down = (e) => { drawing = true; last = null; view.setPointerCapture(e.pointerId); stroke(at(e)); };
  const move = (e) => { if (drawing) stroke(at(e)); };
  const up = () => {
    if (!drawing) return;
    drawing = false; last = null;
    setStateValue('mask', mask.toDataURL('image/png'));
  };
  view.addEventListener('pointerdown', down);
  view.addEventListener('pointermove', move);
  view.addEventListener('pointerup', up);
  view.addEventListener('pointerleave', up);
  parentElement.querySelector('.lk-clear').onclick = () => {
    mctx.fillStyle = 'black'; mctx.fillRect(0, 0, W, H); redraw();
    setStateValue('mask', null);
  };
  return () => {
    view.removeEventListener('pointerdown', down);
    view.removeEventListener('pointermove', move);
    view.removeEventListener('pointerup', up);
    view.removeEventListener('pointerleave', up);
  };
}
"""

_component: Any = None


def _renderer() -> Any:
    global _component
    if _component is None:
        import streamlit as st

        _component = st.components.v2.component("lanskap_mask_canvas", html=HTML, css=CSS, js=JS)
    return _component


def image_data_url(image: Image.Image, max_side: int = 1024) -> str:
    """The picture as a PNG data URL, shrunk for display (the mask keeps the full size)."""
    shown = image.convert("RGB")
    shown.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    shown.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_mask(data_url: str | None, size: tuple[int, int]) -> Image.Image | None:
    """The painted mask as 8-bit grey of ``size``; None when nothing was painted."""
    if not data_url:
        return None
    head, _, payload = data_url.partition(",")
    if not head.startswith("data:image/png;base64"):
        raise LanskapError("the drawn mask did not arrive as a PNG")
    try:
        with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as im:
            mask = im.convert("L")
    except (ValueError, OSError) as exc:
        raise LanskapError(f"the drawn mask could not be read: {exc}") from None
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    mask = mask.point(lambda v: 255 if v >= 128 else 0)
    return mask if mask.getbbox() else None


def draw_mask(image: Image.Image, key: str, hint: str = "", clear: str = "") -> Image.Image | None:
    """Show ``image`` with a brush; return the painted mask (white = repaint) or None.

    ``hint`` and ``clear`` replace the line beside the brush and the clear button's label (a ControlNet
    scribble is drawn on the same canvas)."""
    import streamlit as st

    state_key = f"{key}-mask"
    result = _renderer()(
        key=key,
        data={
            "image": image_data_url(image),
            "width": image.width,
            "height": image.height,
            "mask": st.session_state.get(state_key),
            "hint": hint,
            "clear": clear,
        },
        on_mask_change=lambda: None,
    )
    value = getattr(result, "mask", None)
    st.session_state[state_key] = value
    return decode_mask(value, image.size)
