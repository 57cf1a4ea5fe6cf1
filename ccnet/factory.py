"""Build a model from its config: the one place that knows every architecture (timm's factory, in small).

A checkpoint's sidecar holds ``model_config``; ``build_model`` turns it back into the network. The 2D model
(``ccnet.model.CCNet``) and the video model (``ccnet.video_model.VideoCCNet``, which builds on the 2D one) are
both imported here, so neither module needs the other's name at import time.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from ccnet.model import CCNet
from ccnet.video_model import VideoCCNet


def build_model(config: Mapping) -> CCNet:
    """Rebuild a CCNet from ``model.config`` (e.g. a checkpoint sidecar's ``model_config``).

    A config with ``frames: T`` (not null) builds the video model (``ccnet.video_model.VideoCCNet``).
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"expected a model config mapping, got {type(config).__name__}")
    known = set(inspect.signature(CCNet).parameters) | {"frames"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}: expected some of {sorted(known)}")
    if "num_classes" not in config:
        raise ValueError("model config lacks num_classes")
    arguments = {key: value for key, value in config.items() if key != "frames"}
    if config.get("frames") is not None:
        return VideoCCNet(frames=config["frames"], **arguments)
    return CCNet(**arguments)
