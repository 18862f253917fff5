"""Backbone networks."""

from lightning_modules.backbones.resnet import (
    IMAGENET_2D, BasicBlock, ConvSpec, ResNet, ResNetLayout, make_stage, resnet18, resnet34,
)

__all__ = ["IMAGENET_2D", "BasicBlock", "ConvSpec", "ResNet", "ResNetLayout", "make_stage", "resnet18", "resnet34"]
