"""Contact sheet of prepared clips: what the model will see (`mer prepare --preview`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .flow_image import flow_to_rgb

TITLE_HEIGHT = 22
BACKGROUND = 32
FONT = cv2.FONT_HERSHEY_SIMPLEX

SheetRow = tuple[str, np.ndarray, np.ndarray | None]
"""(title, crops (T, H, W, 3) uint8 RGB, flow (T-1, 2, H, W) of frames 1..T-1 or None)."""


def _label(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.45) -> None:
    """White text on a dark box, readable on faces and flow images alike."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x, y = origin
    cv2.rectangle(image, (x - 2, y - height - 2), (x + width + 2, y + baseline), (BACKGROUND,) * 3, -1)
    cv2.putText(image, text, origin, FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _row_image(title: str, crops: np.ndarray, flow: np.ndarray | None, tile: tuple[int, int], columns: int) -> np.ndarray:
    """One row: a title strip, the crops, and under frames 1..T-1 their flow (one magnitude scale per row)."""
    h, w = tile
    strips = 2 if flow is not None else 1
    row = np.full((TITLE_HEIGHT + strips * h, columns * w, 3), BACKGROUND, np.uint8)
    for t, crop in enumerate(crops):
        row[TITLE_HEIGHT:TITLE_HEIGHT + h, t * w:(t + 1) * w] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
        _label(row, str(t), (t * w + 3, TITLE_HEIGHT + 14), 0.4)
    if flow is not None:
        peak = float(np.hypot(flow[:, 0], flow[:, 1]).max()) if len(flow) else 0.0
        title = f"{title} | flow vs frame 0, brightness = magnitude up to {peak:.2f} px"
        top = TITLE_HEIGHT + h
        for t, f in enumerate(flow, start=1):
            rgb = cv2.resize(flow_to_rgb(f, peak), (w, h), interpolation=cv2.INTER_AREA)
            row[top:top + h, t * w:(t + 1) * w] = rgb
        _label(row, "flow", (4, top + h // 2), 0.4)
    _label(row, title, (4, TITLE_HEIGHT - 6))
    return row


def contact_sheet(rows: Sequence[SheetRow], path: str | Path, max_rows: int = 12) -> Path:
    """Write one PNG with up to `max_rows` rows of crops and flow images; returns its path.

    Every tile takes the size of the first row's crops. The file is written atomically.
    """
    rows = list(rows)[:max_rows]
    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    tile = rows[0][1].shape[1:3]
    columns = max(len(crops) for _, crops, _ in rows)
    sheet = np.vstack([_row_image(title, crops, flow, tile, columns) for title, crops, flow in rows])
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding of the contact sheet failed")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(png.tobytes())
    os.replace(tmp, path)
    return path
