"""Xie et al. 2022 (PeerJ CS 1140): MENet with DAO and IDNet with self-attention, pure PyTorch.

Both branches are the suite's ResNet-18 in the 3D layouts of Tables 1 and 2 (temporal stride 1
everywhere, so the T input frames are kept up to the end). The attention module sits between the
third and the fourth block (§"Network architecture"); the fourth block is followed by a global max
pool ("Maxpool, FC, softmax") whose 512-d output is the branch's feature f^e / f^d, fed to MINE.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.errors import MERError
from lightning_modules.backbones import ConvSpec, ResNet, ResNetLayout, resnet18

_THIN = (1, 2, 2)  # temporal stride 1, spatial stride 2
MENET_LAYOUT = ResNetLayout(  # Table 1: 3×3×3 kernels, temporal stride 1
    dims=3, stem=ConvSpec(7, _THIN, 3), stem_pool=ConvSpec(3, _THIN, 1),
    stages=(ConvSpec(3, 1, 1), ConvSpec(3, _THIN, 1), ConvSpec(3, _THIN, 1), ConvSpec(3, 1, 1)),
)  # fmt: skip
IDNET_LAYOUT = ResNetLayout(  # Table 2: every kernel 1×k×k (spatial only)
    dims=3, stem=ConvSpec((1, 7, 7), _THIN, (0, 3, 3)), stem_pool=ConvSpec((1, 3, 3), _THIN, (0, 1, 1)),
    stages=tuple(ConvSpec((1, 3, 3), s, (0, 1, 1)) for s in (1, _THIN, _THIN, 1)),
)  # fmt: skip


def spatial_softmax(scores: Tensor) -> Tensor:
    """Softmax over the H·W positions of (..., H, W) scores."""
    return torch.softmax(scores.flatten(-2), dim=-1).view_as(scores)


def self_attention_map(features: Tensor) -> Tensor:
    """eq. 1: softmax over the H·W positions of the channel mean.
    (B, C, H, W) -> (B, H, W), or (B, C, T, H, W) -> (B, T, H, W): one map per frame."""
    return spatial_softmax(features.mean(dim=1))


def apply_attention(features: Tensor, maps: Tensor) -> Tensor:
    """Re-weight (B, C, T, H, W) features by (B, T, H, W) maps scaled to mean 1 over H·W.

    The paper does not say how a map weights its frame; scaling the softmax map by H·W (our
    choice) keeps the features' magnitude for the fourth block.
    """
    h, w = maps.shape[-2:]
    return features * (maps * (h * w)).unsqueeze(1)


class DiverseAttention(nn.Module):
    """DAO (Fig. 3; Hou et al. 2021): frame 0 gets the self-attention map of eq. 1, frames
    1..T-1 each get their own attention branch (a 1×1 conv to one channel, softmax over H·W).

    The branch form is not given by the paper: a 1×1 convolution is the simplest learnable map
    generator (our choice). Returns the re-weighted features and the maps (B, T, H, W) for eq. 6.
    """

    def __init__(self, channels: int, num_frames: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(channels, 1, 1) for _ in range(num_frames - 1))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        frames = features.unbind(dim=2)
        if len(frames) != len(self.branches) + 1:
            raise MERError(f"DAO was built for {len(self.branches) + 1} frames but the clips have {len(frames)}; "
                           "set the model's num_frames to the datamodule's num_frames")
        maps = [self_attention_map(frames[0])]
        maps += [spatial_softmax(branch(frame).squeeze(1)) for branch, frame in zip(self.branches, frames[1:])]
        stacked = torch.stack(maps, dim=1)
        return apply_attention(features, stacked), stacked


class FrameSelfAttention(nn.Module):
    """IDNet's attention module (Fig. 4 = DAO's self-attention branch): eq. 1 on every frame."""

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        maps = self_attention_map(features)
        return apply_attention(features, maps), maps


class AttentionResNet(nn.Module):
    """A 3D ResNet-18 with an attention module after its third block (MENet and IDNet).

    Input: frames (B, T, C, H, W), uint8 0-255 or float in [0, 1], resized to ``size``² per frame
    and, for ``in_channels=1``, converted to grey (ITU-R 601 luma). Output: 'logits' (fc of the
    max-pooled features), 'features' (B, 512·base_width/64), 'maps' (B, T, h, w) or absent.
    """

    def __init__(self, layout: ResNetLayout, num_outputs: int, size: int, in_channels: int,
                 attention: nn.Module | None, base_width: int = 64) -> None:
        super().__init__()
        self.size, self.in_channels = size, in_channels
        self.backbone: ResNet = resnet18(in_channels, num_outputs, layout, base_width=base_width, global_pool="max")
        self.attention = attention

    @property
    def feature_dim(self) -> int:
        return self.backbone.out_channels

    def prepare(self, frames: Tensor) -> Tensor:
        """(B, T, C, H, W) clip -> (B, C', T, size, size) float input."""
        clip = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
        if self.in_channels == 1 and clip.shape[2] == 3:
            clip = kornia.color.rgb_to_grayscale(clip)  # ITU-R 601 luma, as LED's preprocessing
        if clip.shape[2] != self.in_channels:
            raise MERError(f"the model expects {self.in_channels}-channel frames but the clips have {clip.shape[2]}; "
                           "set in_channels to 3 (RGB) or 1 (grey, converted from RGB)")
        b, t, c, h, w = clip.shape
        if (h, w) != (self.size, self.size):
            clip = F.interpolate(clip.flatten(0, 1), size=(self.size, self.size), mode="bilinear",
                                 align_corners=False, antialias=True).view(b, t, c, self.size, self.size)
        return clip.transpose(1, 2)

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        net = self.backbone
        x = net.stages[:3](net.stem(self.prepare(frames)))
        out: dict[str, Tensor] = {}
        if self.attention is not None:
            x, out["maps"] = self.attention(x)
        features = net.pool(net.stages[3](x)).flatten(1)
        return {**out, "features": features, "logits": net.fc(features)}


def menet(num_classes: int, num_frames: int, size: int = 256, in_channels: int = 3, use_dao: bool = True,
          base_width: int = 64) -> AttentionResNet:
    """MENet (Table 1, DAO after block 3 unless ``use_dao`` is false: Table 5 rows 1 and 4)."""
    dao = DiverseAttention(base_width * 4, num_frames) if use_dao else None
    return AttentionResNet(MENET_LAYOUT, num_classes, size, in_channels, dao, base_width)


def idnet(num_identities: int, size: int = 128, in_channels: int = 3, base_width: int = 64) -> AttentionResNet:
    """IDNet (Table 2, frame-wise self-attention after block 3), classifying training subjects."""
    return AttentionResNet(IDNET_LAYOUT, num_identities, size, in_channels, FrameSelfAttention(), base_width)
