"""A task no demo code knows: coloured shapes named by strings, RGB images and English captions.

Built here, in the test, as a user would bring it: landing batches (manifest.jsonl + PNG files) and a
`task:` section; nothing of the digits example is used.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "orange": (240, 150, 30)}
WORDINGS = ("a {colour} {shape}", "a drawing of a {shape}", "the {shape} in {colour}", "{shape}, {colour}")

TASK = {
    "classes": list(SHAPES),
    "prompts": "a picture of a {label}",
    "slices": ["camera"],
    "languages": None,
    "image_channels": 3,
}


def draw_shape(shape: str, colour: tuple[int, int, int], rng: np.random.Generator, side: int = 32) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(0, 60, 3))
    image = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(side // 2, side - 4))
    x0, y0 = (int(v) for v in rng.integers(1, side - size, 2))
    box = (x0, y0, x0 + size, y0 + size)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x0 + size // 2, y0), (x0, y0 + size), (x0 + size, y0 + size)], fill=colour)
    return image


def write_shapes_batch(out: Path, samples: int, seed: int, label_rate: float) -> Path:
    """A landing batch of `samples` rows; `label_rate` of them carry a human label (a class name)."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(days=seed)
    lines = []
    for i in range(samples):
        shape = SHAPES[i % len(SHAPES)]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        name = f"s{seed}-{i:04d}"
        draw_shape(shape, COLOURS[colour], rng).save(out / "images" / f"{name}.png")
        row = {"sample_id": name, "captured_at": (start + timedelta(minutes=i)).isoformat(),
               "image": f"images/{name}.png",
               "caption": WORDINGS[int(rng.integers(len(WORDINGS)))].format(colour=colour, shape=shape),
               "camera": ("cam-a", "cam-b")[i % 2]}
        if rng.random() < label_rate:
            row["label"] = shape
        lines.append(json.dumps(row))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return out
