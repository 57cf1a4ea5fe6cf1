"""The full training state for --resume: one torch file that loads with weights_only=True.

Everything in it is a tensor or a plain container (dict, list, int, float, str, None): model and
optimiser state dicts, the step, the best score, the GradScaler state and every RNG state (as tensors).
Written to a temporary file and renamed, so a crash mid-save leaves the previous state intact.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ccnet.checkpoint import atomic_write

STATE_FILE = "state.pt"
STATE_VERSION = 1


def _numpy_state() -> dict:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_state(state: dict) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["position"], state["has_gauss"], state["cached_gaussian"]))


def _python_state() -> dict:
    version, internal, gauss_next = random.getstate()
    return {
        "version": version,
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss_next": gauss_next,
    }


def _set_python_state(state: dict) -> None:
    random.setstate((state["version"], tuple(state["internal"].tolist()), state["gauss_next"]))


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of `tensor` (same shape on all ranks), in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return [tensor]
    backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    local = tensor.to(backend_device) if backend_device is not None else tensor
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return [part.cpu() for part in parts]


def capture_rng_states() -> dict:
    """RNG states of this process (numpy, python) and of every rank (torch CPU and CUDA), as tensors.

    Collective under DDP: every rank must call it.
    """
    states = {"numpy": _numpy_state(), "python": _python_state(), "torch": _gather(torch.get_rng_state())}
    states["cuda"] = _gather(torch.cuda.get_rng_state()) if torch.cuda.is_available() else []
    return states


def restore_rng_states(states: dict, rank: int) -> None:
    _set_numpy_state(states["numpy"])
    _set_python_state(states["python"])
    torch.set_rng_state(states["torch"][rank])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"][rank])


def save_training_state(path: Path, state: dict) -> None:
    """Atomically write `state` (see `build_training_state` in train.py) to `path`."""
    atomic_write(path, lambda temporary: torch.save(state | {"version": STATE_VERSION}, temporary))


def load_training_state(path: Path) -> dict:
    """The saved state; only tensors and plain containers are accepted (weights_only=True)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"{path} is not a training state of version {STATE_VERSION}; start a new run instead")
    return state
