"""LightningModules of the suite: one folder per model (torch_model.py + lightning_model.py)."""

from .base import MERClassifier
from .medn import MEDN
from .ststnet import STSTNet

__all__ = ["MEDN", "MERClassifier", "STSTNet"]
