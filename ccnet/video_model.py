"""Video CCNet: the 2D backbone on every frame, a 3D RCCA head across T frames (the paper's CamVid model).

Each frame goes through the backbone (and, after the attention, the head's convolutions and the decoder) on
its own; only the attention sees the clip: the frames' reduced features are stacked to (B, C, T, h, w) and
each position attends along its own position in the other frames, its column and its row
(``CrissCrossAttention3D``), R times with shared weights (the paper: R = 3 for video, so information reaches
another frame, row and column). Built by ``ccnet.build_model`` from a config with ``frames: T``; parameter
names are the 2D model's (the projections are 1x1x1 convolutions), so a 2D head maps onto a video head by a
reshape of those three weights.

    model = build_model({"num_classes": 11, "backbone": "mobilenet_v2", "recurrence": 3, "frames": 5, ...})
    out = model(clips)                        # clips (B, T, 3, H, W) -> out.logits (B, T, K, H, W)
    out = model(clips, return_attention=True) # out.attentions: R x (B, T, h, w, T + h + w)
"""

from __future__ import annotations

import torch
from torch import nn

from ccnet.attention import CrissCrossAttention3D, _check_recurrence
from ccnet.model import CCNet, CCNetOutput


class FrameStackRCCA(nn.Module):
    """RCCA across frames on frame-major features: (B*T, C, h, w) in and out, (B, C, T, h, w) inside."""

    def __init__(self, in_channels: int, recurrence: int, qk_channels: int | None, frames: int):
        super().__init__()
        self.recurrence = _check_recurrence(recurrence)
        self.frames = frames
        self.cca = CrissCrossAttention3D(in_channels, qk_channels)

    def forward(self, x: torch.Tensor, recurrence: int | None = None, return_attention: bool = False):
        loops = self.recurrence if recurrence is None else _check_recurrence(recurrence)
        frames_total, channels, h, w = x.shape
        if frames_total % self.frames:
            raise ValueError(f"{frames_total} frames is not a whole number of clips of {self.frames} frames")
        clip = x.view(-1, self.frames, channels, h, w).transpose(1, 2)  # (B, C, T, h, w)
        attentions = []
        for _ in range(loops):
            clip, attn = self.cca(clip, return_attention=True)  # (B, C, T, h, w), (B, T, h, w, T+h+w)
            attentions.append(attn)
        out = clip.transpose(1, 2).reshape(frames_total, channels, h, w)  # (B*T, C, h, w)
        return (out, attentions) if return_attention else out

    def extra_repr(self) -> str:
        return f"recurrence={self.recurrence}, frames={self.frames}"


class VideoCCNet(CCNet):
    """CCNet over clips of ``frames`` frames (see the module doc); every other argument as ``CCNet``."""

    def __init__(self, frames: int, **kwargs):
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
        super().__init__(**kwargs)
        self.frames = frames
        self.config["frames"] = frames
        if self.head.attention is not None:
            old = self.head.attention
            self.head.attention = FrameStackRCCA(old.cca.in_channels, old.recurrence, old.cca.qk_channels, frames)

    def _check_clips(self, clips: torch.Tensor) -> tuple[int, int]:
        if not isinstance(clips, torch.Tensor) or clips.dim() != 5 or clips.shape[2] != 3:
            shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
            raise ValueError(f"expected clips (B, T, 3, H, W), got {shape}")
        if clips.shape[1] != self.frames:
            raise ValueError(f"this model takes clips of {self.frames} frames, got {clips.shape[1]}")
        return clips.shape[0], clips.shape[1]

    def forward(
        self, clips: torch.Tensor, recurrence: int | None = None, return_attention: bool = False
    ) -> CCNetOutput:
        batch, frames = self._check_clips(clips)
        images = clips.flatten(0, 1)  # (B*T, 3, H, W)
        output = self.decode(self.encode(images), images.shape[-2:], recurrence, return_attention)
        return self.as_clips(output, batch)

    def as_clips(self, output: CCNetOutput, batch: int) -> CCNetOutput:
        """A decode of frame-major features (B*T, ...) as clips: logits (B, T, K, H, W) and so on."""

        def unflatten(tensor):
            return None if tensor is None else tensor.unflatten(0, (batch, self.frames))

        return CCNetOutput(
            logits=unflatten(output.logits),  # (B, T, K, H, W)
            aux_logits=unflatten(output.aux_logits),
            attentions=output.attentions,  # R x (B, T, h, w, T+h+w)
            embeddings=unflatten(output.embeddings),
        )
