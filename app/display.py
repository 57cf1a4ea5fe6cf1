"""What the influence colours show: the map drawn (cross hidden or not) and its colour scale.

Maps of criss-cross attention are dominated by the clicked pixel's own row and column; these choices
(clamp at a percentile or a value, log scale, hide the cross) make the rest visible, and every scale
carries a title saying exactly what its colours mean. Masking the cross is `ccnet.analysis`' job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.controls import ViewOptions
from app.render import ColourScale
from ccnet.analysis import cross_mask, hide_cross

LOG_DECADES = 4  # a log scale spans this many decades below its largest value
TINY = 1e-12


@dataclass(frozen=True)
class ShownMap:
    """A map as drawn: values (h, w) and the cells left uncoloured (the cross, when hidden)."""

    values: np.ndarray  # (h, w)
    hidden: np.ndarray | None  # (h, w) bool, or None when every cell is coloured

    def visible_values(self) -> np.ndarray:
        return self.values if self.hidden is None else self.values[~self.hidden]


def shown_map(influence: np.ndarray, cell: tuple[int, int], hide: bool) -> ShownMap:
    if not hide:
        return ShownMap(influence, None)
    return ShownMap(hide_cross(influence, *cell), cross_mask(*influence.shape, *cell))


def colour_scales(shown: list[ShownMap], options: ViewOptions) -> list[ColourScale]:
    """One scale per map; with `shared_scale` all maps share the scale computed over all of them."""
    if options.shared_scale:
        pooled = np.concatenate([m.visible_values().ravel() for m in shown])
        return [colour_scale(pooled, options)] * len(shown)
    return [colour_scale(m.visible_values().ravel(), options) for m in shown]


def colour_scale(values: np.ndarray, options: ViewOptions) -> ColourScale:
    """The scale for these shown values (each a share of the clicked pixel's total influence).

    Its title (two short lines: what, then how it is scaled) is the colour bar's caption.
    """
    peak = max(float(values.max()) if values.size else 0.0, 0.0)
    what = "influence off the cross" if options.hide_cross else "influence"
    if peak <= 0:  # e.g. R = 1 with the cross hidden: one loop puts nothing anywhere else
        return ColourScale(options.colormap, 0.0, TINY, f"{what}<br>0 everywhere")
    if options.scale_mode == "percentile":
        limit = max(float(np.percentile(values, options.percentile)), TINY)
        title = f"{what}<br>clamped at p{options.percentile:g} = {_pct(limit)}"
        return ColourScale(options.colormap, 0.0, limit, title)
    if options.scale_mode == "value":
        limit = options.clamp_percent / 100.0
        return ColourScale(options.colormap, 0.0, limit, f"{what}<br>clamped at {_pct(limit)}")
    if options.scale_mode == "log":
        positive = values[values > 0]
        low = max(float(positive.min()), peak * 10.0**-LOG_DECADES)
        low = min(low, peak / 10.0)  # at least one decade, so the bar has a tick
        return ColourScale(options.colormap, low, peak, f"{what}<br>log scale, {_pct(low)} to {_pct(peak)}", log=True)
    return ColourScale(options.colormap, 0.0, peak, f"{what}<br>0 to {_pct(peak)}")


def _pct(value: float) -> str:
    return f"{100 * value:.3g}%"
