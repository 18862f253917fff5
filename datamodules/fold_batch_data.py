"""A group of LOSO folds whose whole sample table lives on the training device as tensors.

Fold-batched training (``lightning_modules.fold_batch_module``) trains F folds at once; every step needs
one batch per fold, each drawn only from that fold's own training rows. Here the data source's
items of every table row are stacked once into tensors on the device (no DataLoader, no workers);
each fold keeps its training rows, test rows and identity labels as index tensors. At each epoch
start every fold draws its permutation with its own generator (seeded by the caller from the
fold's seed and the epoch), on the device; a step then gathers rows ``(F, b)`` for all folds with one indexing call per key, so
no step waits for the host.

Equal shapes across folds (our choice): folds hold out subjects of different sizes, so their
training sets differ by a few samples. Every fold takes the same steps per epoch,
``ceil(max n_k / B)``, with batches of B and a last batch of ``max n_k - (steps - 1) B``; a fold
with fewer samples tops its epoch up with the first rows of a second permutation of its OWN
training rows. So each fold sees all its training samples every epoch (plus at most the size
difference of the held-out subjects: a handful of repeats, never a sample of another fold's
training set or of its held-out subject).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from datamodules.errors import MERError

from .loso import LOSODataModule

MEMORY_SHARE = 0.5  # our choice: the table may take at most half of the device's free memory
NO_INNER_VALIDATION = ("--fold-batch has no inner validation split (no early stopping per fold); "
                       "set --data.init_args.val_subjects 0 or use --fold-batch off")


def stack_items(datamodule: LOSODataModule) -> dict[str, Tensor]:
    """Every table row's item as tensors (N, ...) in table order (the source's own dataset items)."""
    dataset = datamodule.make_dataset(np.arange(len(datamodule.table)))
    items = [dataset[i] for i in range(len(dataset))]
    keys = [key for key, value in items[0].items() if isinstance(value, Tensor)]
    return {key: torch.stack([item[key] for item in items]) for key in keys}


def free_memory(device: torch.device) -> int:
    """Bytes free on `device` (CUDA: the driver's count; CPU: the free physical pages)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class DeviceResidentFolds:
    """Training and test rows of folds `folds` of `datamodule`, its items on `device`.

    Args:
        datamodule: the run's LOSO datamodule (its ``fold`` is moved through `folds` here).
        folds: fold indices of the group.
        device: where the tensors live.
    """

    def __init__(self, datamodule: LOSODataModule, folds: list[int], device: torch.device) -> None:
        if datamodule.val_subjects:
            raise MERError(NO_INNER_VALIDATION)
        self.folds, self.device = list(folds), device
        self.batch_size = int(datamodule.batch_size)
        tensors = stack_items(datamodule)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if size > MEMORY_SHARE * free_memory(device):
            raise MERError(f"the data of {type(datamodule).__name__} ({size / 2**30:.1f} GiB) does not fit on {device} "
                           f"next to training; run with --fold-batch off")
        self.data = {key: t.to(device) for key, t in tensors.items()}
        train, self.test_rows, identity = [], [], []
        for k in self.folds:
            datamodule.fold = k
            split = datamodule.split()
            rows = np.arange(len(datamodule.table))
            train.append(torch.as_tensor(split["train"], dtype=torch.long, device=device))
            self.test_rows.append(split["test"])
            identity.append(torch.as_tensor(datamodule.identities(rows, split), device=device))
        self.train_rows = train
        self.identity = torch.stack(identity)  # (F, N): row -> identity class in each fold
        largest = max(len(rows) for rows in train)
        self.steps_per_epoch = math.ceil(largest / self.batch_size)
        self.last_batch = largest - (self.steps_per_epoch - 1) * self.batch_size
        self.order: Tensor | None = None  # (F, samples per epoch) table rows of the current epoch

    def start_epoch(self, seeds: list[int]) -> None:
        """Each fold's rows for an epoch, drawn with its own generator seeded by `seeds` (one per
        fold, e.g. from (fold seed, epoch)): its permutation, topped up from a second one of its own rows."""
        per_epoch = (self.steps_per_epoch - 1) * self.batch_size + self.last_batch
        orders = []
        for rows, seed in zip(self.train_rows, seeds):
            generator = torch.Generator(self.device).manual_seed(seed)
            n = len(rows)
            draws = [torch.randperm(n, generator=generator, device=self.device) for _ in range(math.ceil(per_epoch / n))]
            orders.append(rows[torch.cat(draws)[:per_epoch]])
        self.order = torch.stack(orders)

    def train_batch(self, step: int) -> dict[str, Tensor]:
        """The step's batch of every fold, each value (F, b, ...), 'identity' in each fold's own classes."""
        if self.order is None:
            raise RuntimeError("start_epoch() first")
        rows = self.order[:, step * self.batch_size:(step + 1) * self.batch_size]  # (F, b)
        batch = {key: value[rows] for key, value in self.data.items()}
        batch["identity"] = self.identity.gather(1, rows)
        return batch

    def test_batches(self, i: int) -> Iterator[dict[str, Tensor]]:
        """Fold `folds[i]`'s held-out rows in table order, in batches of the configured size (as its
        predict loader gives them), 'identity' -1 as for every sample outside its training split."""
        rows = torch.as_tensor(self.test_rows[i], dtype=torch.long, device=self.device)
        for chunk in rows.split(self.batch_size):
            batch = {key: value[chunk] for key, value in self.data.items()}
            batch["identity"] = self.identity[i, chunk]
            yield batch

    def describe(self) -> dict[str, Any]:
        return {"folds": self.folds, "steps_per_epoch": self.steps_per_epoch, "batch_size": self.batch_size,
                "last_batch": self.last_batch, "train_sizes": [len(r) for r in self.train_rows]}
