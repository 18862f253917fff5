"""Backbone networks."""

from lightning_modules.backbones.resnet import BasicBlock, ResNet, make_stage, resnet18, resnet34

__all__ = ["BasicBlock", "ResNet", "make_stage", "resnet18", "resnet34"]
