"""Train CCNet on a segmentation dataset (the paper's recipe; see docs/TRAINING.md).

    python -m training.train --config training/configs/camvid_r2.yaml --out runs/camvid_r2
    python -m training.train --config training/configs/camvid_r2.yaml --out runs/camvid_r2 --resume
    torchrun --nproc_per_node 2 -m training.train --config ... --out ...      (DistributedDataParallel)

A run folder holds the resolved config, a resumable training state, metrics (JSON lines and
TensorBoard) and the best-on-val and last checkpoints (safetensors + JSON sidecar).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ccnet import projections
from ccnet.backbones import load_backbone_weights
from ccnet.checkpoint import code_version, save_checkpoint
from ccnet.datasets import IGNORE_INDEX, SegmentationDataset, find_dataset
from ccnet.factory import build_model
from ccnet.inference import DEFAULT_CROP_SIZE
from ccnet.metrics import SegmentationScores, scores_from_confusion

from .attention_quality import attention_lift
from .class_weights import class_pixel_counts, enet_weights
from .config import ConfigError, load_config
from .distributed import barrier, init_processes, leave_processes
from .errors import USER_ERRORS, NonFiniteLossError, RunFolderError
from .evaluate import confusion_over_dataset, reduce_confusion, shard_indices
from .objective import SegmentationObjective
from .precision import compile_keeps_layout, describe_machine, resolve_precision
from .pretrained import describe_load_report, verified_weights
from .run_folder import (
    METRICS_FILE,
    TENSORBOARD_DIR,
    MetricsLog,
    check_run_folder,
    clear_run_artefacts,
    read_saved_config,
    remove_stale_temporaries,
    update_run_record,
    write_config,
)
from .sampling import ResumableShardSampler
from .state import (
    STATE_FILE,
    capture_rng_states,
    load_training_state,
    restore_rng_states,
    save_training_state,
)
from .transforms import EvalTransform, TrainTransform

EXIT_USER_ERROR = 2
EXIT_NON_FINITE = 3


def _worker_init(_: int) -> None:
    # Each loader worker is one of several processes on few cores: no nested thread pools.
    torch.set_num_threads(1)
    cv2.setNumThreads(0)


def command_line() -> list[str]:
    """sys.argv with the script's path relative to the working folder (no machine paths in run records)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        script = Path(script.name)
    return [str(script), *sys.argv[1:]]


# --- schedule -----------------------------------------------------------------------------------------


def poly_lr(base_lr: float, step: int, total: int, power: float) -> float:
    """lr * (1 - step / total) ^ power: the learning rate of (0-based) iteration `step`."""
    return base_lr * (1 - step / total) ** power


# --- the trainer --------------------------------------------------------------------------------------


@dataclass
class TrainSummary:
    out_dir: Path
    step: int
    finished: bool
    best_miou: float | None
    best_step: int | None
    last_scores: dict | None


def _is_gamma(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "gamma"


def parameter_groups(model: torch.nn.Module, optim: dict) -> list[dict]:
    """One group for every parameter, unless the attention scales gamma get their own learning-rate multiplier
    or weight decay (optim.gamma_lr_mult, optim.gamma_weight_decay); `lr_mult` scales the poly schedule."""
    if optim["gamma_lr_mult"] == 1 and optim["gamma_weight_decay"] is None:
        return [{"params": list(model.parameters()), "lr_mult": 1.0}]
    named = list(model.named_parameters())
    gammas = [p for name, p in named if _is_gamma(name)]
    rest = [p for name, p in named if not _is_gamma(name)]
    decay = optim["weight_decay"] if optim["gamma_weight_decay"] is None else optim["gamma_weight_decay"]
    groups = [{"params": rest, "lr_mult": 1.0}]
    if gammas:
        groups.append({"params": gammas, "lr_mult": float(optim["gamma_lr_mult"]), "weight_decay": decay})
    return groups


def attention_scales(model: torch.nn.Module) -> dict[str, float]:
    """The learned attention scales (gamma), logged at each validation: near 0, the attention is unused."""
    named = model.named_parameters()
    return {f"gamma/{name}": float(p.detach().reshape(-1)[0]) for name, p in named if _is_gamma(name)}


class Trainer:
    """One training run in one folder; `run()` trains to config.optim.iterations (or resumes towards it)."""

    def __init__(
        self,
        config: dict,
        out_dir: Path,
        resume: bool = False,
        overwrite: bool = False,
        show_progress: bool = True,
    ):
        self.config, self.out_dir, self.show_progress = config, Path(out_dir), show_progress
        self.processes, self.device = init_processes(config["train"]["device"])
        self.precision = resolve_precision(config["train"]["amp"], config["train"]["channels_last"], self.device.type)
        if self.processes.is_main:
            print(
                f"precision: {self.precision.name}, channels-last {self.precision.channels_last} "
                f"({self.precision.reason})",
                file=sys.stderr,
            )
        if config["train"]["threads"]:
            torch.set_num_threads(int(config["train"]["threads"]))
        check_run_folder(self.out_dir, config, resume, overwrite)
        state_path = self.out_dir / STATE_FILE
        self.resumed_state = load_training_state(state_path) if resume and state_path.is_file() else None
        self._seed(config["seed"] + self.processes.rank)
        # Everything that can fail on bad data or settings comes before the run folder is touched.
        self._build_data()
        self._build_model()
        self._build_optimisation()
        self.step, self.best_miou, self.best_step, self.last_scores = 0, None, None, None
        if self.resumed_state is not None:
            self._restore(self.resumed_state)
        self._prepare_folder(overwrite)

    # -- set-up --

    def _prepare_folder(self, overwrite: bool) -> None:
        if self.processes.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if overwrite:
                clear_run_artefacts(self.out_dir)
            remove_stale_temporaries(self.out_dir)
            write_config(self.out_dir, self.config)
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            if self.resumed_state is None and not (self.out_dir / "run.json").is_file():
                update_run_record(
                    self.out_dir,
                    {
                        "run_id": uuid.uuid4().hex,
                        "created": now,
                        "seed": self.config["seed"],
                        "world_size": self.processes.world_size,
                        "code_version": code_version(),
                        "torch": torch.__version__,
                        "device": str(self.device),
                        "command": command_line(),
                        "class_weights": self.class_weights,
                        "precision": self.precision.record(),
                        "machine": describe_machine(self.device),
                    },
                )
            else:
                step = self.resumed_state["step"] if self.resumed_state else 0
                update_run_record(
                    self.out_dir,
                    {
                        "resumed": [
                            {
                                "time": now,
                                "step": step,
                                "command": command_line(),
                                "device": str(self.device),
                                "precision": self.precision.record(),
                                "machine": describe_machine(self.device),
                            }
                        ]
                    },
                )
        barrier(self.processes)

    @staticmethod
    def _seed(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _build_data(self) -> None:
        data = self.config["data"]
        self.train_spec = find_dataset(data["dataset"], data["root"], data["train_split"])
        self.val_spec = find_dataset(data["dataset"], data["root"], data["val_split"])
        if self.val_spec.classes != self.train_spec.classes:
            raise ConfigError(f"splits {data['train_split']} and {data['val_split']} have different class lists")
        transform = TrainTransform(data["crop_size"], data["scale_range"], data["flip"], data["mean"], data["std"])
        self.train_set = SegmentationDataset(self.train_spec, transform, seed=self.config["seed"])
        self.val_set = SegmentationDataset(self.val_spec, EvalTransform(data["mean"], data["std"]))

    def _train_loader(self, start_step: int) -> DataLoader:
        """The endless training stream of this process, positioned at `start_step`."""
        batch_size = self.config["optim"]["batch_size"]
        sampler = ResumableShardSampler(
            len(self.train_set),
            self.config["seed"],
            self.processes.rank,
            self.processes.world_size,
            start=start_step * batch_size,
        )
        workers = self.config["data"]["num_workers"]
        return DataLoader(
            self.train_set,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if workers else None,
            # Its own generator: creating a loader must not consume the global RNG (exact resumes).
            generator=torch.Generator().manual_seed(self.config["seed"]),
            prefetch_factor=2 if workers else None,
        )

    def _class_weights(self) -> list[float] | None:
        setting = self.config["loss"]["class_weights"]
        if setting is None:
            return None
        if isinstance(setting, list):
            if len(setting) != self.train_spec.num_classes:
                raise ConfigError(
                    f"loss.class_weights has {len(setting)} entries; the dataset has "
                    f"{self.train_spec.num_classes} classes"
                )
            return [float(w) for w in setting]
        # "enet": count once on the main process (cached), then every process reads the cache.
        if self.processes.is_main:
            counts = class_pixel_counts(self.train_spec)
        barrier(self.processes)
        if not self.processes.is_main:
            counts = class_pixel_counts(self.train_spec)
        return enet_weights(counts)

    def _build_model(self) -> None:
        model_config = dict(self.config["model"])
        pretrained = model_config.pop("pretrained")
        expected_sha = model_config.pop("pretrained_sha256")
        gamma_init = float(model_config.pop("gamma_init"))
        self.model = build_model({**model_config, "num_classes": self.train_spec.num_classes})
        if pretrained:
            report = load_backbone_weights(self.model.backbone, verified_weights(pretrained, expected_sha))
            if self.processes.is_main and self.resumed_state is None:
                print(describe_load_report(pretrained, report), file=sys.stderr)
        if self.model.attention is not None:
            with torch.no_grad():
                self.model.attention.cca.gamma.fill_(gamma_init)
        self.model.to(self.device)
        if self.precision.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.processes.distributed and self.config["train"]["sync_bn"]:
            if self.device.type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            elif self.processes.is_main:
                print(
                    "train.sync_bn ignored: SyncBatchNorm needs CUDA; using per-process BatchNorm",
                    file=sys.stderr,
                )
        self.network = self.model  # what the training step calls (the DDP wrapper when distributed)
        if self.processes.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=device_ids)
        if self.config["train"]["compile"]:
            # Only the training step is compiled; validation, saving and the state dict use the eager model.
            keep_layout = compile_keeps_layout(self.precision, self.device.type)
            # Inductor lays convolutions out channels-last by itself, where some CPUs' bfloat16 depthwise weight
            # gradient is wrong (training/precision.py): there, this network alone keeps the eager layout.
            options = {"layout_optimization": False} if keep_layout else None
            if self.processes.is_main:
                print(f"torch.compile on{' (inductor layout optimisation off)' if keep_layout else ''}",
                      file=sys.stderr)  # fmt: skip
            self.network = torch.compile(self.network, options=options)

    def _build_optimisation(self) -> None:
        optim = self.config["optim"]
        self.class_weights = self._class_weights()
        self.objective = SegmentationObjective(self.config["loss"], self.class_weights).to(self.device)
        self.optimizer = torch.optim.SGD(
            parameter_groups(self.model, optim),
            lr=optim["lr"],
            momentum=optim["momentum"],
            weight_decay=optim["weight_decay"],
        )
        self.amp_dtype = self.precision.amp_dtype
        self.amp = self.amp_dtype is not None
        # A loss scale only for float16: bfloat16 has float32's exponent range.
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )

    # -- state --

    def _restore(self, state: dict) -> None:
        if state["world_size"] != self.processes.world_size:
            raise RunFolderError(
                f"{self.out_dir} was trained by {state['world_size']} process(es); resume it with the same "
                f"number (this job has {self.processes.world_size}) to keep the same data order and schedule"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.best_miou, self.best_step = state["step"], state["best_miou"], state["best_step"]
        restore_rng_states(state["rng"], self.processes.rank)

    def _check_parameters_finite(self, when: str) -> None:
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise NonFiniteLossError(self._non_finite_message(f"weights {name} became non-finite {when}"))

    def save_state(self) -> None:
        """Everything --resume needs, written atomically (collective under DDP)."""
        self._check_parameters_finite(f"after iteration {self.step}")
        rng = capture_rng_states()
        if self.processes.is_main:
            save_training_state(
                self.out_dir / STATE_FILE,
                {
                    "step": self.step,
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict() if self.amp else {},
                    "best_miou": self.best_miou,
                    "best_step": self.best_step,
                    "rng": rng,
                    "world_size": self.processes.world_size,
                    "seed": self.config["seed"],
                },
            )
        barrier(self.processes)

    def _non_finite_message(self, what: str) -> str:
        state = self.out_dir / STATE_FILE
        saved = f"{state} (iteration {load_training_state(state)['step']})" if state.is_file() else "none yet"
        return (
            f"{what}; training stopped. Last good training state: {saved}; best/last checkpoints untouched. "
            "Resuming would repeat the same steps: fix the cause (e.g. lower optim.lr, check the data) and "
            "start again with --overwrite"
        )

    # -- one iteration --

    def _set_lr(self) -> float:
        optim = self.config["optim"]
        lr = poly_lr(optim["lr"], self.step, optim["iterations"], optim["poly_power"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        if self.processes.distributed:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)  # every process stops together
        return bool(finite.item() > 0)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        self.network.train()
        images = images.to(self.device, non_blocking=True)  # (B, 3, H, W)
        if self.precision.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(self.device, non_blocking=True)  # (B, H, W)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp):
            output = self.network(images, return_attention=self.objective.needs_attention)
            loss, parts = self.objective(output, labels)
        if not self._all_finite(loss):
            raise NonFiniteLossError(self._non_finite_message(f"loss is {loss.item()} at iteration {self.step + 1}"))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.item()} | {name: value.item() for name, value in parts.items()}

    # -- validation and checkpoints --

    def validate(self) -> SegmentationScores:
        indices = shard_indices(
            len(self.val_set),
            self.processes.rank,
            self.processes.world_size,
            self.config["train"]["val_max_images"],
        )
        crop = self.config["data"]["crop_size"] or DEFAULT_CROP_SIZE
        confusion = confusion_over_dataset(
            self.model,
            self.val_set,
            self.device,
            indices,
            inference={"mode": "auto", "crop_size": crop},
            num_workers=min(self.config["data"]["num_workers"], 2),
            show_progress=False,
        )
        return scores_from_confusion(reduce_confusion(confusion, self.device), self.val_spec.classes.names)

    def attention_quality(self) -> dict:
        """The class-balanced same-class lift on val at the trained loop count (training.attention_quality)."""
        cells = self.config["train"].get("lift_cells", 0)
        if not cells or self.model.attention is None:
            return {}
        result = attention_lift(
            self.model, self.val_set, self.device, cells_per_image=cells,
            max_images=self.config["train"]["val_max_images"],
        )[self.model.recurrence]  # fmt: skip
        return {"lift": result["lift"], "lift_per_class": result["per_class"]}

    def checkpoint_metadata(self, scores: SegmentationScores) -> dict:
        data = self.config["data"]
        return {
            "class_names": list(self.train_spec.classes.names),
            "palette": self.train_spec.classes.palette_lists(),
            "mean": list(data["mean"]),
            "std": list(data["std"]),
            "ignore_index": IGNORE_INDEX,
            "input_size": data["crop_size"],
            "dataset": self.train_spec.classes.dataset,
            "split": data["val_split"],
            "metrics": scores.to_dict() | {"step": self.step},
            # The dataset root is this machine's path: not worth shipping inside a checkpoint.
            "train_config": self.config | {"data": self.config["data"] | {"root": None}},
            "step": self.step,
            "seed": self.config["seed"],
            "train_images": len(self.train_set),
        }

    def after_validation(self, scores: SegmentationScores) -> None:
        miou = scores.mean_iou if not math.isnan(scores.mean_iou) else -1.0
        improved = self.best_miou is None or miou > self.best_miou
        if improved:
            self.best_miou, self.best_step = miou, self.step
        self.last_scores = scores.to_dict()
        if self.processes.is_main:
            self._check_parameters_finite(f"after iteration {self.step}")
            metadata = self.checkpoint_metadata(scores)
            if improved:
                save_checkpoint(self.model, self.out_dir / "best", metadata)
            save_checkpoint(self.model, self.out_dir / "last", metadata)

    # -- the loop --

    def run(self, stop_at: int | None = None, max_minutes: float | None = None) -> TrainSummary:
        """Train to the end of the schedule, or pause (state saved) at iteration `stop_at` / after `max_minutes`."""
        train = self.config["train"]
        total = self.config["optim"]["iterations"]
        deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
        log = MetricsLog(self.out_dir / METRICS_FILE, keep_until_step=self.step) if self.processes.is_main else None
        writer = self._tensorboard() if self.processes.is_main else None
        batches = iter(self._train_loader(self.step))
        bar = tqdm(
            total=total,
            initial=self.step,
            desc=f"train {self.out_dir.name}",
            dynamic_ncols=True,
            disable=not (self.processes.is_main and self.show_progress),
            smoothing=0.1,
        )
        window = _Window()
        images_per_step = self.config["optim"]["batch_size"] * self.processes.world_size
        try:
            while self.step < total:
                lr = self._set_lr()
                images, labels = next(batches)
                values = self.train_step(images, labels)
                self.step += 1
                window.add(values, images_per_step)
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2e}", img_s=f"{window.rate():.2f}")
                if self.step % train["log_every"] == 0 or self.step == total:
                    self._log_training(window, lr, log, writer)
                    window = _Window()
                if self.step % train["val_every"] == 0 or self.step == total:
                    self._log_validation(self.validate(), log, writer, bar)
                pause = self.step < total and self._should_pause(stop_at, deadline)
                if self.step % train["save_every"] == 0 or self.step == total or pause:
                    self.save_state()
                if pause:
                    bar.write(f"paused at iteration {self.step} of {total} (state saved): continue with --resume")
                    break
        finally:
            bar.close()
            del batches  # stops loader workers
            if log is not None:
                log.close()
            if writer is not None:
                writer.close()
        return TrainSummary(
            self.out_dir, self.step, self.step >= total, self.best_miou, self.best_step, self.last_scores
        )

    def _should_pause(self, stop_at: int | None, deadline: float | None) -> bool:
        pause = stop_at is not None and self.step >= stop_at
        if deadline is not None:
            out_of_time = torch.tensor([float(time.monotonic() > deadline)], device=self.device)
            if self.processes.distributed:
                dist.all_reduce(out_of_time, op=dist.ReduceOp.MAX)  # clocks differ: pause together
            pause = pause or bool(out_of_time.item())
        return pause

    def _tensorboard(self):
        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

        return SummaryWriter(str(self.out_dir / TENSORBOARD_DIR), purge_step=self.step or None)

    def _log_training(self, window: _Window, lr: float, log: MetricsLog | None, writer) -> None:
        means = window.means()
        if self.processes.distributed:  # average over processes
            packed = torch.tensor([means[k] for k in sorted(means)], dtype=torch.float64, device=self.device)
            dist.all_reduce(packed)
            means = dict(zip(sorted(means), (packed / self.processes.world_size).tolist(), strict=True))
        if log is None:
            return
        record = {
            "step": self.step,
            "kind": "train",
            "lr": lr,
            "images_per_s": window.rate(),
            "time": time.time(),
        } | means
        log.write(record)
        for name, value in means.items():
            writer.add_scalar(f"train/{name}", value, self.step)
        writer.add_scalar("train/lr", lr, self.step)
        writer.add_scalar("train/images_per_s", record["images_per_s"], self.step)

    def _log_validation(self, scores: SegmentationScores, log: MetricsLog | None, writer, bar) -> None:
        self.after_validation(scores)
        if log is None:
            return
        scales = attention_scales(self.model) | self.attention_quality()
        log.write(
            {
                "step": self.step,
                "kind": "val",
                "split": self.config["data"]["val_split"],
                "best_mIoU": self.best_miou,
                "best_step": self.best_step,
                "time": time.time(),
            }
            | scales
            | scores.to_dict()
        )
        for name, value in scales.items():
            if isinstance(value, float):
                writer.add_scalar(f"val/{name}", value, self.step)
        writer.add_scalar("val/mIoU", scores.mean_iou, self.step)
        writer.add_scalar("val/pixel_accuracy", scores.pixel_accuracy, self.step)
        for name, value in zip(scores.class_names, scores.iou, strict=True):
            writer.add_scalar(f"val_iou/{name}", value, self.step)
        bar.write(
            f"iteration {self.step}: val mIoU {100 * scores.mean_iou:.2f}% "
            f"(best {100 * self.best_miou:.2f}% at {self.best_step})"
        )


class _Window:
    """Loss means and throughput since the last log line."""

    def __init__(self):
        self.started, self.images, self.count, self.sums = time.perf_counter(), 0, 0, {}

    def add(self, values: dict[str, float], images: int) -> None:
        self.count += 1
        self.images += images
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value

    def means(self) -> dict[str, float]:
        return {name: total / max(self.count, 1) for name, total in self.sums.items()}

    def rate(self) -> float:
        return self.images / max(time.perf_counter() - self.started, 1e-9)


def train(
    config: dict,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    stop_at: int | None = None,
    max_minutes: float | None = None,
) -> TrainSummary:
    """Train (or resume) one run; the in-process entry point behind the command line.

    stop_at / max_minutes pause the run (state saved) so that it can continue later with resume=True.
    """
    # The attention's projections on torch.mm in every process of a run (unless CCNET_PROJECTION_METHOD says
    # otherwise): ccnet.projections' timed choice can differ between processes where two ways time alike, and a
    # resumed run must sum in the same order as an uninterrupted one. They are a small part of a training step.
    try:
        with projections.forced_method(projections.PROJECTION_METHOD or "matmul"):
            return Trainer(config, Path(out_dir), resume, overwrite, show_progress).run(stop_at, max_minutes)
    finally:
        leave_processes()


# --- command line -------------------------------------------------------------------------------------

FLAG_KEYS = {  # explicit flags -> config keys (each is a shortcut for --set KEY=VALUE)
    "data_root": "data.root",
    "device": "train.device",
    "iterations": "optim.iterations",
    "batch_size": "optim.batch_size",
    "lr": "optim.lr",
    "recurrence": "model.recurrence",
    "num_workers": "data.num_workers",
    "seed": "seed",
    "val_every": "train.val_every",
    "save_every": "train.save_every",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train CCNet (SGD + poly schedule, aux loss 0.4, optional OHEM / class weights / CCL). "
        "Settings: built-in defaults < --config YAML < --set / flags. Resumable; runs under torchrun (DDP).",
    )
    parser.add_argument("--config", type=Path, help="YAML config (see training/configs/); default: built-in defaults")
    parser.add_argument("--out", type=Path, required=True, help="run folder (config, state, logs, checkpoints)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set optim.lr=0.02 --set data.crop_size=[360,480]",
    )
    parser.add_argument("--data-root", help="dataset root (default: data.root, else $CAMVID_ROOT, ...)")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--iterations", type=int, help="total iterations of the schedule")
    parser.add_argument("--batch-size", type=int, help="images per iteration per process")
    parser.add_argument("--lr", type=float, help="base learning rate")
    parser.add_argument("--recurrence", type=int, help="RCCA loops R (0 = baseline without attention)")
    parser.add_argument("--num-workers", type=int, help="data-loading worker processes")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--val-every", type=int, help="validate every N iterations")
    parser.add_argument("--save-every", type=int, help="save the resumable state every N iterations")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    parser.add_argument(
        "--export",
        type=Path,
        metavar="DEST",
        help="after training, copy the best checkpoint to DEST (e.g. checkpoints/camvid_r2) and index it",
    )
    parser.add_argument(
        "--stop-at", type=int, metavar="N", help="pause after iteration N (state saved; continue later with --resume)"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="pause after this many minutes of training (state saved; continue with --resume)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite contradict each other")
    return args


def resolve_config(args: argparse.Namespace) -> dict:
    """Defaults < config file < overrides; --resume without --config starts from the run's saved config."""
    overrides = list(args.overrides)
    overrides += [f"{key}={getattr(args, name)}" for name, key in FLAG_KEYS.items() if getattr(args, name) is not None]
    if args.resume and args.config is None:
        saved = read_saved_config(args.out)
        if saved is None:
            raise RunFolderError(
                f"nothing to resume in {args.out}: it has no config.yaml. Drop --resume to start a run"
            )
        return load_config(None, [saved, *overrides])
    return load_config(args.config, overrides)


def report_and_export(summary: TrainSummary, export: Path | None) -> None:
    if not summary.finished:
        print(f"paused at iteration {summary.step}; continue with --resume --out {summary.out_dir}")
        return
    if summary.best_miou is not None:
        print(
            f"finished at iteration {summary.step}; best val mIoU {100 * summary.best_miou:.2f}% "
            f"at iteration {summary.best_step}; checkpoints in {summary.out_dir}"
        )
    if export is not None:
        from .export import export_run

        export_run(summary.out_dir, export)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = resolve_config(args)
        summary = train(
            config, args.out, args.resume, args.overwrite, not args.no_progress, args.stop_at, args.max_minutes
        )
        if int(os.environ.get("RANK", 0)) == 0:
            report_and_export(summary, args.export)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NON_FINITE
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
