"""Predictions of a fold gathered on rank 0 when the fold trains on several devices (DDP)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def merge_rank_predictions(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(index, probs) of every rank → one row per sample, sorted by table index.

    Lightning's DistributedSampler pads the ranks to equal length by repeating samples: each
    repeated sample is kept once (its first occurrence).
    """
    index = np.concatenate([i for i, _ in parts])
    probs = np.concatenate([p for _, p in parts])
    unique, first = np.unique(index, return_index=True)
    return unique, probs[first]


def gather_predictions(batches: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """This process's predict batches, merged with those of the other ranks when distributed."""
    local = (torch.cat([b["index"] for b in batches]).cpu().numpy(), torch.cat([b["probs"] for b in batches]).cpu().numpy())
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return merge_rank_predictions([local])
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return merge_rank_predictions(parts)
