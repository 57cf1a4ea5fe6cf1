"""The training objective: segmentation loss (+ auxiliary head at weight 0.4) (+ category consistent loss)
(+ attention affinity loss).

Segmentation loss is cross-entropy with the ignore index, or OHEM cross-entropy; both take optional
per-class weights. Returns the total and its parts, for logging.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ccnet.datasets import IGNORE_INDEX
from ccnet.losses import AttentionAffinityLoss, CategoryConsistentLoss, OhemCrossEntropy


class WeightedCrossEntropy(nn.Module):
    def __init__(self, weight: torch.Tensor | None, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=self.ignore_index)


class SegmentationObjective(nn.Module):
    """loss = seg(logits) + aux_weight * seg(aux_logits) [+ CCL(embeddings)] from a CCNetOutput."""

    def __init__(self, loss_config: dict, class_weights: Sequence[float] | None = None):
        super().__init__()
        weight = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
        if loss_config["ohem"]:
            self.segmentation = OhemCrossEntropy(
                IGNORE_INDEX, loss_config["ohem_thresh"], loss_config["ohem_min_kept"], weight
            )
        else:
            self.segmentation = WeightedCrossEntropy(weight)
        self.aux_weight = float(loss_config["aux_weight"])
        self.consistency = None
        if loss_config["ccl"]:
            self.consistency = CategoryConsistentLoss(
                delta_v=loss_config["ccl_delta_v"],
                delta_d=loss_config["ccl_delta_d"],
                alpha=loss_config["ccl_alpha"],
                beta=loss_config["ccl_beta"],
                gamma=loss_config["ccl_gamma"],
                ignore_index=IGNORE_INDEX,
            )

        self.attention_weight = float(loss_config.get("attention_weight", 0.0))
        self.affinity = AttentionAffinityLoss(IGNORE_INDEX) if self.attention_weight > 0 else None

    @property
    def needs_attention(self) -> bool:
        """Whether the model must return its attention maps (for the affinity loss)."""
        return self.affinity is not None

    def forward(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {"seg": self.segmentation(output.logits, labels)}  # logits (B, K, H, W), labels (B, H, W)
        total = parts["seg"]
        if output.aux_logits is not None and self.aux_weight > 0:
            parts["aux"] = self.segmentation(output.aux_logits, labels)
            total = total + self.aux_weight * parts["aux"]
        if self.consistency is not None:
            if output.embeddings is None:
                raise ValueError("loss.ccl is on but the model returns no embeddings: set model.ccl_channels > 0")
            parts["ccl"] = self.consistency(output.embeddings.float(), labels)  # (B, E, h, w)
            total = total + parts["ccl"]
        if self.affinity is not None and output.attentions:
            parts["affinity"] = self.affinity(output.attentions, labels)  # attentions (B, h, w, h+w) each
            total = total + self.attention_weight * parts["affinity"]
        return total, parts
