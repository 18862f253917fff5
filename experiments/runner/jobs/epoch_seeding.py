"""Randomness of a fold as a function of (fold seed, epoch) only, so a resumed fold is exact.

A fold killed after epoch e and resumed from its epoch-end checkpoint must train epochs e+1..
exactly as an uninterrupted run. Saving generator states at the checkpoint is not enough with
Lightning: on resume the train loader's iterator is created (drawing from the global generator)
before the first resumed epoch starts, and in a different place than in an uninterrupted run.
So every epoch reseeds instead: the train shuffle from (seed, epoch) when the epoch starts, and
the global torch/numpy/python generators (dropout, ...) from (seed, epoch) at its first batch,
after the loader is iterating. The checkpoint's epoch is then the whole random state.
Items of the datasets must be deterministic (they are: no random augmentation in workers).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import RandomSampler


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """An independent 32-bit seed per (fold seed, epoch, stream)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def train_samplers(trainer: L.Trainer) -> list[Any]:
    """The samplers of the train loader(s) (the sampler inside a batch sampler included)."""
    loaders = trainer.train_dataloader
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    samplers = []
    for dl in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        samplers += [getattr(dl, "sampler", None), getattr(getattr(dl, "batch_sampler", None), "sampler", None)]
    return [s for s in samplers if s is not None]


class EpochSeeding(L.Callback):
    """Reseeds the train shuffle and the global generators from (seed, epoch) every epoch.

    A DistributedSampler (DDP) already shuffles by (seed, epoch) through ``set_epoch``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for sampler in train_samplers(trainer):
            if isinstance(sampler, RandomSampler):
                sampler.generator = torch.Generator().manual_seed(epoch_seed(self.seed, trainer.current_epoch, 0))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch, 1))
            np.random.seed(epoch_seed(self.seed, trainer.current_epoch, 2))
            random.seed(epoch_seed(self.seed, trainer.current_epoch, 3))
