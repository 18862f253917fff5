"""LFD-TCMEN (Qian, Huang & Qu, Entropy 2026): learnable identity/motion disentanglement + TCME."""

from .lightning_model import LFDTCMEN
from .torch_model import LFDTCMENModel

__all__ = ["LFDTCMEN", "LFDTCMENModel"]
