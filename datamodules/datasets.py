"""Thin map-style datasets. Every item is a dict of tensors with an 'index' into the sample table.

Keys a model may read: 'flow' (T-1, C, H, W) flow sequence, 'apex_flow' (C, H, W) onset→apex flow,
'frames' (T, 3, H, W) RGB in [0, 1], 'au' (n_AU,) multi-hot, 'au_mask' (whether AU labels exist),
'label', and 'identity' (the subject's identity class in this fold, -1 outside its training split;
added by LOSODataModule around every dataset).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .cache import ClipCache


class TensorDictDataset(Dataset):
    """Rows of in-memory tensors that share their first axis."""

    def __init__(self, tensors: dict[str, Tensor], rows: np.ndarray) -> None:
        self.tensors = tensors
        self.rows = np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        row = int(self.rows[i])
        return {"index": torch.tensor(row), **{k: v[row] for k, v in self.tensors.items()}}


class WithIdentity(Dataset):
    """A split's dataset whose items also carry 'identity' (long), one value per item position."""

    def __init__(self, dataset: Dataset, rows: np.ndarray, identity: np.ndarray) -> None:
        self.dataset = dataset
        self.rows = np.asarray(rows)
        self.identity = torch.as_tensor(identity, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {**self.dataset[i], "identity": self.identity[i]}


class PreparedClipDataset(Dataset):
    """Clips read lazily from a memory-mapped ClipCache.

    Args:
        cache: the prepared cache.
        rows: row positions of the cache index that belong to this split.
        labels: integer class label of every cache row.
        with_frames: also return the RGB frames (for models that need appearance, e.g. LED).
        composite_apex: 'apex_flow' is the prepared u/v/strain image (3, 28, 28; 0-255, as the
            composite protocol's STSTNet input) instead of the onset→apex flow of the sequence.
    """

    def __init__(self, cache: ClipCache, rows: np.ndarray, labels: np.ndarray, with_frames: bool = True,
                 composite_apex: bool = False) -> None:
        self.cache = cache
        self.rows = np.asarray(rows)
        self.labels = torch.as_tensor(np.array(labels), dtype=torch.long)
        self.apex_pos = torch.as_tensor(np.array(cache.index["apex_pos"]), dtype=torch.long)
        self.with_frames = with_frames
        self.composite_apex = composite_apex

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        row = int(self.rows[i])
        flow = torch.from_numpy(np.asarray(self.cache.array("flow")[row], dtype=np.float32))
        item = {
            "index": torch.tensor(row),
            "label": self.labels[row],
            "flow": flow,
            "apex_flow": self._apex_image(row) if self.composite_apex else flow[self.apex_pos[row] - 1],
            "au": torch.from_numpy(np.asarray(self.cache.array("au")[row], dtype=np.float32)),
            "au_mask": torch.tensor(True),
        }
        if self.with_frames:
            frames = np.asarray(self.cache.array("frames")[row], dtype=np.float32) / 255.0
            item["frames"] = torch.from_numpy(frames)
        return item

    def _apex_image(self, row: int) -> Tensor:
        return torch.from_numpy(np.asarray(self.cache.array("apex_image")[row], dtype=np.float32))
