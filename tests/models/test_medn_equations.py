"""MEDN equations checked against hand-computed values (arXiv 2604.17899, §III)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.backbones import resnet18, resnet34
from lightning_modules.backbones.vit import ViT
from lightning_modules.medn import MEDNModel
from lightning_modules.medn.cofm import CoFM, WeightedSumFusion
from lightning_modules.medn.led import EulerianDynamics
from lightning_modules.medn.sevit import SEVit
from losses import FocalLoss, au_bce_loss, focal_loss, orthogonal_components, orthogonal_loss

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25


# ---------------------------------------------------------------- plain-math references
# Expectations below are computed from the modules' raw weight tensors with plain tensor math,
# never by calling the modules' own layers.
def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """float64, eval mode, every parameter (biases, LayerNorm affine too) drawn N(0, 0.5^2)."""
    g = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x @ weight.T + bias


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V over the last two axes."""
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def _mha(query: torch.Tensor, keys: torch.Tensor, mha: torch.nn.MultiheadAttention) -> torch.Tensor:
    """Multi-head attention (B, Lq, D) x (B, Lk, D) from in_proj / out_proj weights."""
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    heads = mha.num_heads

    def split(x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, heads, L, D/heads)
        return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    q, k, v = split(_linear(query, w_q, b_q)), split(_linear(keys, w_k, b_k)), split(_linear(keys, w_v, b_v))
    merged = _attention(q, k, v).transpose(1, 2).flatten(2)
    return _linear(merged, mha.out_proj.weight, mha.out_proj.bias)


def _block(x: torch.Tensor, block: torch.nn.Module) -> torch.Tensor:
    """Pre-norm transformer block: x + MHSA(LN1 x); x + W2 GELU(W1 LN2 x)."""
    h = _layer_norm(x, block.norm1)
    x = x + _mha(h, h, block.attn)
    fc1, fc2 = block.mlp[0], block.mlp[3]
    return x + _linear(_gelu(_linear(_layer_norm(x, block.norm2), fc1.weight, fc1.bias)), fc2.weight, fc2.bias)


def _patches(images: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """Non-overlapping patch projection (N, C, H, W) -> (N, H/p, W/p, D) as one matmul."""
    n, c, height, width = images.shape
    p = conv.kernel_size[0]
    x = images.view(n, c, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5).flatten(3)
    return _linear(x, conv.weight.flatten(1), conv.bias)


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
    unlabelled_nan = torch.stack([targets[0], torch.full((3,), float("nan"))])  # an excluded sample's labels are unread
    assert au_bce_loss(logits, unlabelled_nan, torch.tensor([True, False])).item() == pytest.approx(2.367124, abs=1e-5)
    per_model = torch.vmap(au_bce_loss, in_dims=(0, None, None))(torch.stack([logits, -logits]), targets,
                                                                  torch.tensor([True, False]))
    assert per_model[0].item() == pytest.approx(2.367124, abs=1e-5)  # masked mean under vmap (no boolean indexing)


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


def _sevit_rate_feature(model: SEVit, flow: torch.Tensor, stage: int, rate: int) -> torch.Tensor:
    """F_k of eqs. 2-3 by hand: token grid, then for each of the rate^2 regions (sliced out
    explicitly, all time steps) the stage's blocks; final LayerNorm, mean over all tokens."""
    b, t = flow.shape[:2]
    grid = _patches(flow.flatten(0, 1), model.patch_embed.proj).unflatten(0, (b, t))
    grid = grid + model.spatial_pos + model.temporal_pos  # (B, T, h, w, D)
    side = grid.shape[2] // rate
    outputs = []
    for i in range(rate):
        for j in range(rate):
            x = grid[:, :, i * side : (i + 1) * side, j * side : (j + 1) * side].reshape(b, -1, grid.shape[-1])
            for block in model.stages[stage].blocks:
                x = _block(x, block)
            outputs.append(_layer_norm(x, model.stages[stage].norm))
    return torch.cat(outputs, dim=1).mean(dim=1)


def test_eq4_gamma_weighted_sum_of_rate_features():
    assert torch.allclose(_tiny_sevit((1, 2)).gamma, torch.tensor([0.5, 0.5]))  # 1/K at init
    model = _randomise(_tiny_sevit((2, 1)))
    flow = torch.randn(2, 3, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        model.gamma.copy_(torch.tensor([0.3, 0.7]))
        expected = 0.3 * _sevit_rate_feature(model, flow, 0, 2) + 0.7 * _sevit_rate_feature(model, flow, 1, 1)
        assert torch.allclose(model(flow), expected, atol=1e-10)


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


def test_eqs9to14_cofm_against_plain_math():
    cofm = _randomise(CoFM(dim=8, num_heads=2))
    g = torch.Generator().manual_seed(1)
    f_m, f_e = (torch.randn(5, 8, generator=g, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        out = cofm(f_m, f_e)
    # eqs. 9-11: tokens [F_m_perp, F_e_perp], one shared Q/K/V projection, single-head attention
    q, k, v = _linear(torch.stack([f_m, f_e], dim=1), cofm.qkv.weight, cofm.qkv.bias).chunk(3, dim=-1)
    col = _attention(q, k, v)
    # F'_m: query from F_m_perp, keys/values from both collaborative tokens (own weights per branch)
    f_m_new = _mha(f_m[:, None], col, cofm.attn_m)[:, 0]
    f_e_new = _mha(f_e[:, None], col, cofm.attn_e)[:, 0]
    assert torch.allclose(out.f_m, f_m_new, atol=1e-10)
    assert torch.allclose(out.f_e, f_e_new, atol=1e-10)
    assert not torch.allclose(f_m_new, _mha(f_e[:, None], col, cofm.attn_m)[:, 0], atol=1e-3)

    def gate(x: torch.Tensor, layers: torch.nn.Sequential) -> torch.Tensor:  # eqs. 12-13
        hidden = _gelu(_linear(x, layers[0].weight, layers[0].bias))
        return torch.sigmoid(_linear(hidden, layers[2].weight, layers[2].bias))

    s_m, s_e = gate(f_m_new, cofm.gate_m), gate(f_e_new, cofm.gate_e)
    w_m, w_e = s_m / (s_m + s_e), s_e / (s_m + s_e)  # normalised so w_m + w_e = 1
    assert out.w_m.shape == (5, 1) and out.w_m.std() > 0  # one weight per sample
    assert torch.allclose(out.w_m, w_m, atol=1e-10) and torch.allclose(out.w_e, w_e, atol=1e-10)
    assert torch.allclose(out.fused, w_m * f_m_new + w_e * f_e_new, atol=1e-10)  # eq. 14


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


def _vit_reference(vit: ViT, images: torch.Tensor) -> torch.Tensor:
    """[CLS] + patch tokens + position embeddings, blocks, LayerNorm on [CLS], Linear."""
    tokens = _patches(images, vit.patch_embed.proj).flatten(1, 2)
    tokens = torch.cat([vit.cls_token.expand(len(images), -1, -1), tokens], dim=1) + vit.pos_embed
    for block in vit.blocks:
        tokens = _block(tokens, block)
    return _linear(_layer_norm(tokens[:, 0], vit.norm), vit.head.weight, vit.head.bias)


def test_vit_against_plain_math_and_resizes_other_input_sizes():
    vit = _randomise(ViT(in_channels=2, num_features=5, image_size=16, patch_size=8, width=8, depth=2, num_heads=2))
    assert len(vit.blocks) == 2 and vit.blocks[0].attn.num_heads == 2
    images = torch.randn(3, 2, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(vit(images), _vit_reference(vit, images), atol=1e-10)
        small = torch.randn(3, 2, 12, 12, dtype=torch.float64)  # our choice: bilinear resize to 16
        resized = F.interpolate(small, size=(16, 16), mode="bilinear")
        assert torch.allclose(vit(small), _vit_reference(vit, resized), atol=1e-10)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViT(image_size=20, patch_size=16)


def test_vit_b16_input_side_is_image_size_rounded_up_to_the_patch():
    model = MEDNModel(
        3, 0, "vit_b16", image_size=72, patch_size=18, embed_dim=8, num_heads=2, sparse_rates=(1,),
        vit_patch_size=16, vit_width=8, vit_depth=1, vit_heads=2,
    )  # fmt: skip
    assert model.motion.pos_embed.shape == (1, 1 + 5 * 5, 8)  # 72 px -> 80 px = 5 x 5 patches
    assert model(torch.randn(2, 7, 2, 72, 72), apex_flow=torch.randn(2, 2, 72, 72))["f_m"].shape == (2, 8)


TINY_VIT = {"vit_patch_size": 8, "vit_width": 16, "vit_depth": 2, "vit_heads": 2}


def _tiny_medn(backbone: str, **overrides: object) -> MEDNModel:
    kwargs = dict(image_size=32, patch_size=8, embed_dim=16, num_heads=2, sparse_rates=(1, 2, 4), **TINY_VIT)
    return MEDNModel(num_classes=3, num_aus=5, motion_backbone=backbone, **{**kwargs, **overrides})


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["led", "resnet18", "resnet34", "vit_b16"])
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


def test_tiny_vit_motion_backbone_trains_one_step():
    torch.manual_seed(0)
    model = _tiny_medn("vit_b16")
    vit = model.motion
    assert isinstance(vit, ViT) and len(vit.blocks) == 2 and vit.cls_token.shape[-1] == 16
    assert vit.patch_embed.proj.kernel_size == (8, 8) and vit.blocks[0].attn.num_heads == 2
    before = {name: p.detach().clone() for name, p in vit.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    apex = torch.randn(4, 2, 32, 32)
    out = model(torch.randn(4, 7, 2, 32, 32), apex_flow=apex)
    loss = focal_loss(out["logits"], torch.tensor([0, 1, 2, 0])) + au_bce_loss(out["au_logits"], torch.ones(4, 5))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(before[name], p) for name, p in vit.named_parameters())
    with torch.no_grad():
        assert not torch.allclose(model(torch.zeros(1, 7, 2, 32, 32), apex_flow=apex[:1])["f_m"], out["f_m"][:1])


@pytest.mark.parametrize(
    ("backbone", "missing"), [("led", "frames"), ("resnet18", "apex_flow"), ("vit_b16", "apex_flow")]
)
def test_missing_motion_input_raises(backbone: str, missing: str):
    with pytest.raises(ValueError, match=missing):
        _tiny_medn(backbone)(torch.randn(2, 7, 2, 32, 32))


@pytest.mark.parametrize(
    ("switch", "rates", "fusion"),
    [
        ({"sparse_rates": (1,)}, [1], CoFM),
        ({"sparse_rates": (4,)}, [4], CoFM),
        ({"fusion": "weighted_sum"}, [1, 2, 4], WeightedSumFusion),
    ],
    ids=["plain ViT (V No.1)", "single rate (V No.2)", "weighted sum (V No.3)"],
)
def test_ablation_switches_change_the_graph(switch: dict, rates: list[int], fusion: type):
    torch.manual_seed(0)
    model = _tiny_medn("vit_b16", **switch).eval()
    assert [stage.rate for stage in model.sevit.stages] == rates
    assert type(model.fusion) is fusion
    has_cofm_weights = any(name.startswith("fusion.attn_") for name, _ in model.named_parameters())
    assert has_cofm_weights == (fusion is CoFM)
    with torch.no_grad():
        if fusion is WeightedSumFusion:
            model.fusion.logits.copy_(torch.tensor([0.3, -0.9]))  # unequal branch weights
        out = model(torch.randn(2, 7, 2, 32, 32), apex_flow=torch.randn(2, 2, 32, 32))
    assert out["logits"].shape == (2, 3) and out["au_logits"].shape == (2, 5)
    if fusion is WeightedSumFusion:  # logits = W (a F_m_perp + (1 - a) F_e_perp) + b, a = softmax(l)_0
        a = torch.softmax(model.fusion.logits, 0)[0]
        fused = a * out["f_m_perp"] + (1 - a) * out["f_e_perp"]
        head = model.classifier[1]
        assert torch.allclose(out["logits"], _linear(fused, head.weight, head.bias), atol=1e-6)
