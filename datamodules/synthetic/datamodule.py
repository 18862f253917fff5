"""The built-in synthetic micro-expression dataset as a LOSO DataModule (the embedded default)."""

from __future__ import annotations

from dataclasses import asdict
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from datamodules.errors import MERError

from ..cache import ClipCache, PreparedClip, build_cache, default_cache_dir
from ..datasets import PreparedClipDataset
from ..loso import LOSODataModule
from ..preprocessing import FLOW_BACKENDS, FlowBackend, TVL1Settings, prepare_clip
from .generator import (
    AU_VOCABULARY, CLASS_SKEW, EMOTIONS_3, EMOTIONS_7, TO_3_CLASS, ClipSpec, SyntheticConfig, au_multi_hot, generate_specs,
    render_clip,
)

PROTOCOLS: dict[str, tuple[str, ...]] = {"3class": EMOTIONS_3, "7class": EMOTIONS_7}
CACHE_FORMAT = 1  # bump when the layout of prepared clips changes


def prepare_synthetic_clip(spec: ClipSpec, config: SyntheticConfig, num_frames: int, tvl1: TVL1Settings,
                           flow_backend: FlowBackend = "opencv") -> PreparedClip:
    """Render one clip, sample it and compute its flow: the cache row and arrays."""
    clip = render_clip(spec, config)
    arrays, apex_pos = prepare_clip(clip.frames, clip.landmarks, spec.onset, spec.apex, spec.offset, num_frames, tvl1,
                                    flow_backend)
    arrays["au"] = au_multi_hot(spec.aus).astype(np.uint8)
    row = {
        "sample_id": spec.sample_id,
        "subject": spec.subject,
        "dataset": "synthetic",
        "emotion": spec.emotion,
        "label_7class": EMOTIONS_7.index(spec.emotion),
        "label_3class": EMOTIONS_3.index(TO_3_CLASS[spec.emotion]),
        "aus": "+".join(map(str, spec.aus)),
        "hard": spec.hard,
        "onset": spec.onset,
        "apex": spec.apex,
        "offset": spec.offset,
        "n_frames": spec.n_frames,
        "apex_pos": apex_pos,
    }
    return row, arrays


class SyntheticDataModule(LOSODataModule):
    """Seeded synthetic face clips (identity, FACS-like AUs, hard samples), prepared once into a cache.

    The fold and loader options (fold, test_subject, k_folds, val_subjects, batch_size, num_workers,
    split_seed) are LOSODataModule's.

    Args:
        n_subjects: number of synthetic subjects (= LOSO folds).
        clips_per_subject: mean clips per subject (per-subject class priors are skewed).
        difficulty: 0 easy .. 1 hard (noise, jitter, illumination, AU amplitude, hard-sample share).
        generator_seed: seed of the whole synthetic dataset.
        hard_fraction: share of clips drawn from the AU sets that two 3-class emotions share (happiness
            and contempt: AU12; surprise and fear: AU1+2(+25)); None = 0.1 + 0.4 * difficulty.
        class_skew: concentration of each subject's Dirichlet class prior; small values make most of a
            subject's clips one class (an identity confound: the face predicts the label in training).
        protocol: '3class' (negative/positive/surprise, composite mapping) or '7class' emotions.
        num_frames: T frames sampled over onset→offset (flow sequence has T-1 steps).
        image_size: side of the square face crops.
        cache_dir: where prepared clips are cached (default $MER_CACHE_DIR or ~/.cache/mer-suite).
        prepare_workers: processes computing TV-L1 flow when the cache is built.
        tvl1: TV-L1 settings (OpenCV's defaults unless set; part of the cache key).
        flow: TV-L1 implementation: 'opencv' (cv2 DualTVL1, default) or 'torch' (the batched PyTorch
            port, datamodules/face/tvl1_torch.py; on the GPU when there is one; part of the cache key).
        with_frames: also load RGB frames (needed by the LED motion branch).
    """

    def __init__(
        self,
        n_subjects: int = 8,
        clips_per_subject: int = 11,
        difficulty: float = 0.15,
        generator_seed: int = 0,
        hard_fraction: float | None = None,
        class_skew: float = CLASS_SKEW,
        protocol: Literal["3class", "7class"] = "3class",
        num_frames: int = 8,
        image_size: int = 144,
        cache_dir: str | None = None,
        prepare_workers: int = 2,
        tvl1: TVL1Settings = TVL1Settings(),
        flow: FlowBackend = "opencv",
        with_frames: bool = True,
        fold: int = 0,
        test_subject: str | None = None,
        k_folds: int | None = None,
        val_subjects: int = 0,
        batch_size: int = 8,
        num_workers: int = 0,
        split_seed: int = 0,
    ) -> None:
        super().__init__(fold=fold, test_subject=test_subject, k_folds=k_folds, val_subjects=val_subjects,
                         batch_size=batch_size, num_workers=num_workers, split_seed=split_seed)
        if protocol not in PROTOCOLS:
            raise MERError(f"unknown protocol '{protocol}'; choose one of {sorted(PROTOCOLS)}")
        if flow not in FLOW_BACKENDS:
            raise MERError(f"unknown flow backend '{flow}'; choose one of {list(FLOW_BACKENDS)}")
        if hard_fraction is not None and not 0 <= hard_fraction <= 1:
            raise MERError(f"hard_fraction is a share of the clips and must be in [0, 1], got {hard_fraction}")
        if class_skew <= 0:
            raise MERError(f"class_skew is a Dirichlet concentration and must be > 0, got {class_skew}")
        self.protocol = protocol
        self.generator = SyntheticConfig(
            n_subjects=n_subjects, clips_per_subject=clips_per_subject, image_size=image_size,
            difficulty=difficulty, hard_fraction=hard_fraction, class_skew=class_skew, seed=generator_seed,
        )
        self.num_frames = num_frames
        self.cache_dir = cache_dir or default_cache_dir()
        self.prepare_workers = prepare_workers
        self.with_frames = with_frames
        self.tvl1 = tvl1
        self.flow = flow

    @property
    def class_names(self) -> tuple[str, ...]:
        return PROTOCOLS[self.protocol]

    @property
    def num_aus(self) -> int:
        return len(AU_VOCABULARY)

    def cache_settings(self) -> dict[str, Any]:
        """Everything that determines the prepared arrays (the cache key)."""
        return {
            "source": "synthetic",
            "format": CACHE_FORMAT,
            # class_skew only when set: caches prepared before the option existed keep their key
            "generator": {k: v for k, v in asdict(self.generator).items() if k != "class_skew" or v != CLASS_SKEW},
            "num_frames": self.num_frames,
            "tvl1": asdict(self.tvl1),
            # absent for OpenCV: caches prepared before the option existed keep their key
            **({"flow_backend": self.flow} if self.flow != "opencv" else {}),
        }

    @property
    def cache_location(self) -> Path:
        return ClipCache.location(self.cache_dir, "synthetic", self.cache_settings())

    def check_inputs(self) -> None:
        """No input files (the clips are generated); a prepared cache is checked for damage (array headers)."""
        if ClipCache.is_complete(self.cache_location):
            ClipCache(self.cache_location).check()

    @cached_property
    def cache(self) -> ClipCache:
        directory = self.cache_location
        if ClipCache.is_complete(directory):
            return ClipCache(directory)
        prepare = partial(prepare_synthetic_clip, config=self.generator, num_frames=self.num_frames, tvl1=self.tvl1,
                          flow_backend=self.flow)
        return build_cache(directory, self.cache_settings(), generate_specs(self.generator), prepare, self.prepare_workers,
                           desc="synthetic clips: render + TV-L1")

    def prepare_data(self) -> None:
        self.cache  # builds it once (rank 0 under DDP)

    def load_table(self) -> pd.DataFrame:
        table = self.cache.index.copy()
        table["label"] = table[f"label_{self.protocol}"]
        return table

    def make_dataset(self, rows: np.ndarray) -> Dataset:
        return PreparedClipDataset(self.cache, rows, self.table["label"].to_numpy(), self.with_frames)
