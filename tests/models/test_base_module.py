"""The shared base: an enforced ABC, declared inputs, the evaluation/predict contract, training styles."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from datamodules.datasets import TensorDictDataset
from datamodules.errors import MERError
from lightning_modules import MEDN, MERClassifier, STSTNet, WeightedLossMixin, Xie2022


class FixedLogits(WeightedLossMixin, MERClassifier):
    """Logits are the batch's 'scores' times a learnable scale: predictions known in advance."""

    inputs = frozenset({"scores"})

    def __init__(self) -> None:
        super().__init__(num_classes=3)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return {"logits": batch["scores"] * self.scale}

    def loss_terms(self, batch, outputs):
        return {"cls": F.cross_entropy(outputs["logits"], batch["label"]), "twice": 2 * outputs["logits"].mean()}

    def loss_weights(self):
        return {"twice": 0.5}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


SCORES = torch.tensor([[3.0, 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0], [0, 3, 0], [3, 0, 0]])
LABELS = torch.tensor([0, 1, 1, 0, 2, 2])  # predictions 0 1 2 0 1 0


def loader(**extra: torch.Tensor) -> DataLoader:
    tensors = {"scores": SCORES, "label": LABELS, **extra}
    return DataLoader(TensorDictDataset(tensors, torch.arange(6).numpy()), batch_size=4)


def quiet_trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, max_epochs=1)


def test_abstract_methods_are_enforced():
    assert {"forward", "inputs", "evaluation_loss", "training_step", "configure_optimizers"} <= MERClassifier.__abstractmethods__

    class NoTrainingStyle(MERClassifier):
        inputs = frozenset()

        def forward(self, batch):
            return {}

        def evaluation_loss(self, batch, outputs):
            return torch.zeros(())

    class NoLossTerms(WeightedLossMixin, MERClassifier):
        inputs = frozenset()

        def forward(self, batch):
            return {}

        def configure_optimizers(self):
            return None

    for incomplete, missing in ((NoTrainingStyle, "training_step"), (NoLossTerms, "loss_terms")):
        with pytest.raises(TypeError, match=missing):
            incomplete()


def test_every_model_takes_the_linked_label_space():
    for model in (MEDN(num_classes=4, num_aus=2, num_identities=7), STSTNet(num_classes=4, num_identities=7),
                  Xie2022(num_classes=4, num_identities=7, base_width=8, menet_size=32, idnet_size=16, num_frames=2)):
        assert (model.num_classes, model.num_identities) == (4, 7)
    assert MEDN().inputs == {"flow", "frames"} and MEDN(motion_backbone="resnet18").inputs == {"flow", "apex_flow"}
    assert STSTNet().inputs == {"apex_flow"}
    assert Xie2022(num_identities=3).inputs == {"frames", "identity"}
    assert Xie2022(use_idnet_mine=False).inputs == {"frames"}


def test_weighted_sum_training_and_evaluation_loss():
    model = FixedLogits()
    batch = {"scores": SCORES, "label": LABELS, "index": torch.arange(6)}
    loss = model.training_step(batch, 0)
    expected = F.cross_entropy(SCORES, LABELS) + 0.5 * 2 * SCORES.mean()
    assert loss.item() == pytest.approx(expected.item())
    assert model.evaluation_loss(batch, model(batch)).item() == pytest.approx(expected.item())


def test_validation_metrics_and_predict_contract():
    model = FixedLogits()
    metrics = quiet_trainer().validate(model, loader(), verbose=False)[0]
    # confusion (rows = label): class 0 -> 0,0; class 1 -> 1,2; class 2 -> 1,0
    # recall: 1, 1/2, 0 -> UAR 0.5; F1: 2*2/(2*2+1+0)=0.8, 2*1/(2+1+1)=0.5, 0 -> UF1 0.433; acc 3/6
    assert metrics["val/uar"] == pytest.approx(0.5)
    assert metrics["val/uf1"] == pytest.approx((0.8 + 0.5) / 3)
    assert metrics["val/acc"] == pytest.approx(0.5)
    batches = quiet_trainer().predict(model, loader())
    assert all(set(b) == {"index", "probs"} for b in batches)
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(6))
    torch.testing.assert_close(torch.cat([b["probs"] for b in batches]), torch.softmax(SCORES, -1))


def test_a_batch_without_a_declared_input_is_one_clear_error():
    class NeedsFlow(FixedLogits):
        inputs = frozenset({"scores", "flow"})

    with pytest.raises(MERError, match=r"reads batch keys \['flow'\].*with_frames"):
        quiet_trainer().validate(NeedsFlow(), loader(), verbose=False)
