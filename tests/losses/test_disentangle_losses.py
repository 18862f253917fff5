"""losses/disentangle.py on hand-made tensors: expectations by hand or with plain torch."""

from __future__ import annotations

import pytest
import torch

from losses.disentangle import consistency_loss, cross_correlation_loss


def test_cross_correlation_of_proportional_codes_is_one_and_of_uncorrelated_codes_zero():
    a = torch.tensor([[1.0], [2.0], [3.0]])
    assert cross_correlation_loss(a, 2 * a + 5).item() == pytest.approx(1.0, abs=1e-5)
    assert cross_correlation_loss(a, -a).item() == pytest.approx(1.0, abs=1e-5)
    # centred a = (-1, 0, 1), centred b = (1/3, -2/3, 1/3): dot product 0
    assert cross_correlation_loss(a, torch.tensor([[1.0], [0.0], [1.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_cross_correlation_is_the_mean_squared_pearson_correlation_of_every_pair_of_dimensions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, 3, generator=g), torch.randn(20, 4, generator=g)
    b[:, 1] += 2 * a[:, 0]  # some correlation to find
    expected = torch.corrcoef(torch.cat([a, b], dim=1).T)[:3, 3:].pow(2).mean()
    torch.testing.assert_close(cross_correlation_loss(a, b), expected, rtol=1e-4, atol=1e-6)


def test_a_constant_dimension_counts_as_uncorrelated():
    a = torch.tensor([[1.0, 4.0], [2.0, 4.0], [3.0, 4.0]])  # second column constant
    b = torch.tensor([[2.0], [4.0], [6.0]])
    # pairs: (col 0, b) correlation 1, (col 1, b) 0 -> mean 0.5
    assert cross_correlation_loss(a, b).item() == pytest.approx(0.5, abs=1e-5)


def test_consistency_by_hand():
    identity_codes = torch.tensor([[[0.0], [2.0]]])  # one clip, two frames: mean 1, deviations +-1
    onset_motion = torch.tensor([[3.0]])
    assert consistency_loss(identity_codes, onset_motion).item() == pytest.approx(1.0 + 9.0)


def test_consistency_is_zero_for_constant_identity_and_zero_onset_motion_only():
    codes = torch.tensor([[1.0, -2.0], [3.0, 0.5]]).unsqueeze(1).expand(2, 5, 2)  # constant over time
    assert consistency_loss(codes, torch.zeros(2, 3)).item() == 0.0
    moved = codes.clone()
    moved[1, 4, 0] += 1.0  # one frame of clip 1 drifts by 1: deviations 0.8 once and -0.2 four times
    expected = (0.8**2 + 4 * 0.2**2) / (2 * 5 * 2)
    assert consistency_loss(moved, torch.zeros(2, 3)).item() == pytest.approx(expected)


def test_losses_give_gradients_to_both_codes():
    a, b = torch.randn(6, 3, requires_grad=True), torch.randn(6, 2, requires_grad=True)
    cross_correlation_loss(a, b).backward()
    assert a.grad is not None and b.grad is not None and a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
