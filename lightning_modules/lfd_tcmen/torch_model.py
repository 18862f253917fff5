"""LFD-TCMEN networks (Qian, Huang & Qu, Entropy 2026, 28(2):180), pure PyTorch.

DRL: an identity encoder (one frame -> identity code), a motion encoder (a frame relative to the
clip's onset frame -> motion code) and a decoder ((identity code,
motion code) -> frame). TCME: the motion codes of steps 1..T-1 gated-fused with the optical-flow
features of the same steps, a temporal transformer, the clip feature for the emotion head.
Every encoder is the suite's 2D ResNet (``lightning_modules.backbones``); the decoder upsamples
with its BasicBlocks; the temporal model is the suite's pre-norm transformer block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.backbones.resnet import BasicBlock, Norm, ResNet
from lightning_modules.backbones.vit import transformer_blocks

MotionInput = Literal["difference", "pair"]


def standardise(images: Tensor, eps: float = 1e-6) -> Tensor:
    """Each image (..., C, H, W) to zero mean and unit standard deviation over its C*H*W values:
    a global illumination gain or offset between two frames cancels in their difference."""
    mean = images.mean(dim=(-3, -2, -1), keepdim=True)
    return (images - mean) / (images.std(dim=(-3, -2, -1), keepdim=True) + eps)


def standardise_columns(codes: Tensor, eps: float = 1e-6) -> Tensor:
    """Each column of ``codes`` (N, D) to zero mean and unit standard deviation over the N rows (the
    scaling a linear probe applies first): what a linear classifier reads from the result does not
    depend on the codes' scale."""
    centred = codes - codes.mean(dim=0, keepdim=True)
    return centred / (centred.pow(2).mean(dim=0, keepdim=True).sqrt() + eps)


def different_subject_partners(identity: Tensor) -> tuple[Tensor, Tensor]:
    """For every item a partner of another subject in the batch, chosen at random.

    ``identity``: (B,) subject classes, -1 = unknown (such items get no partner). Returns
    ``partner`` (B,) long (the item itself where there is none) and ``valid`` (B,) bool. The batch
    is visited in a random order; each item takes the next item of that order (cyclically) whose
    subject differs from its own.
    """
    size = len(identity)
    order = torch.randperm(size, device=identity.device)
    shuffled = identity[order]
    positions = torch.arange(size, device=identity.device)
    candidates = (positions[:, None] + positions[None, 1:]) % size  # (B, B-1) later positions
    usable = (shuffled[candidates] != shuffled[:, None]) & (shuffled[candidates] >= 0) & (shuffled[:, None] >= 0)
    first = usable.to(torch.uint8).argmax(dim=1) if size > 1 else positions
    chosen = candidates[positions, first] if size > 1 else positions
    has_partner = usable.any(dim=1) if size > 1 else torch.zeros_like(positions, dtype=torch.bool)
    partner, valid = torch.empty_like(order), torch.empty_like(has_partner)
    partner[order] = torch.where(has_partner, order[chosen], order)
    valid[order] = has_partner
    return partner, valid


class FrameDecoder(nn.Module):
    """(identity code, motion code) -> frame (C, size, size) in [0, 1].

    A Linear maps the concatenated codes to a (8w, size/8, size/8) map; three stages each double
    the side (nearest upsampling) and halve the width with a BasicBlock; a 3x3 conv and a sigmoid
    give the frame.
    """

    def __init__(self, code_dims: int, channels: int, size: int, width: int) -> None:
        super().__init__()
        if size % 8:
            raise ValueError(f"the decoder's frame size must be a multiple of 8, got {size}")
        self.start = (8 * width, size // 8, size // 8)
        self.project = nn.Sequential(nn.Linear(code_dims, 8 * width * (size // 8) ** 2), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(*(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), BasicBlock(w, w // 2))
            for w in (8 * width, 4 * width, 2 * width)
        ))  # fmt: skip
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, identity_code: Tensor, motion_code: Tensor) -> Tensor:
        x = self.project(torch.cat([identity_code, motion_code], dim=-1)).view(-1, *self.start)
        return torch.sigmoid(self.out(self.stages(x)))


class GatedFusion(nn.Module):
    """Per step and channel: ``g = sigmoid(W [m; f] + b)``, ``h = g * m + (1 - g) * f``, with the
    motion code projected to the flow feature's width first."""

    def __init__(self, motion_dim: int, dim: int) -> None:
        super().__init__()
        self.motion_proj = nn.Linear(motion_dim, dim)
        self.gate = nn.Linear(2 * dim, dim)

    def forward(self, motion: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S, motion_dim), (B, S, dim) -> fused (B, S, dim) and the gate (B, S, dim)."""
        m = self.motion_proj(motion)
        g = torch.sigmoid(self.gate(torch.cat([m, flow], dim=-1)))
        return g * m + (1 - g) * flow, g


class LFDTCMENModel(nn.Module):
    """DRL + TCME + emotion head; ``use_drl=False`` keeps the flow branch only (the ablation).

    Inputs: frames (B, T, C, H, W) in [0, 1] (frame 0 = onset, the identity reference; read only
    with DRL) and flow (B, T-1, C', H', W') (step t: onset -> frame t). Frames are resized to
    ``drl_size`` inside the model. Encoders: ``ResNet(encoder_blocks, ..., base_width)`` in the
    ImageNet 2D layout (identity: C channels; flow: C'). The motion encoder reads a frame relative
    to the onset: ``motion_input="difference"`` (difference of the two frames, each standardised
    by :func:`standardise`, C channels) or ``"pair"`` (frame and onset stacked, 2C channels); its
    norm layers are ``motion_norm`` (``backbones.resnet.norm_layer``), the other encoders' BatchNorm.
    ``num_identities`` > 0 adds the subject classifier on the identity code (``identity_head``) and,
    with ``motion_adversary``, the adversary on the clip's motion code (``motion_identity_head``).
    """

    def __init__(
        self,
        num_classes: int,
        num_identities: int = 0,
        use_drl: bool = True,
        motion_adversary: bool = False,
        frame_channels: int = 3,
        flow_channels: int = 2,
        num_frames: int = 8,
        motion_input: MotionInput = "difference",
        motion_norm: Norm = "layer",
        drl_size: int = 64,
        code_dim: int = 64,
        encoder_blocks: Sequence[int] = (2, 2, 2, 2),
        base_width: int = 32,
        decoder_width: int = 16,
        fusion_dim: int = 128,
        temporal_depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_frames < 2:
            raise ValueError(f"LFD-TCMEN needs clips of >= 2 frames (onset + motion), got {num_frames}")
        if motion_input not in ("difference", "pair"):
            raise ValueError(f"unknown motion_input {motion_input!r}; expected 'difference' or 'pair'")
        self.use_drl, self.drl_size, self.motion_input = use_drl, drl_size, motion_input
        blocks = tuple(encoder_blocks)
        self.flow_encoder = ResNet(blocks, flow_channels, fusion_dim, base_width=base_width)
        self.step_position = nn.Parameter(torch.zeros(1, num_frames - 1, fusion_dim))
        nn.init.trunc_normal_(self.step_position, std=0.02)
        self.temporal = transformer_blocks(fusion_dim, temporal_depth, num_heads, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(fusion_dim)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(fusion_dim, num_classes))
        self.identity_head: nn.Linear | None = None
        self.motion_identity_head: nn.Linear | None = None
        if use_drl:
            self.identity_encoder = ResNet(blocks, frame_channels, code_dim, base_width=base_width)
            motion_channels = frame_channels * (2 if motion_input == "pair" else 1)
            self.motion_encoder = ResNet(blocks, motion_channels, code_dim, base_width=base_width, norm=motion_norm)
            self.decoder = FrameDecoder(2 * code_dim, frame_channels, drl_size, decoder_width)
            self.fusion = GatedFusion(code_dim, fusion_dim)
            if num_identities:
                self.identity_head = nn.Linear(code_dim, num_identities)
                if motion_adversary:
                    self.motion_identity_head = nn.Linear(code_dim, num_identities)

    # -- DRL -----------------------------------------------------------------------------------
    def prepare_frames(self, frames: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, T, C, drl_size, drl_size)."""
        b, t, c, h, w = frames.shape
        if (h, w) == (self.drl_size, self.drl_size):
            return frames
        small = F.interpolate(frames.flatten(0, 1), size=(self.drl_size, self.drl_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return small.view(b, t, c, self.drl_size, self.drl_size)

    def encode_identity(self, images: Tensor) -> Tensor:
        """(..., C, s, s) -> identity codes (..., D)."""
        return self.identity_encoder(images.flatten(0, -4)).view(*images.shape[:-3], -1)

    def encode_motion(self, images: Tensor, onset: Tensor) -> Tensor:
        """Frames (..., C, s, s) relative to onset frames of the same shape -> motion codes (..., D)."""
        relative = torch.cat([images, onset], dim=-3) if self.motion_input == "pair" else standardise(images) - standardise(onset)
        return self.motion_encoder(relative.flatten(0, -4)).view(*images.shape[:-3], -1)

    def decode(self, identity_code: Tensor, motion_code: Tensor) -> Tensor:
        """Codes (..., D) -> frames (..., C, s, s)."""
        out = self.decoder(identity_code.flatten(0, -2), motion_code.flatten(0, -2))
        return out.view(*identity_code.shape[:-1], *out.shape[1:])

    def disentangle(self, frames: Tensor) -> dict[str, Tensor]:
        """Resized clip 'clip' (B, T, C, s, s), 'identity_codes' and 'motion_codes' (B, T, D) of every frame."""
        clip = self.prepare_frames(frames)
        onset = clip[:, :1].expand_as(clip)
        return {"clip": clip, "identity_codes": self.encode_identity(clip), "motion_codes": self.encode_motion(clip, onset)}

    # -- TCME ----------------------------------------------------------------------------------
    def forward(self, flow: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        """'logits', 'features' (B, fusion_dim, before the head), 'temporal_input' (B, T-1, fusion_dim:
        the steps the temporal model reads, the flow features alone without DRL) and, with DRL, the
        codes of :meth:`disentangle` and the fusion 'gate' (B, T-1, fusion_dim)."""
        b, steps = flow.shape[:2]
        if steps != self.step_position.shape[1]:
            raise ValueError(f"the model was built for {self.step_position.shape[1]} flow steps, got {steps}; "
                             "set num_frames to the datamodule's num_frames")
        flow_features = self.flow_encoder(flow.flatten(0, 1)).view(b, steps, -1)
        out: dict[str, Tensor] = {}
        if self.use_drl:
            if frames is None:
                raise ValueError("the DRL branch needs `frames` (B, T, C, H, W)")
            out = self.disentangle(frames)
            steps_in, out["gate"] = self.fusion(out["motion_codes"][:, 1:], flow_features)
        else:
            steps_in = flow_features
        features = self.norm(self.temporal(steps_in + self.step_position)).mean(dim=1)
        return {**out, "temporal_input": steps_in, "features": features, "logits": self.head(features)}
