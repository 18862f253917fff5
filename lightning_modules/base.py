"""What every MER classifier of the suite shares, and the weighted-loss training style.

:class:`MERClassifier` owns the label space, the metrics, the validation/test/predict contract and
the check that a batch carries the keys the model declares it reads. How a model trains is its
own business: :class:`WeightedLossMixin` gives automatic optimisation of a weighted sum of named
loss terms (MEDN, STSTNet); a model with another schedule implements ``training_step`` itself
(e.g. Xie et al. 2022's staged manual optimisation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from datamodules.errors import MERError

Batch = dict[str, Tensor]
ALWAYS_READ = frozenset({"index", "label"})


class MERClassifier(L.LightningModule, ABC):
    """Base of every classifier: subclasses implement :meth:`forward` (a dict with at least
    'logits' (B, num_classes)), :meth:`evaluation_loss`, :attr:`inputs`, ``training_step`` and
    ``configure_optimizers``.

    Validation (inner split of training subjects) and test metrics (UF1, UAR, accuracy) are
    per-fold diagnostics; the LOSO result is computed once from the pooled output of
    :meth:`predict_step` ({'index', 'probs'}).

    Args:
        num_classes: number of emotion classes (linked from the datamodule by the CLI).
        num_aus: number of AU labels the datamodule provides (linked; 0 = none).
        num_identities: number of training subjects of the fold (linked; 0 = not used). Only
            models that classify identities read it.
    """

    #: Where fold-batched training of this model was shown to give results equivalent to one fold after
    #: another (several seeds, pooled UF1); ``mer loso`` fold-batches a model by default only then.
    fold_batch_equivalence: ClassVar[str | None] = None

    def __init__(self, num_classes: int = 3, num_aus: int = 0, num_identities: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_aus = num_aus
        self.num_identities = num_identities
        metrics = MetricCollection(
            {
                "uf1": MulticlassF1Score(num_classes, average="macro"),
                "uar": MulticlassRecall(num_classes, average="macro"),
                "acc": MulticlassAccuracy(num_classes, average="micro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    # -- what a model provides -------------------------------------------------------------------
    @property
    @abstractmethod
    def inputs(self) -> frozenset[str]:
        """Batch keys the model reads besides 'index' and 'label' (e.g. {'flow', 'frames'})."""

    @abstractmethod
    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Network outputs for a batch; must contain 'logits' (B, num_classes)."""

    @abstractmethod
    def evaluation_loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        """The loss logged as val/loss and test/loss."""

    @abstractmethod
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None: ...

    @abstractmethod
    def configure_optimizers(self) -> Any: ...

    def probe_features(self, batch: Batch) -> dict[str, Tensor]:
        """The features this model claims are (or are not) identity-free, by name, each (B, D),
        for ``mer probe``. A model that declares none says so in one line."""
        raise MERError(f"{type(self).__name__} declares no probe-able features (implement probe_features)")

    # -- shared contract ---------------------------------------------------------------------------
    def require_inputs(self, batch: Batch) -> None:
        """Every loop's batch must carry the declared inputs (one clear error instead of a KeyError)."""
        missing = sorted((ALWAYS_READ | self.inputs) - set(batch))
        if missing:
            raise MERError(
                f"{type(self).__name__} reads batch keys {missing} that the datamodule does not provide "
                f"(it gives {sorted(batch)}); choose a datamodule/config that provides them (e.g. with_frames: true)"
            )

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        self.require_inputs(batch)

    def on_validation_batch_start(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.require_inputs(batch)

    def on_test_batch_start(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.require_inputs(batch)

    def on_predict_batch_start(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.require_inputs(batch)

    def _evaluate(self, batch: Batch, metrics: MetricCollection, stage: str) -> None:
        outputs = self(batch)
        metrics.update(outputs["logits"], batch["label"])
        self.log(f"{stage}/loss", self.evaluation_loss(batch, outputs), on_epoch=True, batch_size=len(batch["label"]), sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """Class probabilities with the table row of each sample (pooled by the LOSO runner)."""
        return {"index": batch["index"], "probs": torch.softmax(self(batch)["logits"].float(), dim=-1)}


def check_loss_weights(**weights: float) -> None:
    """Refuse a negative (or NaN) loss weight: its term would be maximised, silently. 0 turns a term off."""
    bad = [f"{name} {value}" for name, value in weights.items() if not value >= 0]
    if bad:
        raise MERError(f"loss weight(s) {', '.join(bad)}: a loss weight is a number >= 0 (0 turns its term off)")


class WeightedLossMixin(ABC):
    """Training style: automatic optimisation of ``sum_name weight[name] * term[name]``.

    Put it before :class:`MERClassifier` in the bases; implement :meth:`loss_terms` and, where
    some weight is not 1, :meth:`loss_weights`.
    """

    @abstractmethod
    def loss_terms(self, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Unweighted scalar loss terms by name."""

    def loss_weights(self) -> dict[str, float]:
        """Weight of each loss term in the total (1 for terms not listed)."""
        return {}

    def total_loss(self, terms: dict[str, Tensor]) -> Tensor:
        weights = self.loss_weights()
        return sum(weights.get(name, 1.0) * value for name, value in terms.items())

    def evaluation_loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        return self.total_loss(self.loss_terms(batch, outputs))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        terms = self.loss_terms(batch, self(batch))
        loss = self.total_loss(terms)
        size = len(batch["label"])
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        return loss
