"""Loss functions."""

from losses.au import au_bce_loss
from losses.divergence import divergence_loss
from losses.focal import FocalLoss, focal_loss
from losses.mine import MINE, scale_gradient
from losses.orthogonal import orthogonal_components, orthogonal_loss

__all__ = [
    "MINE",
    "FocalLoss",
    "au_bce_loss",
    "divergence_loss",
    "focal_loss",
    "orthogonal_components",
    "orthogonal_loss",
    "scale_gradient",
]
