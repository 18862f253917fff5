"""STSTNet (Liong et al., FG 2019): shallow triple-stream CNN on one u/v/strain flow image."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _stream(in_channels: int, filters: int) -> nn.Sequential:
    """Conv 3×3 (padding 2) → ReLU → BN → MaxPool 3×3/3 (padding 1) → Dropout 0.5."""
    return nn.Sequential(
        nn.Conv2d(in_channels, filters, kernel_size=3, padding=2),
        nn.ReLU(),
        nn.BatchNorm2d(filters),
        nn.MaxPool2d(kernel_size=3, stride=3, padding=1),
        nn.Dropout(0.5),
    )


class STSTNetModel(nn.Module):
    """Three parallel streams (3, 5, 8 filters), concatenated, 2×2 average pool, linear classifier.

    For a 28×28 input the pooled map is 5×5×16, the published size.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 3, image_size: int = 28) -> None:
        super().__init__()
        self.streams = nn.ModuleList(_stream(in_channels, f) for f in (3, 5, 8))
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        side = ((image_size + 2 * 2 - 3 + 1) + 2 - 3) // 3 + 1
        self.classifier = nn.Linear(16 * (side // 2) ** 2, num_classes)

    def features(self, image: Tensor) -> Tensor:
        """The pooled, flattened stream maps the classifier reads (B, 16 · side²)."""
        maps = torch.cat([stream(image) for stream in self.streams], dim=1)
        return self.pool(maps).flatten(1)

    def forward(self, image: Tensor) -> Tensor:
        return self.classifier(self.features(image))
