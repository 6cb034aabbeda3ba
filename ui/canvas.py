"""The lab's drawing canvas: an inline component (Streamlit components v2), nothing to install.

The browser keeps the strokes (so undo works and a rerun of the page keeps the drawing) and sends
the canvas as a PNG data URL when a stroke ends, on undo and on clear: each sends a rerun, so the
prediction follows every stroke.
"""

from __future__ import annotations

import streamlit.components.v2 as components

SIZE = 280  # canvas pixels; the drawing is cropped and scaled to 28x28 afterwards

HTML = f"""
<div class="lab-canvas">
  <canvas width="{SIZE}" height="{SIZE}" aria-label="Drawing canvas"></canvas>
  <div class="tools">
    <label>Brush <input class="brush" type="range" min="6" max="48" value="22" aria-label="Brush size"></label>
    <button class="undo" type="button">Undo</button>
    <button class="clear" type="button">Clear</button>
  </div>
</div>
"""

CSS = """
canvas { touch-action: none; cursor: crosshair; border-radius: 6px; display: block; }
.tools { display: flex; gap: 0.5rem; align-items: center; margin-top: 0.4rem;
         font-family: var(--st-font, sans-serif); font-size: 0.9rem; color: var(--st-text-color); }
button { border: 1px solid var(--st-border-color, #ccc); border-radius: 6px; padding: 0.2rem 0.7rem;
         background: var(--st-background-color, white); color: var(--st-text-color); cursor: pointer; }
"""

JS = """
export default function ({ parentElement, setStateValue }) {
  const canvas = parentElement.querySelector("canvas");
  if (canvas.wired) return;  // a rerun of the page mounts nothing new: keep the strokes
  canvas.wired = true;
  const context = canvas.getContext("2d");
  const brush = parentElement.querySelector(".brush");
  const strokes = [];
  let current = null;

  function paint() {
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.strokeStyle = "#fff";
    context.lineCap = "round";
    context.lineJoin = "round";
    for (const stroke of strokes) {
      context.lineWidth = stroke.width;
      context.beginPath();
      stroke.points.forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
      if (stroke.points.length === 1) context.lineTo(stroke.points[0][0] + 0.1, stroke.points[0][1]);
      context.stroke();
    }
  }
  function send() {
    setStateValue("drawing", {
      strokes: strokes.length,
      png: strokes.length ? canvas.toDataURL("image/png") : "",
    });
  }
  function position(event) {
    const box = canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * canvas.width) / box.width,
      ((event.clientY - box.top) * canvas.height) / box.height,
    ];
  }
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    current = { width: Number(brush.value), points: [position(event)] };
    strokes.push(current);
    paint();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!current) return;
    current.points.push(position(event));
    paint();
  });
  const end = () => {
    if (!current) return;
    current = null;
    send();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  parentElement.querySelector(".undo").addEventListener("click", () => {
    strokes.pop();
    paint();
    send();
  });
  parentElement.querySelector(".clear").addEventListener("click", () => {
    strokes.length = 0;
    paint();
    send();
  });
  paint();
}
"""

_canvas = components.component("fmnist_lab.canvas", html=HTML, css=CSS, js=JS)


def draw(key: str) -> str | None:
    """Show the canvas; return the drawing as a PNG data URL, or None while it is empty."""
    result = _canvas(key=key, default={"drawing": None}, on_drawing_change=lambda: None, width=SIZE)
    drawing = getattr(result, "drawing", None) if result is not None else None
    if not isinstance(drawing, dict) or not drawing.get("strokes"):
        return None
    return drawing.get("png") or None
