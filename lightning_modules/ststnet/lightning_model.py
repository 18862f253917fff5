"""STSTNet training: the published protocol (Adam, lr 5e-5, cross-entropy, last epoch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import Batch, MERClassifier, WeightedLossMixin
from .torch_model import STSTNetModel


class STSTNet(WeightedLossMixin, MERClassifier):
    """Reference baseline on the onset→apex flow image ('apex_flow').

    Args:
        num_classes: linked from the datamodule.
        num_aus: linked from the datamodule (unused).
        num_identities: linked from the datamodule (unused).
        in_channels: channels of the flow image (u, v, strain).
        image_size: side of the square input (28 in the composite protocol).
        lr: Adam learning rate (5e-5 published).
    """

    inputs = frozenset({"apex_flow"})
    fold_batch_equivalence = "docs/speed.md, statistical equivalence: composite set, 4 folds, seeds 0-4"

    def __init__(self, num_classes: int = 3, num_aus: int = 0, num_identities: int = 0, in_channels: int = 3,
                 image_size: int = 28, lr: float = 5e-5) -> None:
        super().__init__(num_classes, num_aus, num_identities)
        self.save_hyperparameters()
        self.net = STSTNetModel(in_channels, num_classes, image_size)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return {"logits": self.net(batch["apex_flow"])}

    def probe_features(self, batch: Batch) -> dict[str, Tensor]:
        """The pooled triple-stream features before the classifier."""
        return {"pooled": self.net.features(batch["apex_flow"])}

    def loss_terms(self, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"cls": F.cross_entropy(outputs["logits"], batch["label"])}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
