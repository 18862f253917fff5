"""Loss functions."""

from losses.au import au_bce_loss
from losses.disentangle import consistency_loss, cross_correlation_loss
from losses.divergence import divergence_loss
from losses.focal import FocalLoss, focal_loss
from losses.identity import identity_cross_entropy
from losses.mine import MINE, scale_gradient
from losses.orthogonal import orthogonal_components, orthogonal_loss
from losses.reduction import masked_mean

__all__ = [
    "MINE",
    "FocalLoss",
    "au_bce_loss",
    "consistency_loss",
    "cross_correlation_loss",
    "divergence_loss",
    "focal_loss",
    "identity_cross_entropy",
    "masked_mean",
    "orthogonal_components",
    "orthogonal_loss",
    "scale_gradient",
]
