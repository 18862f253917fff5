"""MEDN equations checked against hand-computed values (arXiv 2604.17899, §III)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.backbones import resnet18, resnet34
from lightning_modules.medn import MEDNModel
from lightning_modules.medn.cofm import CoFM, WeightedSumFusion
from lightning_modules.medn.led import EulerianDynamics
from lightning_modules.medn.sevit import SEVit
from losses import FocalLoss, au_bce_loss, focal_loss, orthogonal_components, orthogonal_loss

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25


# ---------------------------------------------------------------- eq. 1: AU loss
def test_eq1_au_loss_sums_over_aus_and_averages_over_samples():
    logits = torch.tensor([[0.0, LN3, LN3], [LN3, 0.0, -LN3]], requires_grad=True)
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # sample 0: ln2 + (-ln .75) + (-ln .25) = 0.693147 + 0.287682 + 1.386294 = 2.367124
    # sample 1: (-ln .25) + ln2 + (-ln .25) = 1.386294 + 0.693147 + 1.386294 = 3.465736
    assert au_bce_loss(logits, targets).item() == pytest.approx(2.916429, abs=1e-5)
    assert au_bce_loss(logits, targets, torch.tensor([True, False])).item() == pytest.approx(
        2.367124, abs=1e-5
    )
    none = au_bce_loss(logits, targets, torch.tensor([False, False]))
    assert none.item() == 0.0 and none.requires_grad and none.dtype == logits.dtype
    none.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# ---------------------------------------------------------------- eq. 2-4: SEVit
def _tiny_sevit(rates: tuple[int, ...]) -> SEVit:
    torch.manual_seed(0)
    model = SEVit(
        in_channels=2, image_size=8, num_frames=3, patch_size=2, embed_dim=8, num_heads=2,
        sparse_rates=rates, dropout=0.0,
    )  # fmt: skip
    return model.eval()


def _token_change(rate: int) -> torch.Tensor:
    """|change| per output token (B, T, h, w) when pixels of region (0, 0) at t=1 change."""
    model = _tiny_sevit((rate,))
    flow = torch.randn(2, 3, 2, 8, 8)
    bumped = flow.clone()
    bumped[:, 1, :, :4, :4] += 1.0  # top-left quarter = tokens [0:2, 0:2] of the 4x4 grid
    with torch.no_grad():
        out = [model.stages[0].tokens(model.embed(x)) for x in (flow, bumped)]
    return (out[1] - out[0]).abs().amax(dim=-1)


def test_eq2_sparse_rate_2_keeps_regions_independent():
    change = _token_change(2)
    inside = change[:, :, :2, :2]
    assert (inside > 1e-4).all()  # every token of the region, at every time step, reacts
    outside = change.clone()
    outside[:, :, :2, :2] = 0
    assert outside.max().item() < 1e-6


def test_eq2_rate_1_is_global_attention():
    change = _token_change(1)
    assert (change > 1e-4).all()


def test_eq2_invalid_rates_and_patch_sizes_raise():
    with pytest.raises(ValueError, match="divisible"):
        SEVit(image_size=144, patch_size=18, sparse_rates=(3,))
    with pytest.raises(ValueError, match="patch_size"):
        SEVit(image_size=144, patch_size=17, sparse_rates=(1,))


def test_eq4_gamma_weighted_sum_of_rate_features():
    model = _tiny_sevit((1, 2))
    assert torch.allclose(model.gamma, torch.tensor([0.5, 0.5]))
    with torch.no_grad():
        model.gamma.copy_(torch.tensor([0.3, 0.7]))
        flow = torch.randn(2, 3, 2, 8, 8)
        grid = model.embed(flow)
        f1, f2 = model.stages[0](grid), model.stages[1](grid)
        assert torch.allclose(model(flow), 0.3 * f1 + 0.7 * f2, atol=1e-6)


# ---------------------------------------------------------------- eqs. 5-8: orthogonal loss
def test_eqs5to8_hand_example():
    f_m = torch.tensor([[3.0, 4.0], [2.0, 0.0]])
    f_e = torch.tensor([[4.0, 3.0], [0.0, 5.0]])
    m_perp, e_perp = orthogonal_components(f_m, f_e)
    # row 0: f_m_hat = [.6, .8], f_e_hat = [.8, .6], alpha = .96
    #   f_m_perp = [.6 - .768, .8 - .576] = [-.168, .224], f_e_perp = [.224, -.168]
    # row 1: orthogonal already (alpha = 0): unit vectors unchanged
    assert torch.allclose(m_perp, torch.tensor([[-0.168, 0.224], [1.0, 0.0]]), atol=1e-5)
    assert torch.allclose(e_perp, torch.tensor([[0.224, -0.168], [0.0, 1.0]]), atol=1e-5)
    # <m_perp, e_perp> = -2 * .168 * .224 = -0.075264; D * 0.075264^2 = 0.0113293; row 1: 0
    assert orthogonal_loss(m_perp, e_perp).item() == pytest.approx(0.0113293 / 2, abs=1e-6)


def test_eq5_eps_in_denominator():
    f = torch.tensor([[1e-7, 0.0, 0.0]])
    m_perp, _ = orthogonal_components(f, f, eps=1e-6)
    # ||f|| = 1e-7 -> f_hat = [1e-7 / 1.1e-6, 0, 0] = [0.090909, 0, 0]; alpha = 0.0082645
    assert m_perp[0, 0].item() == pytest.approx(0.090909 - 0.0082645 * 0.090909, rel=1e-4)


# ---------------------------------------------------------------- eqs. 9-14: CoFM
def test_eq11_collaborative_attention_hand_example():
    cofm = CoFM(dim=2, num_heads=1)
    with torch.no_grad():  # Q = K = V = token
        cofm.qkv.weight.copy_(torch.cat([torch.eye(2)] * 3))
        cofm.qkv.bias.zero_()
    col = cofm.collaborate(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    # scores = I / sqrt(2); softmax row 0 = [e^.70711, 1] / (e^.70711 + 1) = [.669761, .330239]
    expected = torch.tensor([[[0.669761, 0.330239], [0.330239, 0.669761]]])
    assert torch.allclose(col, expected, atol=1e-5)


def test_eq14_weights_normalised_and_fusion_recomputed():
    torch.manual_seed(0)
    cofm = CoFM(dim=8, num_heads=2)
    out = cofm(torch.randn(5, 8), torch.randn(5, 8))
    assert out.w_m.shape == (5, 1)
    assert torch.allclose(out.w_m + out.w_e, torch.ones(5, 1), atol=1e-6)
    assert ((out.w_m > 0) & (out.w_m < 1)).all() and out.w_m.std() > 0  # per sample
    s_m, s_e = torch.sigmoid(cofm.gate_m(out.f_m)), torch.sigmoid(cofm.gate_e(out.f_e))
    assert torch.allclose(out.w_m, s_m / (s_m + s_e), atol=1e-6)
    assert torch.allclose(out.fused, out.w_m * out.f_m + out.w_e * out.f_e, atol=1e-6)


def test_weighted_sum_fusion():
    fusion = WeightedSumFusion()
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([0.0, LN3]))  # softmax -> [.25, .75]
    out = fusion(torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 4.0]]))
    assert torch.allclose(out.fused, torch.tensor([[1.0, 3.0]]))


# ---------------------------------------------------------------- eq. 15: focal loss
def test_eq15_focal_gamma0_is_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(7, 4), torch.randint(0, 4, (7,))
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))


def test_eq15_focal_hand_example():
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])  # p = [.25, .75]
    target = torch.tensor([1, 0])
    # p_t = .75: -(.25^2) ln .75 = 0.0179801 ; p_t = .25: -(.75^2) ln .25 = 0.7797906
    assert focal_loss(logits, target).item() == pytest.approx(0.3988854, abs=1e-6)
    weighted = FocalLoss(gamma=2.0, alpha=[2.0, 1.0])(logits, target)
    assert weighted.item() == pytest.approx((0.0179801 + 2 * 0.7797906) / 2, abs=1e-6)


# ---------------------------------------------------------------- LED
def test_led_matrix_t3_hand_values():
    w = EulerianDynamics().matrix(3)
    # alpha=10, r1=.4, r2=.05: diag 10(.4-.05) = 3.5
    # W01 = 10*.6 - 10*.95 = -3.5 ; W02 = 10*.36 - 10*.9025 = -5.425
    # W12 = 10*.6*.4 - 10*.95*.05 = 2.4 - .475 = 1.925
    expected = torch.tensor([[3.5, -3.5, -5.425], [0.0, 3.5, 1.925], [0.0, 0.0, 3.5]])
    assert torch.allclose(w, expected, atol=1e-5)
    # T=4 adds rows with i >= 2, where r^min(1, i) = r: W23 = W12, W03 = 10*.216 - 10*.857375
    w4 = EulerianDynamics().matrix(4)
    assert w4[2, 3].item() == pytest.approx(1.925, abs=1e-5)
    assert w4[0, 3].item() == pytest.approx(-6.41375, abs=1e-5)


def test_led_contraction_hand_values():
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1, 1)
    out = EulerianDynamics()(x).flatten()
    # t=1: (-3.5*1 + 3.5*2) / (3.5*1 + 3.5*2 + 1) = 3.5 / 11.5
    # t=2: (-5.425 + 1.925*2 + 3.5*3) / (5.425 + 3.85 + 10.5 + 1) = 8.925 / 20.775
    assert torch.allclose(out, torch.tensor([1.0, 3.5 / 11.5, 8.925 / 20.775]), atol=1e-6)


# ---------------------------------------------------------------- backbones, full model
@pytest.mark.parametrize("size", [28, 144])
def test_resnet_shapes(size: int):
    for build in (resnet18, resnet34):
        assert build(in_channels=2, num_features=16)(torch.randn(2, 2, size, size)).shape == (2, 16)


def _tiny_medn(backbone: str) -> MEDNModel:
    return MEDNModel(
        num_classes=3, num_aus=5, motion_backbone=backbone, image_size=32, patch_size=8,
        embed_dim=16, num_heads=2, sparse_rates=(1, 2, 4),
    )  # fmt: skip


@pytest.mark.parametrize("backbone", ["led", "resnet18", "resnet34"])
def test_gradients_reach_both_branches(backbone: str):
    torch.manual_seed(0)
    model = _tiny_medn(backbone)
    flow, apex = torch.randn(4, 7, 2, 32, 32), torch.randn(4, 2, 32, 32)
    out = model(flow, frames=torch.rand(4, 8, 3, 32, 32), apex_flow=apex)
    au = au_bce_loss(out["au_logits"], torch.randint(0, 2, (4, 5)).float())
    motion_grads = torch.autograd.grad(au, list(model.motion.parameters()), retain_graph=True)
    assert all(g.abs().sum() > 0 for g in motion_grads)  # eq. 1 supervises the motion branch
    loss = focal_loss(out["logits"], torch.tensor([0, 1, 2, 0])) + au
    (loss + orthogonal_loss(out["f_m_perp"], out["f_e_perp"])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    motion = {id(p) for p in model.motion_parameters()}
    other = {id(p) for p in model.other_parameters()}
    assert not motion & other and len(motion | other) == len(list(model.parameters()))
    assert {id(p) for p in model.motion.parameters()} < motion
    assert {id(p) for p in model.sevit.parameters()} < other


@pytest.mark.parametrize(("backbone", "missing"), [("led", "frames"), ("resnet18", "apex_flow")])
def test_missing_motion_input_raises(backbone: str, missing: str):
    with pytest.raises(ValueError, match=missing):
        _tiny_medn(backbone)(torch.randn(2, 7, 2, 32, 32))


def test_ablation_configurations_build_and_run():
    base = dict(motion_backbone="resnet18", image_size=32, patch_size=8, embed_dim=16, num_heads=2)
    for kwargs in ({"sparse_rates": (1,)}, {"sparse_rates": (4,)}, {"fusion": "weighted_sum"}):
        model = MEDNModel(3, 5, **{"sparse_rates": (1, 2, 4), **base, **kwargs}).eval()
        out = model(torch.randn(2, 7, 2, 32, 32), apex_flow=torch.randn(2, 2, 32, 32))
        assert out["logits"].shape == (2, 3) and out["au_logits"].shape == (2, 5)
