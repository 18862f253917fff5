"""Loss functions."""

from losses.au import au_bce_loss
from losses.focal import FocalLoss, focal_loss
from losses.orthogonal import orthogonal_components, orthogonal_loss

__all__ = [
    "FocalLoss",
    "au_bce_loss",
    "focal_loss",
    "orthogonal_components",
    "orthogonal_loss",
]
