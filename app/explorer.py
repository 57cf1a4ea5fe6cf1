"""The app's computation: encode an image once per (model, loop count), then answer clicks from the cache.

First result for an image: `model.encode` once, then `model.decode(..., recurrence=R, return_attention=True)`
for each R; the per-loop attentions and the predicted classes are kept in a bounded cache shared by all
sessions (keyed by image hash, model and R). A click then only runs `influence_maps` on cached attentions.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from app.grid import pixel_to_cell, sample_at_cells
from app.models import LoadedModel
from ccnet.preprocess import to_tensor
from ccnet.propagation import influence_maps, region_influence_maps, reverse_influence_maps

READS_FROM = "reads_from"  # a row of the composed attention: where the clicked pixel reads from
FEEDS = "feeds"  # a column: which pixels read from the clicked pixel


@dataclass
class Decoded:
    """What one (image, model, R) decodes to; everything a click needs."""

    attentions: list[torch.Tensor]  # R tensors (h, w, h + w) on the CPU, loop 1 first
    prediction: np.ndarray  # (H, W) class index per pixel
    gamma: float  # the model's residual scale, for rollout
    classes_present: list[int] = field(default_factory=list)  # sorted class ids in `prediction`
    branch_weight: np.ndarray | None = None  # (R, h, w): |gamma * aggregated| / |residual input| per loop

    @property
    def grid_size(self) -> tuple[int, int]:
        return int(self.attentions[0].shape[0]), int(self.attentions[0].shape[1])

    @functools.cached_property
    def grid_classes(self) -> np.ndarray:
        """Predicted class under each feature cell's centre, (h, w), read-only. Sampled once: a click with
        every view on read it about ten times per column."""
        classes = sample_at_cells(self.prediction, self.grid_size)
        classes.flags.writeable = False
        return classes

    def nbytes(self) -> int:
        branch = 0 if self.branch_weight is None else self.branch_weight.nbytes
        return sum(a.numel() * a.element_size() for a in self.attentions) + self.prediction.nbytes + branch


class BoundedCache:
    """Least-recently-used cache limited in bytes, safe to share between sessions (threads)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable):
        with self._lock:
            if key not in self._items:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key: Hashable, value, nbytes: int) -> None:
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    @property
    def nbytes(self) -> int:
        return self._bytes


@dataclass
class Timings:
    """Milliseconds per step of one page run, shown in the timings expander."""

    steps: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def elapsed_ms(self) -> float:
        return 1000 * (time.perf_counter() - self.started)

    def measure(self, name: str):
        return _Stopwatch(self, name)

    def add(self, name: str, milliseconds: float) -> None:
        self.steps[name] = self.steps.get(name, 0.0) + milliseconds


class _Stopwatch:
    def __init__(self, timings: Timings, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.timings.add(self.name, 1000 * (time.perf_counter() - self.start))


def decode_key(digest: str, model_id: str, recurrence: int) -> tuple[str, str, int]:
    return (digest, model_id, recurrence)


@torch.inference_mode()
def encode_and_decode(loaded: LoadedModel, rgb: np.ndarray, loop_counts: Sequence[int]) -> dict[int, Decoded]:
    """Backbone once, then the head once per loop count: {R: Decoded}."""
    metadata = loaded.metadata
    images = to_tensor(rgb, metadata["mean"], metadata["std"]).to(loaded.device)  # (1, 3, H, W)
    size = rgb.shape[:2]
    results = {}
    with loaded.lock:
        features = loaded.model.encode(images)
        for recurrence in loop_counts:
            output = loaded.model.decode(features, size, recurrence=recurrence, return_attention=True)
            prediction = _class_map(output.logits[0])  # (H, W)
            branch = loaded.model.attention_branch_weight(features, recurrence)[0]  # (R, h, w)
            results[recurrence] = Decoded(
                attentions=[a[0].float().cpu() for a in output.attentions],  # R x (h, w, h + w)
                prediction=prediction,
                gamma=loaded.gamma,
                classes_present=[int(c) for c in np.unique(prediction)],
                branch_weight=branch.float().cpu().numpy(),
            )
    return results


def _class_map(logits: torch.Tensor) -> np.ndarray:
    """(K, H, W) logits -> (H, W) class indices, as small an integer type as K allows."""
    dtype = torch.uint8 if logits.shape[0] <= 256 else torch.int16
    return logits.argmax(dim=0).to(dtype).cpu().numpy()


def cached_decodes(
    cache: BoundedCache,
    loaded: LoadedModel,
    rgb: np.ndarray,
    digest: str,
    loop_counts: Sequence[int],
    compute: Callable[[LoadedModel, np.ndarray, Sequence[int]], dict[int, Decoded]] = encode_and_decode,
) -> tuple[dict[int, Decoded], bool]:
    """({R: Decoded}, computed_now): only the loop counts missing from the cache are decoded."""
    found = {r: cache.get(decode_key(digest, loaded.cache_id, r)) for r in loop_counts}
    missing = [r for r, decoded in found.items() if decoded is None]
    if missing:
        fresh = compute(loaded, rgb, missing)
        for recurrence, decoded in fresh.items():
            cache.put(decode_key(digest, loaded.cache_id, recurrence), decoded, decoded.nbytes())
        found.update(fresh)
    return found, bool(missing)


@contextlib.contextmanager
def single_threaded():
    """Run tiny tensor ops on the calling thread alone (a per-thread setting: other sessions keep theirs).

    A click's maps are a few thousand cells: splitting them across cores buys nothing, and on a busy machine
    waiting for a descheduled helper thread turned 5 ms into 100+ ms.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class ColumnMaps:
    """One column's maps for the clicked cell: after all its loops, and (optionally) each loop alone."""

    composed: np.ndarray  # (h, w), sums to 1
    per_loop: list[np.ndarray]  # R x (h, w): loop r's own attention (empty unless asked)
    cell: tuple[int, int]  # (y, x) on the feature grid
    mode: str = "attention"  # how the maps were propagated
    direction: str = READS_FROM  # FEEDS: columns of the composed attention (who reads from the cell)
    region_cells: int = 0  # > 0: the map averages this many cells' maps (a class segment)


def column_maps(
    decoded: Decoded,
    px: int,
    py: int,
    mode: str,
    with_per_loop: bool,
    direction: str = READS_FROM,
    region: np.ndarray | None = None,
) -> ColumnMaps:
    """Influence on image pixel (px, py) after the column's R loops, through `influence_maps`; or, with
    direction FEEDS, who reads from it (`reverse_influence_maps`, normalised to sum 1 for display); or, with
    a region (h, w) bool, its cells' influence maps averaged (`region_influence_maps`)."""
    cell = pixel_to_cell(px, py, decoded.prediction.shape[:2], decoded.grid_size)
    if direction == FEEDS:
        return _reverse_column_maps(decoded, cell, with_per_loop)
    if region is not None:
        return _region_column_maps(decoded, cell, region, with_per_loop)
    gammas = decoded.gamma if mode == "rollout" else None
    maps = influence_maps(decoded.attentions, *cell, mode=mode, gammas=gammas)  # (R, h, w)
    per_loop = []
    if with_per_loop:
        per_loop = [
            influence_maps([attention], *cell, mode=mode, gammas=gammas)[0].numpy()  # (h, w)
            for attention in decoded.attentions
        ]
    return ColumnMaps(composed=maps[-1].numpy(), per_loop=per_loop, cell=cell, mode=mode)


def _region_column_maps(decoded: Decoded, cell, region: np.ndarray, with_per_loop: bool) -> ColumnMaps:
    mask = torch.from_numpy(region)
    maps = region_influence_maps(decoded.attentions, mask)  # (R, h, w)
    per_loop = [region_influence_maps([a], mask)[0].numpy() for a in decoded.attentions] if with_per_loop else []
    return ColumnMaps(composed=maps[-1].numpy(), per_loop=per_loop, cell=cell, region_cells=int(region.sum()))


def _normalised(values: torch.Tensor) -> np.ndarray:
    total = float(values.sum())
    return (values / total).numpy() if total > 0 else values.numpy()


def _reverse_column_maps(decoded: Decoded, cell: tuple[int, int], with_per_loop: bool) -> ColumnMaps:
    maps = reverse_influence_maps(decoded.attentions, *cell)  # (R, h, w)
    per_loop = []
    if with_per_loop:
        per_loop = [_normalised(reverse_influence_maps([a], *cell)[0]) for a in decoded.attentions]  # R x (h, w)
    return ColumnMaps(composed=_normalised(maps[-1]), per_loop=per_loop, cell=cell, mode="attention", direction=FEEDS)
