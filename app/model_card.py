"""The model card: how each model shown was trained, read from its checkpoint's sidecar.

Every fact comes from the sidecar (`train_config`, `metrics`, and the `training` record that
`training.export` writes: train images, hours, machine, precision, val lift, seeds); a fact the sidecar
does not hold reads "not recorded", never a guess. A model whose attention was trained with the attention
affinity loss gets a warning line beside its scorecard: its class-selective maps were supervised, not emergent.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import streamlit as st

from ccnet.analysis import UNUSED_LIFT

NOT_RECORDED = "not recorded"


def _config(metadata: Mapping) -> dict:
    return metadata.get("train_config") or {}


def attention_weight(metadata: Mapping) -> float:
    """The attention affinity loss's weight the model was trained with (0: the paper's losses only)."""
    return float((_config(metadata).get("loss") or {}).get("attention_weight") or 0.0)


def supervision_note(metadata: Mapping) -> str | None:
    """One line for the scorecard of a model whose attention was supervised; None for emergent attention."""
    weight = attention_weight(metadata)
    if weight <= 0 or int(metadata.get("recurrence", 0)) == 0:
        return None
    return (
        f"Supervised attention: this model was trained with an attention affinity loss (weight {weight:g}) that "
        "teaches each cell which cells of its row and column share its class. Its class-selective maps are "
        "what it was taught, not what emerged from segmentation alone (the paper's recipe has no such loss)."
    )


def _backbone(metadata: Mapping) -> str:
    model = _config(metadata).get("model") or {}
    name = metadata.get("backbone", NOT_RECORDED)
    if not model:
        return str(name)
    origin = "ImageNet-pretrained" if model.get("pretrained") else "from scratch"
    decoder = metadata.get("model_config", {}).get("decoder_channels") or 0
    extra = f", + a stride-4 skip decoder ({decoder} channels; not in the paper)" if decoder else ""
    return f"{name} at output stride 8, {origin}{extra}"


def _data(metadata: Mapping) -> str:
    data = _config(metadata).get("data") or {}
    if not data:
        return str(metadata.get("dataset", NOT_RECORDED))
    images = (metadata.get("training") or {}).get("train_images")
    count = f", {images} images" if images else ""
    if (metadata.get("training") or {}).get("head_only_on"):  # the crops below were the backbone's, not the head's
        return (f"{metadata.get('dataset')} {data.get('train_split')}{count}; random crops of the frozen backbone's "
                "cached features of the train frames at several scales and flips")  # fmt: skip
    crop = "x".join(str(v) for v in data.get("crop_size") or []) or "whole images"
    scales = data.get("scale_range")
    scale = f", random scale {scales[0]:g}-{scales[1]:g}" if scales else ""
    return f"{metadata.get('dataset')} {data.get('train_split')}{count}; {crop} crops{scale}"


def _recipe(metadata: Mapping) -> str:
    config = _config(metadata)
    loss, model = config.get("loss") or {}, config.get("model") or {}
    if not loss:
        return NOT_RECORDED
    parts = ["cross-entropy"]
    if loss.get("class_weights"):
        parts[0] += (
            f" ({loss['class_weights']} class weights)"
            if isinstance(loss["class_weights"], str)
            else " (class weights)"
        )
    if loss.get("ohem"):
        parts.append("OHEM")
    if loss.get("aux_weight"):
        parts.append(f"auxiliary head {loss['aux_weight']:g}")
    weight = attention_weight(metadata)
    parts.append(f"attention affinity loss {weight:g}" if weight > 0 else "no attention affinity loss")
    parts.append("category consistent loss" if loss.get("ccl") else "no CCL")
    if int(metadata.get("recurrence", 0)) > 0:
        parts.append(f"γ starting at {float(model.get('gamma_init', 0.0)):g}")
    return ", ".join(parts)


def _schedule(metadata: Mapping) -> str:
    optim = _config(metadata).get("optim") or {}
    if not optim:
        return NOT_RECORDED
    step = int(metadata.get("step") or optim.get("iterations", 0))
    batch = int(optim.get("batch_size", 0))
    text = f"{step} iterations of batch {batch} (SGD lr {optim.get('lr'):g}, poly)"
    images = (metadata.get("training") or {}).get("train_images")
    if images:
        text += f", {step * batch / images:.0f} epochs"
    planned = int(optim.get("iterations", 0))
    if 0 < step < planned:
        text += f"; an interim checkpoint: its schedule is {planned} iterations and still running"
    head_only = (metadata.get("training") or {}).get("head_only_on")
    if head_only:
        shared = (metadata.get("shared_backbone") or {}).get("checkpoint")
        source = f"`{shared}` (save {head_only[:8]})" if shared else f"save `{head_only}`"
        text += f"; head only, on the frozen backbone of {source}"
    return text


def _cost(metadata: Mapping) -> str:
    training = metadata.get("training") or {}
    if not training.get("hours"):
        return NOT_RECORDED
    machines = "; ".join(training.get("machines") or []) or "machine not recorded"
    precision = ", ".join(training.get("precisions") or []) or "precision not recorded"
    hours = training["hours"]
    spent = f"{hours:.1f} h" if hours >= 0.1 else f"{60 * hours:.1f} min"
    return f"{spent} on {machines} ({precision})"


def _miou(metadata: Mapping) -> str:
    metrics = metadata.get("metrics") or {}
    if metrics.get("mIoU") is None:
        return NOT_RECORDED
    text = f"{100 * metrics['mIoU']:.1f}% ({metadata.get('split', 'val')}, single scale, this checkpoint)"
    seeds = (metadata.get("training") or {}).get("seeds")
    if seeds and seeds.get("ci95") is not None:
        text += f"; {seeds['n']} seeds: {100 * seeds['mean']:.1f} ± {100 * seeds['ci95']:.1f} (95% interval)"
    elif seeds:
        text += f"; {seeds['n']} seeds: mean {100 * seeds['mean']:.1f}"
    return text




def _how_trained(metadata: Mapping) -> str:
    """End to end, or a head on another checkpoint's frozen backbone (never compared with each other per R)."""
    head_only = (metadata.get("training") or {}).get("head_only_on")
    if not head_only:
        return "end to end (backbone and head trained together)"
    shared = (metadata.get("shared_backbone") or {}).get("checkpoint")
    return f"head on `{shared}`" if shared else f"head on the frozen backbone of save `{head_only[:8]}`"


def _attention(metadata: Mapping, gamma: float | None, lift: float | None) -> str:
    if gamma is None:
        return "none (R = 0)"
    kind = "supervised (affinity loss)" if supervision_note(metadata) else "emergent (segmentation losses only)"
    if lift is not None and lift < UNUSED_LIFT:
        return (f"{kind}; **not used**: its maps are nearly blind to class (same-class lift {lift:.2f}x, under "
                f"{UNUSED_LIFT:g}x; γ = {gamma:.3g})")  # fmt: skip
    return kind


def card_rows(metadata: Mapping, gamma: float | None) -> dict[str, str]:
    """The card's facts, in reading order."""
    training = metadata.get("training") or {}
    lift = training.get("val_lift")
    return {
        "Trained": _how_trained(metadata),
        "Backbone": _backbone(metadata),
        "Training data": _data(metadata),
        "Losses": _recipe(metadata),
        "Schedule": _schedule(metadata),
        "Training time": _cost(metadata),
        "Val mIoU": _miou(metadata),
        "γ (attention scale)": "no attention (R = 0)" if gamma is None else f"{gamma:.3g}",
        "Same-class lift on val": f"{lift:.2f}x (uniform map: 1.00x)" if lift else NOT_RECORDED,
        "Attention": _attention(metadata, gamma, lift),
    }


def show_model_cards(models: Mapping[str, object]) -> None:
    """An expander with one column per model shown: how each was trained."""
    table = pd.DataFrame(
        {
            name: card_rows(loaded.metadata, loaded.gamma if loaded.has_attention else None)
            for name, loaded in models.items()
        }
    )
    with st.expander("How these models were trained (model card)"):
        st.dataframe(table, width="stretch")
        st.caption("From each checkpoint's sidecar (`checkpoints/<name>.json`); docs/RESULTS.md has the full tables.")
