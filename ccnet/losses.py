"""Training losses: the category consistent loss (CCL) of CCNet and the official code's OHEM cross entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ccnet.analysis import cell_centre_labels

__all__ = [
    "CCL_DISTANCES",
    "AttentionAffinityLoss",
    "CategoryConsistentLoss",
    "OhemCrossEntropy",
    "same_class_targets",
]

CCL_DISTANCES = ("piecewise", "quadratic")


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last dim, exact, with gradient 0 (not NaN) at the origin."""
    squared = (x * x).sum(dim=-1)
    positive = squared > 0
    # The inner where keeps sqrt's infinite derivative at 0 out of the graph.
    return torch.where(positive, torch.sqrt(torch.where(positive, squared, torch.ones_like(squared))), 0.0)


def _zero_loss(reference: torch.Tensor) -> torch.Tensor:
    """A zero that stays attached to the graph, so backward() works and gives zero gradients."""
    return reference.sum() * 0.0


def _check_labels(labels: torch.Tensor, batch: int, name: str) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3 or labels.shape[0] != batch:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"expected {name} labels of shape ({batch}, H, W), got {shape}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"expected integer class labels, got dtype {labels.dtype}")


class CategoryConsistentLoss(nn.Module):
    """CCL (brief, "Category consistent loss"): pull each pixel's embedding towards its class mean,
    push the class means apart, keep the means small.

    ``loss = alpha * l_var + beta * l_dis + gamma * l_reg`` over the classes present in the mini-batch
    (void pixels ignored). ``distance="piecewise"`` is the paper's phi_var; ``"quadratic"`` is the
    original discriminative loss, ``max(0, d - delta_v) ** 2``.

    ``forward(embeddings (B, E, h, w), labels (B, H, W))``: labels are brought to (h, w) by nearest
    neighbour. With no class, or one class (no pairs to push apart), the missing terms are 0.
    """

    def __init__(
        self,
        delta_v: float = 0.5,
        delta_d: float = 1.5,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 0.001,
        distance: str = "piecewise",
        ignore_index: int = 255,
    ):
        super().__init__()
        if not 0 <= delta_v < delta_d:
            raise ValueError(f"expected 0 <= delta_v < delta_d, got delta_v={delta_v}, delta_d={delta_d}")
        if distance not in CCL_DISTANCES:
            raise ValueError(f"unknown distance {distance!r}: expected one of {', '.join(CCL_DISTANCES)}")
        self.delta_v = float(delta_v)
        self.delta_d = float(delta_d)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.distance = distance
        self.ignore_index = ignore_index

    def extra_repr(self) -> str:
        return (
            f"delta_v={self.delta_v}, delta_d={self.delta_d}, alpha={self.alpha}, beta={self.beta}, "
            f"gamma={self.gamma}, distance={self.distance!r}, ignore_index={self.ignore_index}"
        )

    def phi_var(self, d: torch.Tensor) -> torch.Tensor:
        """Penalty of a pixel at distance d from its class mean."""
        hinge = (d - self.delta_v).clamp(min=0)
        if self.distance == "quadratic":
            return hinge**2
        # Quadratic up to delta_d, linear beyond: bounded gradient for outliers (fewer NaN runs).
        linear = d - self.delta_d + (self.delta_d - self.delta_v) ** 2
        return torch.where(d > self.delta_d, linear, hinge**2)

    def phi_dis(self, d: torch.Tensor) -> torch.Tensor:
        """Penalty of two class means at distance d: zero once they are 2 * delta_d apart."""
        return (2 * self.delta_d - d).clamp(min=0) ** 2

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 4:
            shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings)
            raise ValueError(f"expected embeddings of shape (B, E, h, w), got {shape}")
        _check_labels(labels, embeddings.shape[0], "(B, H, W)")
        if embeddings.dtype in (torch.float16, torch.bfloat16):
            embeddings = embeddings.float()  # norms and sums of squares need the range

        b, e, h, w = embeddings.shape
        labels = self._labels_at(labels, (h, w)).reshape(-1)  # (B*h*w,)
        pixels = embeddings.permute(0, 2, 3, 1).reshape(-1, e)  # (B*h*w, E)
        valid = labels != self.ignore_index
        pixels, labels = pixels[valid], labels[valid]  # (N, E), (N,)
        if labels.numel() == 0:
            return _zero_loss(embeddings)

        _, class_of_pixel = torch.unique(labels, return_inverse=True)  # (N,) in 0..C-1
        num_classes = int(class_of_pixel.max()) + 1
        counts = torch.bincount(class_of_pixel, minlength=num_classes).to(pixels.dtype)  # (C,)
        sums = pixels.new_zeros(num_classes, e).index_add_(0, class_of_pixel, pixels)  # (C, E)
        means = sums / counts[:, None]  # (C, E)

        l_var = self._variance_term(pixels, means, class_of_pixel, counts)
        l_dis = self._distance_term(means)
        l_reg = _safe_norm(means).mean()
        return self.alpha * l_var + self.beta * l_dis + self.gamma * l_reg

    def _labels_at(self, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(labels.shape[-2:]) == size:
            return labels.long()
        resized = F.interpolate(labels[:, None].double(), size=size, mode="nearest")  # (B, 1, h, w)
        return resized[:, 0].long()  # (B, h, w)

    def _variance_term(
        self, pixels: torch.Tensor, means: torch.Tensor, class_of_pixel: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        distances = _safe_norm(means[class_of_pixel] - pixels)  # (N,)
        penalties = self.phi_var(distances)  # (N,)
        per_class = torch.zeros_like(counts).index_add_(0, class_of_pixel, penalties) / counts  # (C,)
        return per_class.mean()

    def _distance_term(self, means: torch.Tensor) -> torch.Tensor:
        num_classes = means.shape[0]
        if num_classes < 2:
            return _zero_loss(means)
        distances = _safe_norm(means[:, None, :] - means[None, :, :])  # (C, C)
        off_diagonal = ~torch.eye(num_classes, dtype=torch.bool, device=means.device)  # ordered pairs a != b
        return self.phi_dis(distances[off_diagonal]).sum() / (num_classes * (num_classes - 1))


class OhemCrossEntropy(nn.Module):
    """Cross entropy over the hard pixels only (online hard example mining, the official CCNet code).

    A valid pixel is kept when its softmax probability of the true class is at most ``thresh``; if
    that keeps fewer than ``min_kept`` pixels, the threshold rises to the ``min_kept``-th smallest
    probability, so the ``min_kept`` hardest pixels are kept (all of them when there are fewer).
    The loss is the (class-weighted) mean over the kept pixels.

    ``forward(logits (B, K, H, W), labels (B, H, W))``.
    """

    def __init__(
        self,
        ignore_index: int = 255,
        thresh: float = 0.7,
        min_kept: int = 100000,
        weight: torch.Tensor | Sequence[float] | None = None,
    ):
        super().__init__()
        if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept < 0:
            raise ValueError(f"min_kept must be an integer >= 0, got {min_kept!r}")
        self.ignore_index = ignore_index
        self.thresh = float(thresh)
        self.min_kept = min_kept
        # A buffer, so that .to(device) moves the class weights with the module.
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float))

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, thresh={self.thresh}, min_kept={self.min_kept}"

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ValueError(f"expected logits of shape (B, K, H, W), got {shape}")
        b, _, height, width = logits.shape
        _check_labels(labels, b, f"({b}, {height}, {width})")
        if tuple(labels.shape[-2:]) != (height, width):
            raise ValueError(f"expected labels of shape ({b}, {height}, {width}), got {tuple(labels.shape)}")

        kept = self.kept_mask(logits, labels)  # (B, H, W)
        if not bool(kept.any()):
            return _zero_loss(logits)
        target = labels.long().masked_fill(~kept, self.ignore_index)  # (B, H, W)
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)

    @torch.no_grad()
    def kept_mask(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Boolean (B, H, W): the pixels the loss is computed on."""
        valid = labels != self.ignore_index  # (B, H, W)
        num_valid = int(valid.sum())
        if num_valid == 0 or self.min_kept >= num_valid:
            return valid
        safe_labels = labels.long().masked_fill(~valid, 0)  # (B, H, W); ignore_index may be out of range
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        probs = F.softmax(logits, dim=1)  # (B, K, H, W)
        true_prob = probs.gather(1, safe_labels[:, None])[:, 0]  # (B, H, W)
        threshold = self.thresh
        if self.min_kept > 0:
            kth_smallest = true_prob[valid].kthvalue(self.min_kept).values
            threshold = max(threshold, float(kth_smallest))
        return valid & (true_prob <= threshold)


def same_class_targets(cells: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each cell, the same-class cells of its cross as a distribution over the criss-cross layout.

    ``cells`` (B, h, w) -> targets (B, h, w, h + w) (column part first, the own position only in the row
    part, as the attention lays them out) summing to 1, and the mask (B, h, w) of cells with a target.
    """
    known = cells != ignore_index  # (B, h, w)
    return _normalised_targets(_same_class_cross(cells, known).float(), known)


def _same_class_cross(cells: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """(B, h, w, h + w) bool: which positions of each cell's 2D cross share its (known) class."""
    h = cells.shape[1]
    column_same = cells.unsqueeze(-1) == cells.permute(0, 2, 1).unsqueeze(1)  # (B, h, w, h): c(y,x) == c(i,x)
    column_same &= known.permute(0, 2, 1).unsqueeze(1)
    column_same &= ~torch.eye(h, dtype=torch.bool, device=cells.device).view(1, h, 1, h)
    row_same = (cells.unsqueeze(-1) == cells.unsqueeze(2)) & known.unsqueeze(2)  # (B, h, w, w): c(y,x) == c(y,j)
    return torch.cat([column_same, row_same], dim=-1)  # (B, h, w, h+w)


def _normalised_targets(same: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    counts = same.sum(dim=-1, keepdim=True)  # (..., 1)
    valid = known & (counts.squeeze(-1) > 0)
    return same / counts.clamp(min=1), valid


def same_class_targets_3d(cells: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``same_class_targets`` over the 3D cross: cells (B, T, h, w) -> targets (B, T, h, w, T + h + w), the
    time part first (the own position only in the row part, as ``criss_cross_attention_3d`` lays them out)."""
    b, t, h, w = cells.shape
    known = cells != ignore_index  # (B, T, h, w)
    by_frame = cells.permute(0, 2, 3, 1)  # (B, h, w, T)
    time_same = (cells.unsqueeze(-1) == by_frame.unsqueeze(1)) & known.permute(0, 2, 3, 1).unsqueeze(1)
    time_same &= ~torch.eye(t, dtype=torch.bool, device=cells.device).view(1, t, 1, 1, t)  # (B, T, h, w, T)
    space_same = _same_class_cross(cells.reshape(b * t, h, w), known.reshape(b * t, h, w))
    same = torch.cat([time_same, space_same.view(b, t, h, w, h + w)], dim=-1).float()  # (B, T, h, w, T+h+w)
    return _normalised_targets(same, known)


class AttentionAffinityLoss(nn.Module):
    """Cross entropy between each cell's criss-cross attention and the uniform distribution over the
    same-class cells of its cross (ground truth at the cell centres): teaches the attention which of
    the h + w - 1 positions share the cell's class, as Context Prior's affinity loss (Yu et al., CVPR 2020)
    does for full attention. Averaged over the loops and the cells with a known class."""

    def __init__(self, ignore_index: int = 255, eps: float = 1e-6):
        super().__init__()
        self.ignore_index, self.eps = ignore_index, eps

    def forward(self, attentions: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if not attentions:
            raise ValueError("AttentionAffinityLoss needs the attention maps: run the model with return_attention")
        if attentions[0].dim() == 5:  # 3D criss-cross attention (B, T, h, w, T+h+w); labels (B, T, H, W) or flat
            b, t, h, w = attentions[0].shape[:4]
            frames = labels.reshape(b * t, *labels.shape[-2:])  # (B*T, H, W)
            cells = cell_centre_labels(frames, (h, w)).reshape(b, t, h, w)
            targets, valid = same_class_targets_3d(cells, self.ignore_index)
        else:
            _check_labels(labels, attentions[0].shape[0], "labels")
            h, w = attentions[0].shape[1:3]
            targets, valid = same_class_targets(cell_centre_labels(labels, (h, w)), self.ignore_index)
        if not valid.any():
            return _zero_loss(attentions[0])
        losses = []
        for attn in attentions:  # (B, h, w, h+w) or (B, T, h, w, T+h+w) each
            log_attn = torch.log(attn.float().clamp(min=self.eps))
            per_cell = -(targets * log_attn).sum(dim=-1)  # (B, h, w) or (B, T, h, w)
            losses.append(per_cell[valid].mean())
        return torch.stack(losses).mean()
