"""Xie et al. 2022: MENet + DAO, IDNet, MINE identity decoupling, the four-stage schedule."""

from .lightning_model import Xie2022

__all__ = ["Xie2022"]
