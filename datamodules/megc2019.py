"""MEGC2019 Composite Database Evaluation (CDE) set as onset→apex flow images.

The public copies hold one 28×28 PNG per sample (horizontal flow, vertical flow, optical strain,
min-max normalised to 0-255; OpenCV reads it as BGR) named ``<sub>_<filename_o> .png`` — note the
space before ``.png`` — and the official list ``labels.csv`` (dataset, sub, filename_o, label with
0 negative, 1 positive, 2 surprise). 442 samples from 68 subjects of CASME II, SAMM and SMIC-HS.
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from datamodules.errors import MERError

from .datasets import TensorDictDataset
from .loso import LOSODataModule

CDE_CLASSES = ("negative", "positive", "surprise")
LABEL_COLUMNS = ("dataset", "sub", "filename_o", "label")


def read_flow_image(path: Path) -> np.ndarray | str:
    """The image as stored (H, W, C) uint8, or why it is unusable ('missing', '0 bytes', ...)."""
    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "0 bytes"
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        return "not a readable image"
    if image.dtype != np.uint8:
        return f"{image.dtype} pixels, expected 8-bit"
    return image if image.ndim == 3 else image[..., None]


def describe_shape(shape: tuple[int, ...]) -> str:
    """'20x28' for 3 channels (u, v, strain), else '20x28 with 1 channel(s)'."""
    height, width, channels = shape
    return f"{height}x{width}" + ("" if channels == 3 else f" with {channels} channel(s)")


class MEGC2019CompositeDataModule(LOSODataModule):
    """LOSO over the 68 subjects of the composite set; subject ids are ``<dataset>_<sub>``.

    The fold and loader options (fold, test_subject, k_folds, val_subjects, batch_size, num_workers,
    split_seed) are LOSODataModule's.

    Args:
        root: folder holding the label list and the flow image folder.
        labels_file: label list, relative to `root`.
        image_dir: folder of flow images, relative to `root`.
        file_pattern: image file name; fields {sub} and {filename_o} from the label list.
        pixel_scale: factor applied to the 0-255 pixels (1.0 = raw values as STSTNet was fed;
            1/255 for models that expect [0, 1]).
    """

    def __init__(
        self,
        root: str = "../shared/data/megc2019_cde",
        labels_file: str = "labels.csv",
        image_dir: str = "flow",
        file_pattern: str = "{sub}_{filename_o} .png",
        pixel_scale: float = 1.0,
        fold: int = 0,
        test_subject: str | None = None,
        k_folds: int | None = None,
        val_subjects: int = 0,
        batch_size: int = 256,
        num_workers: int = 0,
        split_seed: int = 0,
    ) -> None:
        super().__init__(fold=fold, test_subject=test_subject, k_folds=k_folds, val_subjects=val_subjects,
                         batch_size=batch_size, num_workers=num_workers, split_seed=split_seed)
        self.root = Path(root).expanduser()
        self.labels_path = self.root / labels_file
        self.image_dir = self.root / image_dir
        self.file_pattern = file_pattern
        self.pixel_scale = pixel_scale
        if not self.labels_path.is_file():
            raise MERError(f"label list not found: {self.labels_path}; set --data.init_args.root to the folder that holds {labels_file}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return CDE_CLASSES

    def load_table(self) -> pd.DataFrame:
        try:
            sheet = pd.read_csv(self.labels_path, dtype={"sub": str, "filename_o": str, "label": str})
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise MERError(f"{self.labels_path}: not a readable CSV ({err}); expected columns {list(LABEL_COLUMNS)}") from err
        missing = [c for c in LABEL_COLUMNS if c not in sheet.columns]
        if missing:
            raise MERError(f"{self.labels_path}: missing column(s) {missing}; expected columns {list(LABEL_COLUMNS)}")
        labels = pd.to_numeric(sheet["label"], errors="coerce")
        bad = sheet.loc[~labels.isin(range(len(CDE_CLASSES))), ["sub", "filename_o", "label"]]
        if len(bad):
            first = bad.iloc[0]
            raise MERError(
                f"{self.labels_path}: {len(bad)} row(s) with unknown class, e.g. {first['sub']}/{first['filename_o']} "
                f"label='{first['label']}'; labels must be 0 (negative), 1 (positive) or 2 (surprise)"
            )
        return pd.DataFrame(
            {
                "sample_id": sheet["dataset"] + "/" + sheet["sub"] + "/" + sheet["filename_o"],
                "subject": sheet["dataset"] + "_" + sheet["sub"],
                "dataset": sheet["dataset"],
                "label": labels.astype(int),
                "file": [self.file_pattern.format(sub=s, filename_o=f) for s, f in zip(sheet["sub"], sheet["filename_o"])],
            }
        )

    def check_inputs(self) -> None:
        """Every flow image of the label list is read (442 tiny PNGs: milliseconds); one error lists all bad ones."""
        self.images

    @cached_property
    def images(self) -> np.ndarray:
        """All flow images as stored (N, H, W, 3) uint8, read once; one MERError names every unusable file."""
        if not self.image_dir.is_dir():
            raise MERError(f"flow image folder not found: {self.image_dir}; check --data.init_args.root / image_dir")
        images = {name: read_flow_image(self.image_dir / name) for name in self.table["file"]}
        sizes = Counter(image.shape[:2] for image in images.values() if isinstance(image, np.ndarray))
        expected = (*sizes.most_common(1)[0][0], 3) if sizes else (0, 0, 3)  # the usual size; u, v, strain
        problems = [f"{name} ({image})" if isinstance(image, str) else
                    f"{name} ({describe_shape(image.shape)}, expected {describe_shape(expected)})"
                    for name, image in images.items() if isinstance(image, str) or image.shape != expected]
        if problems:
            raise MERError(f"{len(problems)} unusable flow image(s) in {self.image_dir}: {', '.join(problems)}; "
                           f"replace them or remove their rows from {self.labels_path.name}")
        return np.stack([images[name] for name in self.table["file"]])

    @cached_property
    def tensors(self) -> dict[str, torch.Tensor]:
        """Model inputs of every sample: the image as 'apex_flow' and as a length-1 'flow' sequence."""
        apex = torch.from_numpy(self.images).permute(0, 3, 1, 2).float() * self.pixel_scale
        return {
            "apex_flow": apex,
            "flow": apex.unsqueeze(1),
            "label": torch.tensor(self.table["label"].to_numpy(), dtype=torch.long),
            "au": torch.zeros(len(apex), 0),
            "au_mask": torch.zeros(len(apex), dtype=torch.bool),
        }

    def make_dataset(self, rows: np.ndarray) -> Dataset:
        return TensorDictDataset(self.tensors, rows)
