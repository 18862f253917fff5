"""Training logic shared by every MER classifier in the suite."""

from __future__ import annotations

from abc import abstractmethod

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

Batch = dict[str, Tensor]


class MERClassifier(L.LightningModule):
    """A classifier trained on a weighted sum of named loss terms.

    Subclasses build their network in ``__init__`` and implement :meth:`forward` (returns a
    dict with at least 'logits'), :meth:`loss_terms` and :meth:`loss_weights`. Validation
    (inner split of training subjects) and test metrics are per-fold diagnostics; the LOSO
    result is computed once from the pooled predictions of :meth:`predict_step`.

    Args:
        num_classes: number of emotion classes (linked from the datamodule by the CLI).
        num_aus: number of AU labels the datamodule provides (linked; 0 = none).
    """

    def __init__(self, num_classes: int = 3, num_aus: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_aus = num_aus
        metrics = MetricCollection(
            {
                "uf1": MulticlassF1Score(num_classes, average="macro"),
                "uar": MulticlassRecall(num_classes, average="macro"),
                "acc": MulticlassAccuracy(num_classes, average="micro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    @abstractmethod
    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Network outputs for a batch; must contain 'logits' (B, num_classes)."""

    @abstractmethod
    def loss_terms(self, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Unweighted scalar loss terms by name."""

    def loss_weights(self) -> dict[str, float]:
        """Weight of each loss term in the total (1 for terms not listed)."""
        return {}

    def total_loss(self, terms: dict[str, Tensor]) -> Tensor:
        weights = self.loss_weights()
        return sum(weights.get(name, 1.0) * value for name, value in terms.items())

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        terms = self.loss_terms(batch, self(batch))
        loss = self.total_loss(terms)
        size = len(batch["label"])
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        return loss

    def _evaluate(self, batch: Batch, metrics: MetricCollection, stage: str) -> None:
        outputs = self(batch)
        loss = self.total_loss(self.loss_terms(batch, outputs))
        metrics.update(outputs["logits"], batch["label"])
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(batch["label"]))
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """Class probabilities with the table row of each sample (pooled by the LOSO runner)."""
        return {"index": batch["index"], "probs": torch.softmax(self(batch)["logits"].float(), dim=-1)}
