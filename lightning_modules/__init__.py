"""LightningModules of the suite: one folder per model (torch_model.py + lightning_model.py)."""

from .base import MERClassifier, WeightedLossMixin
from .lfd_tcmen import LFDTCMEN
from .medn import MEDN
from .ststnet import STSTNet
from .xie2022 import Xie2022

__all__ = ["LFDTCMEN", "MEDN", "MERClassifier", "STSTNet", "WeightedLossMixin", "Xie2022"]
