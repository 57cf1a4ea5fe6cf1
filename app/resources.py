"""What every session of the server shares: models (loaded once per process), the attention cache, examples.

Kept apart from the page script so that importing them has no side effects (tests call them directly).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path

import streamlit as st
import torch

from app.examples import ExampleSet, discover_examples
from app.explorer import BoundedCache
from app.models import LoadedModel, load_model

# How often each checkpoint was loaded in this process: the proof that sessions share one copy.
MODEL_LOADS: Counter[str] = Counter()
_LOADS_LOCK = threading.Lock()


@st.cache_resource(show_spinner="Loading the model (once per server)...", max_entries=8)
def cached_model(path: str, device: str, modified: float) -> LoadedModel:
    """One copy of each model per server process; `modified` reloads a checkpoint replaced on disk."""
    loaded = load_model(Path(path), torch.device(device))
    with _LOADS_LOCK:
        MODEL_LOADS[path] += 1
        count = MODEL_LOADS[path]
    # One line in the server log per load (tests and operators count them).
    print(
        f"ccnet-app: loaded model {Path(path).name} on {device} (load #{count} of this file)",
        file=sys.stderr,
        flush=True,
    )
    return loaded


@st.cache_resource
def shared_cache(max_bytes: int) -> BoundedCache:
    """Attentions of recently seen images, shared by all sessions (keys hold the image hash)."""
    return BoundedCache(max_bytes)


@st.cache_resource(ttl=60)
def cached_examples(folder: str | None) -> ExampleSet:
    return discover_examples(Path(folder) if folder else None)
