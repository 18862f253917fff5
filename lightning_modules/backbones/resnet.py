"""ResNet with BasicBlocks (He et al., 2016), written from scratch, in 2D or 3D.

One implementation serves every variant: a :class:`ResNetLayout` fixes the dimensionality and the
kernel / stride / padding of the stem convolution, the stem max-pool and each stage (the stage's
stride applies to its first block, as in He et al.). The ImageNet 2D layout (:data:`IMAGENET_2D`)
gives the classic ResNet-18/34; other layouts (e.g. the modified 3D-ResNet18s of Xie et al. 2022,
Tables 1-2) are configurations of the same classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

Size = int | tuple[int, ...]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAXPOOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_GLOBAL_POOL = {("avg", 2): nn.AdaptiveAvgPool2d, ("avg", 3): nn.AdaptiveAvgPool3d,
                ("max", 2): nn.AdaptiveMaxPool2d, ("max", 3): nn.AdaptiveMaxPool3d}

Norm = Literal["batch", "layer"]


def norm_layer(kind: Norm, channels: int, dims: int) -> nn.Module:
    """'batch': BatchNorm (statistics over the batch); 'layer': GroupNorm with one group (each sample
    normalised over its channels and positions, the same in training and evaluation)."""
    if kind == "batch":
        return _BN[dims](channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    raise ValueError(f"unknown norm {kind!r}; expected 'batch' or 'layer'")


@dataclass(frozen=True)
class ConvSpec:
    """Kernel, stride and padding of one convolution or pooling (an int or one value per axis)."""

    kernel: Size
    stride: Size = 1
    padding: Size = 0


@dataclass(frozen=True)
class ResNetLayout:
    """Where a ResNet variant differs from another: dimensionality, stem, stem pool, stages.

    ``stages[i]`` is the kernel / padding of every conv of stage i and the stride of its first
    block (the other blocks have stride 1).
    """

    dims: int
    stem: ConvSpec
    stem_pool: ConvSpec
    stages: tuple[ConvSpec, ConvSpec, ConvSpec, ConvSpec]


IMAGENET_2D = ResNetLayout(
    dims=2, stem=ConvSpec(7, 2, 3), stem_pool=ConvSpec(3, 2, 1),
    stages=(ConvSpec(3, 1, 1), ConvSpec(3, 2, 1), ConvSpec(3, 2, 1), ConvSpec(3, 2, 1)),
)  # fmt: skip


class BasicBlock(nn.Module):
    """Two convs (``kernel``, ``padding``) with a norm layer (:func:`norm_layer`, BN by default) and an
    identity (or 1-wide projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: Size = 1, dims: int = 2, kernel: Size = 3, padding: Size = 1,
                 norm: Norm = "batch"):
        super().__init__()
        conv = _CONV[dims]
        self.conv1 = conv(in_planes, planes, kernel, stride=stride, padding=padding, bias=False)
        self.bn1 = norm_layer(norm, planes, dims)
        self.conv2 = conv(planes, planes, kernel, padding=padding, bias=False)
        self.bn2 = norm_layer(norm, planes, dims)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride not in (1, (1,) * dims) or in_planes != planes:
            self.shortcut = nn.Sequential(conv(in_planes, planes, 1, stride=stride, bias=False), norm_layer(norm, planes, dims))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def make_stage(in_planes: int, planes: int, blocks: int, stride: Size, dims: int = 2, kernel: Size = 3,
               padding: Size = 1, norm: Norm = "batch") -> nn.Sequential:
    """``blocks`` BasicBlocks; the first one carries the stride / channel change."""
    layers = [BasicBlock(in_planes, planes, stride, dims, kernel, padding, norm)]
    layers += [BasicBlock(planes, planes, 1, dims, kernel, padding, norm) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """Stem (conv, norm, ReLU, max-pool), four stages (``base_width`` × 1/2/4/8 channels), global
    pool, Linear; ``norm`` (:func:`norm_layer`) is BatchNorm unless set. The parts are public
    (``stem``, ``stages``, ``pool``, ``fc``) so a model can insert a module between stages.

    Input (B, C, H, W) for 2D or (B, C, T, H, W) for 3D layouts; output (B, num_features). With
    the ImageNet layout any input of >= ~28 px works (adaptive pooling).
    """

    def __init__(self, layers: Sequence[int], in_channels: int = 3, num_features: int = 512,
                 layout: ResNetLayout = IMAGENET_2D, base_width: int = 64,
                 global_pool: Literal["avg", "max"] = "avg", norm: Norm = "batch") -> None:
        super().__init__()
        d, stem, pool = layout.dims, layout.stem, layout.stem_pool
        self.stem = nn.Sequential(
            _CONV[d](in_channels, base_width, stem.kernel, stride=stem.stride, padding=stem.padding, bias=False),
            norm_layer(norm, base_width, d),
            nn.ReLU(inplace=True),
            _MAXPOOL[d](pool.kernel, stride=pool.stride, padding=pool.padding),
        )
        stages, in_planes = [], base_width
        for i, (spec, blocks) in enumerate(zip(layout.stages, layers)):
            planes = base_width * 2**i
            stages.append(make_stage(in_planes, planes, blocks, spec.stride, d, spec.kernel, spec.padding, norm))
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.out_channels = in_planes
        self.pool = _GLOBAL_POOL[global_pool, d](1)
        self.fc = nn.Linear(in_planes, num_features)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def resnet18(in_channels: int = 3, num_features: int = 512, layout: ResNetLayout = IMAGENET_2D, **kwargs) -> ResNet:
    """ResNet-18 (2 blocks per stage) in the given layout; ``kwargs``: base_width, global_pool."""
    return ResNet((2, 2, 2, 2), in_channels, num_features, layout, **kwargs)


def resnet34(in_channels: int = 3, num_features: int = 512, layout: ResNetLayout = IMAGENET_2D, **kwargs) -> ResNet:
    """ResNet-34 (3/4/6/3 blocks per stage) in the given layout; ``kwargs``: base_width, global_pool."""
    return ResNet((3, 4, 6, 3), in_channels, num_features, layout, **kwargs)
