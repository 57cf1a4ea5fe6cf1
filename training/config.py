"""Training configuration: defaults, a YAML file on top, then `--set section.key=value` overrides.

The resolved configuration is a plain nested dict; it is written into the run folder as config.yaml
and stored in every checkpoint's sidecar, so each model says exactly how it was trained.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from ccnet.preprocess import IMAGENET_MEAN, IMAGENET_STD

DEFAULTS: dict = {
    "seed": 0,
    "data": {
        "dataset": "camvid",  # camvid | cityscapes | ade20k | folder
        "root": None,  # None: the dataset's environment variable (CAMVID_ROOT, ...)
        "train_split": "train",
        "val_split": "val",
        "crop_size": [240, 320],  # [H, W]; null trains on whole (scaled) images, batch 1
        "scale_range": [0.5, 1.0],
        "flip": True,
        "mean": list(IMAGENET_MEAN),  # RGB, 0-255 pixel units
        "std": list(IMAGENET_STD),
        "num_workers": 2,
    },
    "model": {
        "backbone": "resnet18",
        "recurrence": 2,
        "base_width": 32,
        "head_channels": 128,
        "aux_channels": None,  # None: head_channels // 2; 0: no auxiliary head
        "ccl_channels": 0,  # 16 with the category consistent loss
        "dropout": 0.1,
        "pretrained": None,  # backbone weights file (python -m training.pretrained writes MobileNetV2's)
        "pretrained_sha256": None,  # when set, a pretrained file with another hash is refused
        "gamma_init": 0.0,  # initial attention scale gamma (the paper: 0, the attention path closed)
        "decoder_channels": 0,  # stride-4 skip decoder (ccnet.model.SkipDecoder; not in the paper); 0 = none
    },
    "loss": {
        "aux_weight": 0.4,
        "class_weights": None,  # null | "enet" (1 / ln(1.02 + frequency), from the train labels) | [w_0, ...]
        "ohem": False,
        "ohem_thresh": 0.7,
        "ohem_min_kept": 100000,
        "ccl": False,  # needs model.ccl_channels > 0
        "ccl_delta_v": 0.5,
        "ccl_delta_d": 1.5,
        "ccl_alpha": 1.0,
        "ccl_beta": 1.0,
        "ccl_gamma": 0.001,
        # Weight of the attention affinity loss (ccnet.losses.AttentionAffinityLoss): each cell's attention
        # against the same-class cells of its cross. 0 = off (the paper).
        "attention_weight": 0.0,
    },
    "optim": {
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "poly_power": 0.9,
        "iterations": 2000,
        "batch_size": 8,  # per process
        # The attention scales gamma start at 0, where the attention's own weights get no gradient and only
        # decay; these let gamma learn faster / without decay (docs/TRAINING.md, "gamma"). Defaults: as the rest.
        "gamma_lr_mult": 1.0,
        "gamma_weight_decay": None,  # None: optim.weight_decay
    },
    "train": {
        "device": "auto",  # auto | cpu | cuda | cuda:N
        # mixed precision: true = float16 on CUDA only; "bfloat16" / "float16" on any device; "auto" = decided on
        # the machine (training/precision.py: bfloat16 on a CPU with native bfloat16, float16 on CUDA)
        "amp": True,
        "sync_bn": False,  # SyncBatchNorm under DDP (CUDA only)
        "log_every": 10,
        "val_every": 250,
        "save_every": 50,  # full training state, for --resume
        "val_max_images": None,  # evaluate on the first N val images only (None: all)
        "threads": None,  # torch CPU threads (None: torch's default)
        "channels_last": False,  # channels-last memory (faster float32 convs on CPU); "auto": by the precision
        "lift_cells": 16,  # cells per val image for the same-class lift logged at each validation (0 = off)
        # torch.compile the training step's network (inductor). Off by default: whether it pays is measured per
        # machine (benchmarks/bench_training_throughput.py; the campaign queue's probe decides it for its runs)
        "compile": False,
    },
}

# Keys that may change when a run is resumed: where the data is, how it is computed (threads, compiled or not) and,
# because a run may move between machines, the precision; not what is trained (model, losses, schedule, data order).
RESUMABLE_KEYS = {
    "data.root",
    "data.num_workers",
    "train.device",
    "train.log_every",
    "train.threads",
    "train.lift_cells",
    "train.compile",  # the same computation, compiled or not
    # Precision is chosen per machine (amp "auto", or the campaign queue's probe), so a run that moves between
    # machines may change it; every start and resume records what it used in run.json.
    "train.amp",
    "train.channels_last",
}


class ConfigError(ValueError):
    """A configuration problem, naming the key."""


def _merge(base: dict, update: Mapping, prefix: str = "") -> dict:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key '{dotted}'; known keys: {', '.join(flatten(DEFAULTS))}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{dotted}' must be a section (mapping), got {value!r}")
            _merge(base[key], value, dotted + ".")
        else:
            base[key] = value
    return base


def flatten(config: Mapping, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}"""
    flat = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def parse_override(text: str) -> dict:
    """'optim.lr=0.02' -> {'optim': {'lr': 0.02}} (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    nested: dict = {}
    node = nested
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: Iterable[str | Mapping] = ()) -> dict:
    """Defaults <- YAML file <- overrides (strings 'a.b=v' or nested mappings), then validated."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            content = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from error
        if not isinstance(content, Mapping):
            raise ConfigError(f"{path} must hold a mapping of sections (data, model, loss, optim, train)")
        _merge(config, content)
    for override in overrides:
        _merge(config, parse_override(override) if isinstance(override, str) else override)
    validate_config(config)
    return config


def _require(condition: bool, key: str, expected: str, config: dict) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}' must be {expected}, got {flatten(config).get(key)!r}")


def _is_pair(value, kind=(int, float)) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    )


def validate_config(config: dict) -> None:
    """Checks that would otherwise fail late (or silently) during training."""
    data, model, loss, optim, train = (config[k] for k in ("data", "model", "loss", "optim", "train"))
    _require(isinstance(config["seed"], int), "seed", "an integer", config)
    _require(
        data["crop_size"] is None or (_is_pair(data["crop_size"], int) and min(data["crop_size"]) > 0),
        "data.crop_size",
        "[H, W] positive integers or null",
        config,
    )
    _require(
        _is_pair(data["scale_range"]) and 0 < data["scale_range"][0] <= data["scale_range"][1],
        "data.scale_range",
        "[low, high] with 0 < low <= high",
        config,
    )
    _require(
        isinstance(data["num_workers"], int) and data["num_workers"] >= 0,
        "data.num_workers",
        "an integer >= 0",
        config,
    )
    for key in ("mean", "std"):
        _require(
            isinstance(data[key], list) and len(data[key]) == 3,
            f"data.{key}",
            "3 numbers (RGB, 0-255)",
            config,
        )
    _require(
        isinstance(model["recurrence"], int) and model["recurrence"] >= 0,
        "model.recurrence",
        "an integer >= 0",
        config,
    )
    _require(
        not loss["ccl"] or model["ccl_channels"] > 0,
        "model.ccl_channels",
        "> 0 (16 in the paper) when loss.ccl is true",
        config,
    )
    _require(
        isinstance(loss["attention_weight"], int | float) and not isinstance(loss["attention_weight"], bool)
        and loss["attention_weight"] >= 0,
        "loss.attention_weight",
        "a number >= 0",
        config,
    )  # fmt: skip
    _require(
        loss["attention_weight"] == 0 or model["recurrence"] > 0,
        "loss.attention_weight",
        "0 when model.recurrence is 0 (a baseline has no attention to supervise)",
        config,
    )
    _require(
        isinstance(model["gamma_init"], int | float) and not isinstance(model["gamma_init"], bool),
        "model.gamma_init",
        "a number",
        config,
    )
    sha = model["pretrained_sha256"]
    _require(
        sha is None or (isinstance(sha, str) and len(sha) == 64),
        "model.pretrained_sha256",
        "null or a 64-character hex sha256",
        config,
    )
    weights = loss["class_weights"]
    _require(
        weights is None or weights == "enet" or isinstance(weights, list),
        "loss.class_weights",
        'null, "enet" or a list of per-class weights',
        config,
    )
    _require(
        isinstance(optim["iterations"], int) and optim["iterations"] > 0,
        "optim.iterations",
        "a positive integer",
        config,
    )
    _require(
        isinstance(optim["batch_size"], int) and optim["batch_size"] > 0,
        "optim.batch_size",
        "a positive integer",
        config,
    )
    _require(
        data["crop_size"] is not None or optim["batch_size"] == 1,
        "optim.batch_size",
        "1 when data.crop_size is null (whole images differ in size)",
        config,
    )
    for key in ("lr", "momentum", "weight_decay", "poly_power"):
        value = optim[key]
        _require(
            isinstance(value, int | float) and not isinstance(value, bool) and value >= 0,
            f"optim.{key}",
            "a number >= 0 (YAML reads 1e-4 as text: write 0.0001 or 1.0e-4)",
            config,
        )
    _require(
        isinstance(optim["gamma_lr_mult"], int | float) and not isinstance(optim["gamma_lr_mult"], bool)
        and optim["gamma_lr_mult"] > 0,
        "optim.gamma_lr_mult",
        "a number > 0",
        config,
    )  # fmt: skip
    decay = optim["gamma_weight_decay"]
    _require(
        decay is None or (isinstance(decay, int | float) and not isinstance(decay, bool) and decay >= 0),
        "optim.gamma_weight_decay",
        "null (same as optim.weight_decay) or a number >= 0",
        config,
    )
    _require(
        train["amp"] in (True, False, "bfloat16", "float16", "auto"),
        "train.amp",
        'true, false, "bfloat16", "float16" or "auto"',
        config,
    )
    _require(train["channels_last"] in (True, False, "auto"), "train.channels_last", 'true, false or "auto"', config)
    _require(train["compile"] in (True, False), "train.compile", "true or false", config)
    for key in ("log_every", "val_every", "save_every"):
        _require(isinstance(train[key], int) and train[key] > 0, f"train.{key}", "a positive integer", config)


def differing_keys(old: Mapping, new: Mapping, ignore: Iterable[str] = RESUMABLE_KEYS) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, except those in `ignore`."""
    flat_old, flat_new = flatten(old), flatten(new)
    keys = sorted(set(flat_old) | set(flat_new))
    return [k for k in keys if k not in set(ignore) and flat_old.get(k) != flat_new.get(k)]


def dump_config(config: Mapping) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)
