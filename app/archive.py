"""One download with everything a view shows: the panel, each column's map, and every number as JSON."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import zipfile

import numpy as np

from app import render


def _clean(value):
    """JSON has no NaN or numpy scalars: None for NaN, plain floats and ints."""
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def column_record(result) -> dict:
    """A column's model, loop count, clicked cell and numbers (a ColumnResult from app.view)."""
    record = {
        "title": result.spec.title,
        "model": result.loaded.name,
        "save_id": result.loaded.metadata.get("save_id"),
        "recurrence": result.spec.recurrence,
        "trained_recurrence": result.loaded.trained_recurrence,
        "cell": list(result.maps.cell),
        "grid": list(result.maps.composed.shape),
        "mode": result.maps.mode,
        "direction": result.maps.direction,
        "region_cells": result.maps.region_cells,
        "predicted_class": result.loaded.class_names[result.clicked_class]
        if result.clicked_class < len(result.loaded.class_names)
        else None,
        "statistics": dataclasses.asdict(result.stats),
    }
    if result.score is not None:
        record["scorecard"] = dataclasses.asdict(result.score)
    return _clean(record)


def view_archive(
    panel_png: bytes,
    results,
    click: tuple[int, int],
    image_size: tuple[int, int],
    settings: dict,
    second_click: tuple[int, int] | None = None,
    box: tuple[int, int, int, int] | None = None,
) -> bytes:
    """A zip: panel.png, map_<i>.npy (h, w) float32 per column (each sums to 1), view.json.

    view.json names pixel B when two pixels are compared and the query box (inclusive image pixels) when the
    query is a dragged box; both are null otherwise."""
    document = {
        "click": {"px": click[0], "py": click[1]},
        "second_click": None if second_click is None else {"px": second_click[0], "py": second_click[1]},
        "box": None if box is None else dict(zip(("left", "top", "right", "bottom"), box, strict=True)),
        "image_size": {"height": image_size[0], "width": image_size[1]},
        "settings": settings,
        "columns": [column_record(result) for result in results],
    }
    document = _clean(document)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("panel.png", panel_png)
        for index, result in enumerate(results):
            archive.writestr(f"map_{index}.npy", render.npy_bytes(result.maps.composed.astype(np.float32)))
        archive.writestr("view.json", json.dumps(document, indent=2))
    return buffer.getvalue()
