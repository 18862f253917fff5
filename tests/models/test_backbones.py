"""The suite's ResNet backbone: its norm layers (batch statistics or per-sample normalisation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_modules.backbones.resnet import IMAGENET_2D, ConvSpec, ResNet, ResNetLayout, norm_layer


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def test_layer_norm_normalises_each_sample_over_its_channels_and_positions():
    x = torch.randn(3, 6, 5, 5, generator=torch.Generator().manual_seed(0)) * 3 + 1
    centred = x - x.mean(dim=(1, 2, 3), keepdim=True)
    expected = centred / torch.sqrt(centred.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-5)
    torch.testing.assert_close(norm_layer("layer", 6, 2)(x), expected)


@pytest.mark.parametrize("dims", [2, 3])
def test_a_layer_norm_resnet_treats_each_sample_alone_and_the_same_in_training_and_evaluation(dims: int):
    layout = IMAGENET_2D if dims == 2 else ResNetLayout(3, ConvSpec(3, 1, 1), ConvSpec(1), (ConvSpec(3, 1, 1),) * 4)
    torch.manual_seed(0)
    net = ResNet((1, 1, 1, 1), 3, 5, layout=layout, base_width=4, norm="layer")
    x = torch.randn(4, 3, *(16,) * dims)
    net.train()
    together = net(x)
    torch.testing.assert_close(together[:1], net(x[:1]))
    net.eval()
    torch.testing.assert_close(net(x), together)
    assert not has_batch_norm(net)


def test_batch_norm_is_the_default_and_its_training_output_depends_on_the_batch():
    torch.manual_seed(0)
    net = ResNet((1, 1, 1, 1), 3, 5, base_width=4).train()
    x = torch.randn(4, 3, 32, 32)
    assert has_batch_norm(net)
    assert not torch.allclose(net(x)[:2], net(x[:2]))


def test_an_unknown_norm_is_refused():
    with pytest.raises(ValueError, match="unknown norm 'instance'"):
        ResNet((1, 1, 1, 1), 3, 5, norm="instance")
