"""Heads on a frozen backbone: every CamVid model other than the default, trained in minutes on cached features.

The campaign trains the default R = 2 model end to end. Each other model keeps that backbone, frozen, and gets
its own head (RCCA head, auxiliary head, skip decoder), trained from a fresh initialisation on the features
``training.feature_cache`` wrote: random crops of the cached feature maps (scales x flips of the train frames),
the campaign's losses and optimiser, one seed per run. So "a model per loop count" differ only in their head.

    python -m training.heads FEATURES --kind r2 --seed 0 --out runs/heads      # one head
    python -m training.heads FEATURES --kind all --seeds 5 --out runs/heads    # every kind x 5 seeds

Kinds: r0 (no attention), r1, r2, r3, r2_ccl (the category consistent loss), r2_paper (the paper's losses:
gamma starting at 0, no affinity loss). Each run writes RUN/<kind>_s<seed>.json (val mIoU, per-class IoU,
same-class lift, gamma, seconds) and a full checkpoint (campaign backbone + this head) beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ccnet.analysis import cell_centre_labels, class_balanced_mean
from ccnet.backbones import BackboneFeatures
from ccnet.checkpoint import load_checkpoint, save_checkpoint
from ccnet.datasets import IGNORE_INDEX
from ccnet.factory import build_model
from ccnet.metrics import confusion_matrix, scores_from_confusion
from ccnet.propagation_3d import influence_maps_3d, temporal_share, uniform_attention_3d
from ccnet.sequences import CAMVID_ORDER, centred_windows, clip_plan, sliding_windows

from .attention_quality import DEFAULT_CELLS_PER_IMAGE, lifts_of_image, sample_cells
from .class_weights import enet_weights
from .feature_cache import load_entry, read_manifest
from .objective import SegmentationObjective
from .precision import describe_machine, resolve_precision
from .train import attention_scales, poly_lr

STRIDE = 8
# The head's recipe differences from the campaign's (recurrence, CCL, gamma start, affinity loss weight).
KINDS = {
    "r0": {"recurrence": 0, "ccl": False, "gamma_init": 1.0, "attention_weight": 0.0},
    "r1": {"recurrence": 1, "ccl": False, "gamma_init": 1.0, "attention_weight": None},
    "r2": {"recurrence": 2, "ccl": False, "gamma_init": 1.0, "attention_weight": None},
    "r3": {"recurrence": 3, "ccl": False, "gamma_init": 1.0, "attention_weight": None},
    "r2_ccl": {"recurrence": 2, "ccl": True, "gamma_init": 1.0, "attention_weight": None},
    "r2_paper": {"recurrence": 2, "ccl": False, "gamma_init": 0.0, "attention_weight": 0.0},
    # Video heads (3D RCCA across T consecutive labelled frames, R = 3 as the paper's CamVid model) and the
    # T = 1 twin of the paper's two rows; the affinity loss runs over the 3D cross.
    "video_t5": {"recurrence": 3, "ccl": False, "gamma_init": 1.0, "attention_weight": None, "frames": 5},
    "video_t1": {"recurrence": 3, "ccl": False, "gamma_init": 1.0, "attention_weight": None, "frames": 1},
}
VIDEO_BATCH_FRAMES = 10  # frames per batch for video heads, whatever T (2 clips of 5, or 10 of 1)
CCL_CHANNELS = 16
# 300 iterations: about 3 minutes per head here (0.61 s per bfloat16 step, benchmarks/bench_head_step.py), so
# 8 kinds x 5 seeds fit in about 2.5 hours of 2 cores; the probe in docs/TRAINING.md ("Heads") gives the cost.
DEFAULTS = {"iterations": 300, "batch_size": 8, "crop_cells": (32, 44)}  # 256x352 px; fits the 0.75 scale


def head_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if not name.startswith("backbone.")]


def build_head_model(
    backbone_checkpoint: str | Path, kind: str, seed: int, expected_save_id: str | None = None
) -> tuple[torch.nn.Module, dict]:
    """The campaign's network with a fresh head of `kind` (seeded) on the campaign's backbone weights."""
    campaign, metadata = load_checkpoint(backbone_checkpoint, device="cpu")
    if expected_save_id is not None and metadata.get("save_id") != expected_save_id:
        raise ValueError(
            f"{backbone_checkpoint} was saved again since its features were cached (save {metadata.get('save_id')}, "
            f"features of {expected_save_id}): cache its features again (python -m training.feature_cache)"
        )
    recipe = KINDS[kind]
    config = dict(metadata["model_config"])
    config["recurrence"] = recipe["recurrence"]
    config["ccl_channels"] = CCL_CHANNELS if recipe["ccl"] else 0
    config["frames"] = recipe.get("frames")
    torch.manual_seed(seed)
    model = build_model(config)
    model.backbone.load_state_dict(campaign.backbone.state_dict())
    model.backbone.requires_grad_(False)
    if model.attention is not None:
        with torch.no_grad():
            model.attention.cca.gamma.fill_(recipe["gamma_init"])
    return model, metadata


def loss_config(metadata: dict, kind: str) -> dict:
    loss = dict((metadata.get("train_config") or {}).get("loss") or {})
    defaults = {"aux_weight": 0.4, "ohem": False, "ccl_delta_v": 0.5, "ccl_delta_d": 1.5, "ccl_alpha": 1.0,
                "ccl_beta": 1.0, "ccl_gamma": 0.001, "attention_weight": 0.4}  # fmt: skip
    loss = defaults | loss
    recipe = KINDS[kind]
    loss["ccl"] = recipe["ccl"]
    if recipe["attention_weight"] is not None:
        loss["attention_weight"] = recipe["attention_weight"]
    if recipe["recurrence"] == 0:
        loss["attention_weight"] = 0.0
    return loss


def label_counts(folder: Path, entries: list[dict], num_classes: int) -> np.ndarray:
    """Pixels per class over the scale-1, unflipped train labels (the frames themselves)."""
    counts = np.zeros(num_classes, np.int64)
    for entry in entries:
        if entry["scale"] == 1.0 and not entry["flip"]:
            label = load_entry(folder, entry)["label"].numpy()
            counts += np.bincount(label[label < num_classes].ravel(), minlength=num_classes)[:num_classes]
    return counts


def _padded_label(label: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(H', W') uint8 -> (8h, 8w) int64 with void where the feature grid reaches past the frame."""
    out = torch.full((STRIDE * h, STRIDE * w), IGNORE_INDEX, dtype=torch.int64)
    rows, cols = min(label.shape[0], STRIDE * h), min(label.shape[1], STRIDE * w)
    out[:rows, :cols] = label[:rows, :cols].long()
    return out


def _padded_low(low: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(C, H/4, W/4) -> (C, 2h, 2w): an odd frame size leaves the stride-4 map one row or column short of twice
    the stride-8 grid (450 rows: 113 at stride 4, 57 at stride 8); the missing border is zeros."""
    rows, cols = low.shape[-2:]
    if (rows, cols) == (2 * h, 2 * w):
        return low
    return F.pad(low[:, : 2 * h, : 2 * w], (0, max(0, 2 * w - cols), 0, max(0, 2 * h - rows)))


def crop_origin(size: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    h, w = size
    return int(rng.integers(0, h - min(cells[0], h) + 1)), int(rng.integers(0, w - min(cells[1], w) + 1))


def random_crop(tensors: dict, cells: tuple[int, int], rng: np.random.Generator, origin=None):
    """One crop of cached features, in whole cells: (final, aux, low, label) for a batch of one.

    ``origin`` (y0, x0) fixes the crop (every frame of a clip gets the same); otherwise it is drawn."""
    final = tensors["final"]  # (C, h, w)
    h, w = final.shape[-2:]
    ch, cw = min(cells[0], h), min(cells[1], w)
    y0, x0 = origin if origin is not None else crop_origin((h, w), cells, rng)
    label = _padded_label(tensors["label"], h, w)
    low = _padded_low(tensors["low"], h, w)
    return (
        final[:, y0 : y0 + ch, x0 : x0 + cw],
        tensors["aux"][:, y0 : y0 + ch, x0 : x0 + cw],
        low[:, 2 * y0 : 2 * (y0 + ch), 2 * x0 : 2 * (x0 + cw)],
        label[STRIDE * y0 : STRIDE * (y0 + ch), STRIDE * x0 : STRIDE * (x0 + cw)],
    )


def _batch(folder: Path, entries: list[dict], clips, cells, rng) -> tuple[BackboneFeatures, torch.Tensor]:
    """Frame-major crops of `clips` (lists of entry indices; one frame each for 2D heads), one origin per clip.

    Every crop of a batch has one size: the requested cells, or the smallest map's where a map is smaller."""
    loaded = [[load_entry(folder, entries[i]) for i in clip] for clip in clips]
    sizes = [t["final"].shape[-2:] for clip in loaded for t in clip]
    cells = (min([cells[0], *(s[0] for s in sizes)]), min([cells[1], *(s[1] for s in sizes)]))
    crops = []
    for tensors in loaded:
        origin = crop_origin(tensors[0]["final"].shape[-2:], cells, rng)
        crops += [random_crop(t, cells, rng, origin) for t in tensors]
    final, aux, low, label = (torch.stack([c[k] for c in crops]) for k in range(4))
    features = BackboneFeatures(aux=aux.float(), final=final.float(), low=low.float())  # (B, C, h, w) ...
    return features, label  # label (B, 8h, 8w)


def _features(tensors: list[dict]) -> BackboneFeatures:
    def stack(name):
        return torch.stack([t[name] for t in tensors]).float()  # (N, C, h, w)

    return BackboneFeatures(aux=stack("aux"), final=stack("final"), low=stack("low"))


def training_clips(entries: list[dict], frames: int, order: str | None = None) -> list[list[int]]:
    """Clips of `frames` consecutive frames, one variant (scale, flip) throughout: lists of entry indices."""
    by_variant: dict[tuple, list[int]] = {}
    for index, entry in enumerate(entries):
        by_variant.setdefault((entry["scale"], entry["flip"]), []).append(index)
    clips = []
    for members in by_variant.values():
        plan = clip_plan([entries[i]["frame"] for i in members], frames, order or CAMVID_ORDER)
        clips += [[members[i] for i in window] for window in sliding_windows(plan)]
    return clips


@torch.no_grad()
def evaluate_video_head(
    model, folder: Path, entries: list[dict], class_names, cells_per_image=DEFAULT_CELLS_PER_IMAGE, order=None
):
    """Val mIoU of a video head, every frame scored once in the clip centred on it, and the mean temporal share
    of sampled cells' influence after R loops (the share from the cell's own frame) with its uniform baseline."""
    model.eval()
    k, frames = len(class_names), model.frames
    confusion = torch.zeros(k, k, dtype=torch.int64)
    shares, baselines = [], []
    plan = clip_plan([entry["frame"] for entry in entries], frames, order or CAMVID_ORDER)
    for index, (clip, position) in enumerate(centred_windows(plan)):
        tensors = [load_entry(folder, entries[i]) for i in clip]
        label = tensors[position]["label"].long()  # (H, W)
        output = model.decode(_features(tensors), label.shape, return_attention=model.attention is not None)
        confusion += confusion_matrix(output.logits[position].argmax(0)[None], label[None], k, IGNORE_INDEX)
        if output.attentions:
            attentions = [a[0].float() for a in output.attentions]  # R x (T, h, w, T+h+w)
            t, h, w = attentions[0].shape[:3]
            cells = cell_centre_labels(label.numpy(), (h, w))  # (h, w)
            uniform = [uniform_attention_3d(t, h, w)] * len(attentions)
            for y, x in sample_cells(cells, cells_per_image, np.random.default_rng([0, index])):
                shares.append(float(temporal_share(influence_maps_3d(attentions, position, y, x), position)[-1]))
                baselines.append(float(temporal_share(influence_maps_3d(uniform, position, y, x), position)[-1]))
    scores = scores_from_confusion(confusion, class_names)
    share = (float(np.mean(shares)), float(np.mean(baselines))) if shares else (None, None)
    return scores, share


@torch.no_grad()
def evaluate_head(model, folder: Path, entries: list[dict], class_names, cells_per_image=DEFAULT_CELLS_PER_IMAGE):
    """Val mIoU (full frames at scale 1) and the class-balanced same-class lift at the trained R."""
    model.eval()
    k = len(class_names)
    confusion = torch.zeros(k, k, dtype=torch.int64)
    lifts, classes = [], []
    for index, entry in enumerate(entries):
        tensors = load_entry(folder, entry)
        features = BackboneFeatures(
            aux=tensors["aux"][None].float(), final=tensors["final"][None].float(), low=tensors["low"][None].float()
        )
        label = tensors["label"].long()  # (H, W)
        output = model.decode(features, label.shape, return_attention=model.attention is not None)
        confusion += confusion_matrix(output.logits.argmax(1), label[None], k, IGNORE_INDEX)
        if output.attentions:
            attentions = [a[0].float() for a in output.attentions]  # R x (h, w, h+w)
            cells = cell_centre_labels(label.numpy(), attentions[0].shape[:2])  # (h, w)
            positions = sample_cells(cells, cells_per_image, np.random.default_rng([0, index]))
            lifts += lifts_of_image(attentions, cells, positions)
            classes += [int(cells[y, x]) for y, x in positions]
    scores = scores_from_confusion(confusion, class_names)
    lift = class_balanced_mean(lifts, classes)[0] if lifts else None
    return scores, lift


def head_optimizer(model, optim: dict) -> torch.optim.SGD:
    """SGD over the head's parameters (the campaign's settings; no weight decay on gamma)."""
    named = head_parameters(model)
    gammas = [p for n, p in named if n.endswith("gamma")]
    rest = [p for n, p in named if not n.endswith("gamma")]
    groups = [{"params": rest}] + ([{"params": gammas, "weight_decay": 0.0}] if gammas else [])
    return torch.optim.SGD(groups, lr=optim["lr"], momentum=optim.get("momentum", 0.9),
                           weight_decay=optim.get("weight_decay", 4e-5))  # fmt: skip


def head_step(model, objective, optimizer, batch: BackboneFeatures, labels: torch.Tensor, amp_dtype=None) -> float:
    """One optimiser step of the head on a batch of cached features; the loss (a non-finite loss is not applied)."""
    with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        output = model.decode(batch, labels.shape[-2:], return_attention=objective.needs_attention)
        loss, _ = objective(output, labels)
    value = loss.item()
    if math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return value


def train_head(
    features: str | Path,
    kind: str,
    seed: int,
    out: str | Path,
    iterations: int = DEFAULTS["iterations"],
    batch_size: int = DEFAULTS["batch_size"],
    crop_cells: tuple[int, int] = DEFAULTS["crop_cells"],
    show_progress: bool = True,
) -> dict:
    """Train one head, evaluate it on the cached val frames, write its record and checkpoint; the record."""
    folder, out = Path(features), Path(out)
    manifest = read_manifest(folder)
    model, metadata = build_head_model(manifest["checkpoint"], kind, seed, manifest["save_id"])
    names = manifest["class_names"]
    train_entries = manifest["splits"]["train"]
    frames = KINDS[kind].get("frames")
    order = manifest.get("frame_order")
    clips = training_clips(train_entries, frames, order) if frames else [[i] for i in range(len(train_entries))]
    if not clips:
        raise ValueError(
            f"head {kind}: no run of {frames} consecutive train frames in {folder} "
            f"({len(train_entries)} cached entries); cache more frames (drop --max-images) or pick a shorter clip"
        )
    clips_per_batch = max(1, VIDEO_BATCH_FRAMES // frames) if frames else batch_size
    weights = enet_weights(label_counts(folder, train_entries, len(names)))
    objective = SegmentationObjective(loss_config(metadata, kind), weights)
    optim = (metadata.get("train_config") or {}).get("optim") or {"lr": 0.01, "momentum": 0.9, "weight_decay": 4e-5}
    optimizer = head_optimizer(model, optim)
    precision = resolve_precision("auto", False, "cpu")
    rng = np.random.default_rng([seed, 1])
    started = time.perf_counter()
    model.train()
    model.backbone.eval()
    losses = []
    for step in tqdm(range(iterations), desc=f"head {kind} s{seed}", disable=not show_progress):
        lr = poly_lr(optim["lr"], step, iterations, optim.get("poly_power", 0.9))
        for group in optimizer.param_groups:
            group["lr"] = lr
        chosen = [clips[i] for i in rng.integers(0, len(clips), clips_per_batch)]
        batch, labels = _batch(folder, train_entries, chosen, crop_cells, rng)
        loss = head_step(model, objective, optimizer, batch, labels, precision.amp_dtype)
        if not math.isfinite(loss):
            raise FloatingPointError(f"head {kind} seed {seed}: loss {loss} at iteration {step + 1}")
        losses.append(loss)
    seconds = time.perf_counter() - started
    share = (None, None)
    if frames:
        scores, share = evaluate_video_head(model, folder, manifest["splits"]["val"], names, order=order)
        lift = None
    else:
        scores, lift = evaluate_head(model, folder, manifest["splits"]["val"], names)
    gamma = attention_scales(model)
    record = {
        "kind": kind,
        "seed": seed,
        "iterations": iterations,
        "batch_size": VIDEO_BATCH_FRAMES if frames else batch_size,  # frames per batch
        "crop_cells": list(crop_cells),
        "backbone_save_id": manifest["save_id"],
        "precision": precision.name,
        "seconds": seconds,
        "final_loss": float(np.mean(losses[-20:])),
        "lift": lift,
        "frames": frames,
        "temporal_share": share[0],
        "temporal_share_uniform": share[1],
        "gamma": next(iter(gamma.values()), None),
    } | scores.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{kind}_s{seed}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    card = {
        "head_only_on": manifest["save_id"],
        "head_kind": kind,
        "hours": seconds / 3600,
        "machines": [describe_machine()],
        "precisions": [precision.name],
        "train_images": (metadata.get("training") or {}).get("train_images"),
    }
    card = {key: value for key, value in card.items() if value is not None}
    head_metadata = {key: value for key, value in metadata.items() if key not in ("model_config", "save_id")}
    head_metadata |= {"metrics": scores.to_dict() | {"step": iterations}, "step": iterations, "seed": seed,
                      "training": card | {"val_lift": lift} if lift is not None else card}  # fmt: skip
    train_config = dict(head_metadata.get("train_config") or {})
    train_config["loss"] = loss_config(metadata, kind)
    batch = VIDEO_BATCH_FRAMES if frames else batch_size  # frames per batch
    train_config["optim"] = dict(optim) | {"iterations": iterations, "batch_size": batch}
    train_config["model"] = dict(train_config.get("model") or {}) | {"gamma_init": KINDS[kind]["gamma_init"]}
    head_metadata["train_config"] = train_config
    save_checkpoint(model, out / f"{kind}_s{seed}_model", head_metadata)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", help="a feature cache folder (python -m training.feature_cache)")
    parser.add_argument("--kind", default="r2", choices=[*KINDS, "all"])
    parser.add_argument("--seed", type=int, default=0, help="the seed (one run)")
    parser.add_argument("--seeds", type=int, help="run seeds 0..N-1 instead of --seed")
    parser.add_argument("--iterations", type=int, default=DEFAULTS["iterations"])
    parser.add_argument("--out", default="runs/heads", help="folder for the records and checkpoints")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    seeds = range(args.seeds) if args.seeds else [args.seed]
    for seed in seeds:
        for kind in kinds:
            if (Path(args.out) / f"{kind}_s{seed}.json").is_file():
                print(f"{kind} seed {seed}: done already, skipped")
                continue
            progress = not args.no_progress
            record = train_head(args.features, kind, seed, args.out, args.iterations, show_progress=progress)
            lift = "-" if record["lift"] is None else f"{record['lift']:.2f}"
            print(f"{kind} seed {seed}: val mIoU {100 * record['mIoU']:.2f}%, lift {lift}, {record['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
