"""MINE (Belghazi et al. 2018; Xie et al. 2022 eq. 3, Table 3) and the DAO divergence loss (eqs. 2, 6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losses import MINE, divergence_loss, scale_gradient


def gaussian_pairs(n: int, d: int, rho: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x ~ N(0, I_d), z = rho x + sqrt(1 - rho^2) e: per-dimension correlation rho."""
    x = torch.randn(n, d, generator=g)
    return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(n, d, generator=g)


@pytest.fixture(autouse=True)
def one_thread():
    """The nets are tiny: one thread is as fast and does not stall when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trained_estimate(d: int, rho: float, steps: int = 2000, batch: int = 256, seed: int = 0) -> float:
    """Maximise the DV bound with plain Adam, then evaluate it on 20k fresh pairs."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    mine = MINE(d, d)  # Table 3 sizes: hidden 64
    optimizer = torch.optim.Adam(mine.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = -mine(*gaussian_pairs(batch, d, rho, g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    mine.eval()
    with torch.no_grad():
        return mine(*gaussian_pairs(20_000, d, rho, g)).item()


@pytest.mark.slow
@pytest.mark.parametrize(("d", "rho"), [(20, 0.3), (5, 0.75)])
def test_mine_reaches_the_analytic_mutual_information(d: int, rho: float):
    true_mi = -d / 2 * math.log(1 - rho**2)  # about 0.94 and 2.07 nats
    estimate = trained_estimate(d, rho)
    assert abs(estimate - true_mi) <= 0.2 * true_mi, (estimate, true_mi)


@pytest.mark.slow
def test_mine_stays_near_zero_for_independent_variables():
    assert abs(trained_estimate(20, 0.0)) < 0.1


def _statistics_by_hand(mine: MINE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Table 3 written out with the module's weights: FC, LeakyReLU, FC, LeakyReLU."""
    (w1, b1), (w2, b2) = [(layer.weight, layer.bias) for layer in mine.statistics if isinstance(layer, torch.nn.Linear)]
    hidden = F.leaky_relu(torch.cat([x, z], dim=1) @ w1.T + b1, 0.01)
    return F.leaky_relu(hidden @ w2.T + b2, 0.01).squeeze(1)


def test_value_is_the_dv_bound_and_the_gradient_is_bias_corrected():
    torch.manual_seed(0)
    mine = MINE(3, 2, hidden=8)
    x, z = torch.randn(16, 3), torch.randn(16, 2)
    mine(x, z)  # first training batch initialises the moving average
    ema = mine.log_ema.exp().item()

    torch.manual_seed(1)
    value = mine(x, z)
    torch.manual_seed(1)
    permutation = torch.randperm(16)
    joint = _statistics_by_hand(mine, x, z).mean()
    mean_exp = _statistics_by_hand(mine, x, z[permutation]).exp().mean()
    assert value.item() == pytest.approx((joint - mean_exp.log()).item(), abs=1e-5)

    expected_ema = 0.99 * ema + 0.01 * mean_exp.item()
    assert mine.log_ema.exp().item() == pytest.approx(expected_ema, rel=1e-5)
    grads = torch.autograd.grad(value, list(mine.parameters()), retain_graph=True)
    expected = torch.autograd.grad(joint - mean_exp / expected_ema, list(mine.parameters()), retain_graph=True)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    plain = torch.autograd.grad(joint - mean_exp.log(), list(mine.parameters()))
    assert any(not torch.allclose(got, p, atol=1e-6) for got, p in zip(grads, plain))


def test_moving_average_is_a_checkpointed_buffer_untouched_in_eval():
    mine = MINE(2, 2)
    assert "log_ema" in mine.state_dict() and math.isnan(mine.log_ema.item())
    mine(torch.randn(8, 2), torch.randn(8, 2))
    trained = mine.log_ema.clone()
    assert torch.isfinite(trained)
    mine.eval()
    mine(torch.randn(8, 2), torch.randn(8, 2))
    assert torch.equal(mine.log_ema, trained)
    restored = MINE(2, 2)
    restored.load_state_dict(mine.state_dict())
    assert torch.equal(restored.log_ema, trained)


def test_scale_gradient_reverses_only_the_gradient():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = scale_gradient(x, -0.1)
    assert torch.equal(y, x.detach())
    (3 * y).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.3, -0.3]))


# ---------------------------------------------------------------- divergence loss, eqs. 2 and 6
def test_divergence_loss_matches_a_hand_computation():
    maps = torch.tensor(
        [
            [[0.5, 0.5, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]],
            [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]],
        ]
    ).view(2, 3, 2, 2)
    # sample 0: sims s10 = .25, s20 = .25, s21 = .25
    #   -(1/2) * [ (1 - .25) + ((1 - .25) + (1 - .25)) / 2 ] = -0.75
    # sample 1: s10 = 1, s20 = 0, s21 = 0
    #   -(1/2) * [ 0 + (1 + 1) / 2 ] = -0.5
    assert divergence_loss(maps).item() == pytest.approx((-0.75 - 0.5) / 2)


def test_divergence_loss_loops_over_the_sums_of_eq_6():
    maps = torch.softmax(torch.randn(3, 5, 4, 4, generator=torch.Generator().manual_seed(0)).flatten(2), -1)
    expected = []
    for sample in maps.tolist():
        outer = 0.0
        for k in range(2, 6):  # k = 2..T, maps indexed from 1 as in the paper
            inner = sum(1 - sum(a * b for a, b in zip(sample[k - 1], sample[l - 1])) for l in range(1, k))
            outer += inner / (k - 1)
        expected.append(-outer / 4)
    assert divergence_loss(maps).item() == pytest.approx(sum(expected) / 3, rel=1e-5)
