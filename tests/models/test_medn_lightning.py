"""MEDN training logic: eq. 16, the §IV-D optimiser, and every ablation row of Tables V-VII."""

from __future__ import annotations

import pytest
import torch

from lightning_modules import MEDN
from lightning_modules.backbones.resnet import BasicBlock, ResNet
from lightning_modules.backbones.vit import ViT
from losses import au_bce_loss, focal_loss, orthogonal_loss

SMALL = {"image_size": 72, "patch_size": 18, "embed_dim": 16, "num_heads": 2, "num_aus": 5, "sparse_rates": [1, 2, 4]}


def batch(b: int = 4, t: int = 8, size: int = 72, aus: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    flow = torch.randn(b, t - 1, 2, size, size, generator=g)
    return {
        "flow": flow,
        "apex_flow": flow[:, -1],
        "frames": torch.rand(b, t, 3, size, size, generator=g),
        "au": (torch.rand(b, aus, generator=g) > 0.5).float(),
        "au_mask": torch.tensor([True, True, False, True][:b]),
        "label": torch.tensor([0, 1, 2, 0][:b]),
        "index": torch.arange(b),
    }


def built_graph(module: MEDN) -> dict[str, object]:
    """What the ablation switches must change, read off the built modules."""
    model = module.model
    motion = model.motion
    if isinstance(motion, ViT):  # patch, width, depth, heads
        conv = motion.patch_embed.proj
        kind = ("ViT", conv.kernel_size[0], conv.out_channels, len(motion.blocks), motion.blocks[0].attn.num_heads)
    elif isinstance(motion, ResNet):  # 2 convs per BasicBlock + stem + fc
        kind = ("ResNet", 2 * sum(isinstance(m, BasicBlock) for m in motion.modules()) + 2)
    else:
        kind = (type(motion).__name__,)
    return {
        "motion": kind,
        "rates": [stage.rate for stage in model.sevit.stages],
        "fusion": type(model.fusion).__name__,
        "cofm_weights": any(name.startswith("model.fusion.attn_") for name, _ in module.named_parameters()),
    }


FULL = {"motion": ("LEDMotionEncoder",), "rates": [1, 2, 4], "fusion": "CoFM", "cofm_weights": True}

# Table V rows No.1-4, Table VI rates, Table VII backbones: init args -> how the graph must differ
# from the full model. "no orthogonal loss" leaves the graph alone; its loss is checked below.
ABLATIONS = {
    "full (V No.5)": ({}, {}),
    "plain ViT (V No.1)": ({"sparse_rates": [1]}, {"rates": [1]}),
    "single rate s=4 (V No.2)": ({"sparse_rates": [4]}, {"rates": [4]}),
    "weighted sum, no CoFM (V No.3)": (
        {"fusion": "weighted_sum"}, {"fusion": "WeightedSumFusion", "cofm_weights": False}
    ),
    "no orthogonal loss (V No.4)": ({"lambda_orth": 0.0}, {}),
    "rates [1,2,4] (VI)": ({"sparse_rates": [1, 2, 4]}, {}),
    "rates [1,1,2,2,4,4] (VI)": ({"sparse_rates": [1, 1, 2, 2, 4, 4]}, {"rates": [1, 1, 2, 2, 4, 4]}),
    "ResNet-18 (VII)": ({"motion_backbone": "resnet18"}, {"motion": ("ResNet", 18)}),
    "ResNet-34 (VII)": ({"motion_backbone": "resnet34"}, {"motion": ("ResNet", 34)}),
    # the real ViT-B/16 (85 M parameters, a few seconds); a tiny one trains in test_medn_equations
    "ViT-B/16 (VII)": ({"motion_backbone": "vit_b16"}, {"motion": ("ViT", 16, 768, 12, 12)}),
    # the ViT's size set through the LightningModule (as a config would)
    "small ViT (VII, our size)": (
        {"motion_backbone": "vit_b16", "vit_patch_size": 8, "vit_width": 32, "vit_depth": 2, "vit_heads": 4},
        {"motion": ("ViT", 8, 32, 2, 4)},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "differences"), ABLATIONS.values(), ids=ABLATIONS.keys())
def test_every_ablation_row_trains(overrides, differences):
    torch.manual_seed(0)
    module = MEDN(**{**SMALL, **overrides})
    assert built_graph(module) == {**FULL, **differences}
    loss = module.training_step(batch(), 0)
    assert torch.isfinite(loss)
    loss.backward()
    motion = list(module.model.motion_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in motion)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.model.sevit.parameters())


def test_lambda_orth_scales_exactly_the_orthogonal_term():
    """Table V No.4: L(λ_orth) - L(0) = λ_orth · D · mean_b <F_m_perp, F_e_perp>^2 (eq. 8 by hand)."""
    b = batch()
    losses = {}
    for lam in (0.0, 1.0, 2.5):
        torch.manual_seed(0)  # same weights for every λ; dropout off so the outputs are equal
        module = MEDN(**SMALL, dropout=0.0, lambda_orth=lam)
        losses[lam] = module.training_step(b, 0).item()
    out = module(b)
    m, e = out["f_m_perp"].detach(), out["f_e_perp"].detach()
    orth = (m.shape[1] * (m * e).sum(dim=1) ** 2).mean().item()
    assert orth > 1e-4
    assert losses[1.0] - losses[0.0] == pytest.approx(orth, rel=1e-4, abs=1e-7)
    assert losses[2.5] - losses[0.0] == pytest.approx(2.5 * orth, rel=1e-4, abs=1e-7)


def test_total_loss_is_eq_16():
    torch.manual_seed(0)
    module = MEDN(**SMALL, lambda_au=0.6, lambda_orth=1.4)
    b = batch()
    out = module(b)
    expected = (focal_loss(out["logits"], b["label"], gamma=2.0)
                + 0.6 * au_bce_loss(out["au_logits"], b["au"], b["au_mask"])
                + 1.4 * orthogonal_loss(out["f_m_perp"], out["f_e_perp"]))
    assert module.total_loss(module.loss_terms(b, out)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_au_term_ignores_samples_without_au_labels():
    torch.manual_seed(0)
    module = MEDN(**SMALL)
    b = batch()
    out = module(b)
    flipped = {**b, "au": b["au"].clone()}
    flipped["au"][2] = 1 - flipped["au"][2]  # sample 2 has au_mask False
    assert module.loss_terms(b, out)["au"] == module.loss_terms(flipped, out)["au"]


def test_no_au_term_when_the_data_has_no_aus():
    module = MEDN(**{**SMALL, "num_aus": 0})
    b = batch()
    assert "au" not in module.loss_terms(b, module(b))


def test_optimiser_is_adamw_with_motion_lr_decay_every_100_epochs():
    module = MEDN(**SMALL)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["weight_decay"] == 1e-3
    motion_ids = {id(p) for p in module.model.motion_parameters()}
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == motion_ids
    assert not motion_ids & {id(p) for p in optimizer.param_groups[1]["params"]}
    lrs = []
    for epoch in range(201):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs[99] == pytest.approx([1e-4, 1e-4])
    assert lrs[100] == pytest.approx([1e-5, 1e-4])
    assert lrs[200] == pytest.approx([1e-6, 1e-4])
