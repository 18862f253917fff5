"""ResNet with BasicBlocks (He et al., 2016), written from scratch.

``BasicBlock`` is dimension-generic (``dims=2`` or ``3``) so 3D ResNets can reuse it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN and an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dims: int = 2):
        super().__init__()
        conv, bn = _CONV[dims], _BN[dims]
        self.conv1 = conv(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = conv(planes, planes, 3, padding=1, bias=False)
        self.bn2 = bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                conv(in_planes, planes, 1, stride=stride, bias=False), bn(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def make_stage(
    in_planes: int, planes: int, blocks: int, stride: int, dims: int = 2
) -> nn.Sequential:
    """``blocks`` BasicBlocks; the first one carries the stride / channel change."""
    layers = [BasicBlock(in_planes, planes, stride, dims)]
    layers += [BasicBlock(planes, planes, 1, dims) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """2D ResNet: ImageNet stem, four stages (64-512), global average pool, Linear.

    Any input size >= ~28 px works thanks to the adaptive pooling (28x28 reaches 1x1).
    Output: (B, num_features).
    """

    def __init__(self, layers: Sequence[int], in_channels: int = 3, num_features: int = 512):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        widths = (64, 128, 256, 512)
        stages, in_planes = [], 64
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            stages.append(make_stage(in_planes, planes, blocks, stride=1 if i == 0 else 2))
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_features)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def resnet18(in_channels: int = 3, num_features: int = 512) -> ResNet:
    return ResNet((2, 2, 2, 2), in_channels, num_features)


def resnet34(in_channels: int = 3, num_features: int = 512) -> ResNet:
    return ResNet((3, 4, 6, 3), in_channels, num_features)
