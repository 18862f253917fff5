"""LFD-TCMEN: the swap/cycle path, reconstruction shapes, each of the six loss terms against plain
torch on hand-made tensors, gradients to every part, the loss switches, the no-DRL baseline, and a
tiny fit on the synthetic datamodule."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from datamodules import SyntheticDataModule
from datamodules.errors import MERError
from lightning_modules import LFDTCMEN
from lightning_modules.lfd_tcmen.torch_model import different_subject_partners
from tests.conftest import TINY_SYNTHETIC

TINY = {"num_classes": 3, "num_identities": 3, "num_frames": 4, "drl_size": 16, "code_dim": 6, "encoder_blocks": [1, 1, 1, 1],
        "base_width": 4, "decoder_width": 4, "fusion_dim": 8, "temporal_depth": 1, "num_heads": 2, "lr": 1e-3}
B, T, D = 4, 4, 6


def batch(size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "frames": torch.rand(B, T, 3, size, size, generator=g),
        "flow": torch.randn(B, T - 1, 2, size, size, generator=g),
        "label": torch.tensor([0, 1, 2, 0]),
        "identity": torch.tensor([0, 0, 1, 2]),
        "index": torch.arange(B),
    }


def code_outputs() -> dict[str, torch.Tensor]:
    """Hand-made DRL outputs; 'clip' holds (1, 1, 2D) 'images' for the code-carrying stub below."""
    g = torch.Generator().manual_seed(1)
    return {"identity_codes": torch.randn(B, T, D, generator=g), "motion_codes": torch.randn(B, T, D, generator=g),
            "clip": torch.randn(B, T, 1, 1, 2 * D, generator=g), "logits": torch.randn(B, 3, generator=g)}


@pytest.fixture
def stub_codec(monkeypatch: pytest.MonkeyPatch) -> LFDTCMEN:
    """A module whose decoder writes (identity code, motion code) into a (1, 1, 2D) image and whose
    encoders read them back: the routing of codes is visible, no learned layer is involved."""
    module = LFDTCMEN(**TINY)
    model = module.model
    monkeypatch.setattr(model, "decode", lambda i, m: torch.cat([i, m], dim=-1).unsqueeze(-2).unsqueeze(-2))
    monkeypatch.setattr(model, "encode_identity", lambda images: images[..., 0, 0, :D])
    monkeypatch.setattr(model, "encode_motion", lambda images, onset: images[..., 0, 0, D:])
    return module


# ---------------------------------------------------------------- pairing and the swap/cycle path
def test_partners_are_always_of_another_subject_and_unknown_subjects_get_none():
    identity = torch.tensor([0, 0, 0, 1, 2, -1, 2])
    for seed in range(20):
        torch.manual_seed(seed)
        partner, valid = different_subject_partners(identity)
        assert valid.tolist() == [True] * 5 + [False, True]
        assert (identity[partner][valid] != identity[valid]).all() and (identity[partner][valid] >= 0).all()
        assert partner[5] == 5
    torch.manual_seed(0)
    partner, valid = different_subject_partners(torch.tensor([3, 3, 3]))
    assert not valid.any() and partner.tolist() == [0, 1, 2]
    assert not different_subject_partners(torch.tensor([1]))[1].any()


def test_swap_rebuilds_own_identity_with_the_partners_motion(stub_codec: LFDTCMEN):
    out = code_outputs()
    torch.manual_seed(0)
    cycle = stub_codec.swap(torch.tensor([0, 0, 1, 2]), out)
    ids, motion, partner = out["identity_codes"], out["motion_codes"], cycle["partner"]
    assert cycle["swapped"].shape == (B, 1, 1, 2 * D) and cycle["valid"].all()
    steps = set()
    for i in range(B):
        assert [0, 0, 1, 2][partner[i]] != [0, 0, 1, 2][i] and 1 <= cycle["step"][i] < T
        torch.testing.assert_close(cycle["re_identity"][i], ids[i, 0])
        torch.testing.assert_close(cycle["re_motion"][i], motion[partner[i], cycle["step"][i]])
    for seed in range(10):
        torch.manual_seed(seed)
        steps |= set(stub_codec.swap(torch.tensor([0, 0, 1, 2]), out)["step"].tolist())
    assert steps == set(range(1, T))  # every motion step is drawn, never the onset
    torch.manual_seed(0)
    assert stub_codec.cycle_loss(torch.tensor([0, 0, 1, 2]), out).item() == pytest.approx(0.0, abs=1e-7)  # perfect codec


def test_cycle_loss_formula_on_hand_made_re_encodings(stub_codec: LFDTCMEN, monkeypatch: pytest.MonkeyPatch):
    model = stub_codec.model
    monkeypatch.setattr(model, "encode_identity", lambda images: images[..., 0, 0, :D] + 0.5)  # error 0.25 per element
    monkeypatch.setattr(model, "encode_motion", lambda images, onset: 2 * images[..., 0, 0, D:])  # error = motion
    out, identity = code_outputs(), torch.tensor([0, 0, -1, 1])
    torch.manual_seed(3)
    partner, valid = different_subject_partners(identity)
    step = torch.randint(1, T, (B,))  # the draw swap() makes next
    expected, count = 0.0, 0
    for i in range(B):
        if valid[i]:
            count += 1
            expected += 0.25 + out["motion_codes"][partner[i], step[i]].pow(2).mean().item()
    torch.manual_seed(3)
    assert stub_codec.cycle_loss(identity, out).item() == pytest.approx(expected / count, rel=1e-5)
    assert count == 3  # the -1 item (an evaluation item) has no partner and adds nothing


def test_reconstruction_and_swap_shapes_with_the_real_networks():
    module = LFDTCMEN(**TINY)
    data = batch()
    out = module(data)
    assert out["clip"].shape == (B, T, 3, 16, 16) and out["identity_codes"].shape == (B, T, D)
    assert out["motion_codes"].shape == (B, T, D) and out["gate"].shape == (B, T - 1, 8)
    rebuilt = module.rebuild(out["identity_codes"], out["motion_codes"])
    assert rebuilt.shape == out["clip"].shape and 0 <= rebuilt.min() and rebuilt.max() <= 1
    cycle = module.swap(data["identity"], out)
    assert cycle["swapped"].shape == (B, 3, 16, 16) and cycle["re_motion"].shape == (B, D)
    module.eval()  # no dropout: the probe's forward pass and this one must agree
    out, probe = module(data), module.probe_features(data)
    torch.testing.assert_close(probe["identity_code"], out["identity_codes"].mean(dim=1))
    torch.testing.assert_close(probe["motion_code"], out["motion_codes"][:, 1:].mean(dim=1))
    torch.testing.assert_close(probe["clip_feature"], out["features"])
    gate, flow_steps = out["gate"], module.model.flow_encoder(data["flow"].flatten(0, 1)).view(B, T - 1, -1)
    fused = gate * module.model.fusion.motion_proj(out["motion_codes"][:, 1:]) + (1 - gate) * flow_steps
    torch.testing.assert_close(probe["temporal_input"], fused.mean(dim=1))


@pytest.mark.parametrize("motion_input", ["difference", "pair"])
def test_the_motion_encoder_reads_the_frame_relative_to_the_onset(motion_input: str, monkeypatch: pytest.MonkeyPatch):
    module = LFDTCMEN(**TINY, motion_input=motion_input)
    seen: list[torch.Tensor] = []
    monkeypatch.setattr(module.model.motion_encoder, "forward", lambda x: seen.append(x) or torch.zeros(len(x), D))
    clip = module.model.prepare_frames(batch()["frames"])
    module.model.disentangle(batch()["frames"])
    relative = seen[0].view(B, T, -1, 16, 16)
    if motion_input == "difference":
        z = (clip - clip.mean(dim=(2, 3, 4), keepdim=True)) / clip.std(dim=(2, 3, 4), keepdim=True)
        torch.testing.assert_close(relative, z - z[:, :1], rtol=1e-4, atol=1e-4)  # the onset's own input is zero
        onset = clip[:, :1].expand_as(clip)
        brighter = module.model.encode_motion(1.5 * onset + 0.1, onset)  # the onset under a gain + offset: no motion
        torch.testing.assert_close(seen[-1], torch.zeros_like(seen[-1]), atol=1e-4, rtol=0)
        assert brighter.shape == (B, T, D)
    else:
        torch.testing.assert_close(relative, torch.cat([clip, clip[:, :1].expand_as(clip)], dim=2))


# ---------------------------------------------------------------- the six terms, computed independently
def test_the_motion_encoder_normalises_each_frame_alone_unless_batch_norm_is_asked_for():
    """Default ``motion_norm="layer"``: a clip's motion codes in training mode do not depend on the
    other clips of the batch; ``"batch"`` (the ablation) makes them depend; the identity and flow
    encoders keep batch norm."""
    torch.manual_seed(0)
    frames = batch()["frames"]
    for norm, alone_equals_together in (("layer", True), ("batch", False)):
        model = LFDTCMEN(**TINY, motion_norm=norm).model.train()
        together = model.disentangle(frames)["motion_codes"][:1, 1:]
        alone = model.disentangle(frames[:1])["motion_codes"][:, 1:]
        assert torch.allclose(together, alone, atol=1e-6) == alone_equals_together, norm
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.motion_encoder.modules()) == (norm == "batch")
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.identity_encoder.modules())
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.flow_encoder.modules())


def test_each_loss_term_matches_plain_torch(stub_codec: LFDTCMEN):
    out, data = code_outputs(), batch()
    ids, motion, clip, logits = out["identity_codes"], out["motion_codes"], out["clip"], out["logits"]
    torch.manual_seed(0)
    terms = stub_codec.loss_terms(data, out)
    assert set(terms) == {"cls", "orth", "rec", "cons", "cycle", "id"}
    # cls: focal loss, gamma 2
    p_t = torch.softmax(logits, -1)[torch.arange(B), data["label"]]
    torch.testing.assert_close(terms["cls"], (-(1 - p_t) ** 2 * p_t.log()).mean())
    # orth: mean squared correlation between identity and motion dimensions over all B*T frames
    corr = torch.corrcoef(torch.cat([ids.reshape(-1, D), motion.reshape(-1, D)], 1).T)[:D, D:]
    torch.testing.assert_close(terms["orth"], corr.pow(2).mean(), rtol=1e-4, atol=1e-6)
    # rec: the stub decoder's frame t = [onset identity code, motion code of t]
    rebuilt = torch.cat([ids[:, :1].expand(B, T, D), motion], -1).view(B, T, 1, 1, 2 * D)
    torch.testing.assert_close(terms["rec"], (rebuilt - clip).abs().mean())
    # cons: spread of identity codes over a clip + squared onset motion code
    expected_cons = ((ids - ids.mean(1, keepdim=True)) ** 2).mean() + (motion[:, 0] ** 2).mean()
    torch.testing.assert_close(terms["cons"], expected_cons)
    # cycle: the stub codec is perfect
    assert terms["cycle"].item() == pytest.approx(0.0, abs=1e-7)
    # id: cross-entropy of the identity head on the clip's mean identity code
    head = stub_codec.model.identity_head
    id_logits = ids.mean(1) @ head.weight.T + head.bias
    nll = torch.logsumexp(id_logits, -1) - id_logits[torch.arange(B), data["identity"]]
    torch.testing.assert_close(terms["id"], nll.mean())
    # total: the weighted sum
    module = LFDTCMEN(**TINY, lambda_orth=0.5, lambda_rec=2.0, lambda_cons=3.0, lambda_cycle=0.25, lambda_id=4.0, lambda_cls=1.5)
    weights = {"cls": 1.5, "orth": 0.5, "rec": 2.0, "cons": 3.0, "cycle": 0.25, "id": 4.0}
    torch.testing.assert_close(module.total_loss(terms), sum(weights[k] * v for k, v in terms.items()))


def test_identity_loss_ignores_items_marked_minus_one(stub_codec: LFDTCMEN):
    out, data = code_outputs(), batch()
    data["identity"] = torch.tensor([-1, 1, -1, 2])
    head = stub_codec.model.identity_head
    id_logits = out["identity_codes"].mean(1) @ head.weight.T + head.bias
    known = [1, 3]
    expected = torch.stack([torch.logsumexp(id_logits[i], -1) - id_logits[i, data["identity"][i]] for i in known]).mean()
    torch.testing.assert_close(stub_codec.loss_terms(data, out)["id"], expected)
    out["identity_codes"][[0, 2]] += 10.0  # items without identity: nothing changes
    torch.testing.assert_close(stub_codec.loss_terms(data, out)["id"], expected)
    data["identity"] = torch.full((B,), -1)
    assert stub_codec.loss_terms(data, out)["id"].item() == 0.0


def motion_encoder_gradient(module: LFDTCMEN, loss: torch.Tensor) -> torch.Tensor:
    module.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in module.model.motion_encoder.parameters()])


def test_the_motion_adversary_reverses_its_gradient_into_the_motion_encoder_only():
    strength = 0.5
    off = {f"lambda_{term}": 0.0 for term in ("orth", "rec", "cons", "cycle", "cls")}
    module = LFDTCMEN(**TINY, **off, lambda_id_adv=strength)
    data = batch()
    head = module.model.motion_identity_head
    # plain classifier, by hand: linear head on each motion code of steps 1..T-1 (each dimension
    # standardised over the batch's B * (T-1) steps) with its clip's subject, mean cross-entropy
    torch.manual_seed(0)
    step_motion = module(data)["motion_codes"][:, 1:]
    flat = step_motion.reshape(-1, D)
    standardised = ((flat - flat.mean(0)) / (flat.var(0, unbiased=False).sqrt() + 1e-6)).reshape(B, T - 1, D)
    logits = standardised @ head.weight.T + head.bias  # (B, T-1, S)
    target = data["identity"][:, None].expand(B, T - 1)
    plain = (torch.logsumexp(logits, -1) - logits.gather(-1, target[..., None]).squeeze(-1)).mean()
    plain_encoder = motion_encoder_gradient(module, plain)
    plain_head = head.weight.grad.clone()
    # the model's id term (identity head + adversary): the identity head never reaches the motion encoder
    torch.manual_seed(0)
    term = module.loss_terms(data, module(data))["id"]
    adversary_encoder = motion_encoder_gradient(module, term)
    assert plain_encoder.abs().sum() > 0
    torch.testing.assert_close(adversary_encoder, -strength * plain_encoder)
    torch.testing.assert_close(head.weight.grad, plain_head)  # the adversary itself still learns to classify


def test_the_adversary_reads_scale_free_codes():
    """Shrinking the motion codes cannot hide the subject from the adversary (a linear probe on
    standardised features would still find it)."""
    module = LFDTCMEN(**TINY, lambda_id_adv=1.0)
    codes, identity = code_outputs()["motion_codes"], batch()["identity"]
    loss = module.motion_adversary_loss(identity, codes)
    torch.testing.assert_close(module.motion_adversary_loss(identity, 0.05 * codes + 0.3), loss, rtol=1e-4, atol=1e-4)
    assert (module.motion_adversary_loss(identity, codes.flip(0)) - loss).abs() > 1e-2  # it does read the codes


def test_the_adversary_learns_in_its_own_group_at_a_scaled_learning_rate():
    module = LFDTCMEN(**TINY, lambda_id_adv=1.0, adversary_lr_scale=10.0)
    groups = module.configure_optimizers().param_groups
    head = {id(p) for p in module.model.motion_identity_head.parameters()}
    assert [g["lr"] for g in groups] == [TINY["lr"], 10 * TINY["lr"]]
    assert {id(p) for p in groups[1]["params"]} == head
    assert sum(len(g["params"]) for g in groups) == len(list(module.parameters()))
    assert len(LFDTCMEN(**TINY).configure_optimizers().param_groups) == 1  # no adversary: one group
    with pytest.raises(MERError, match="adversary_lr_scale"):
        LFDTCMEN(**TINY, lambda_id_adv=1.0, adversary_lr_scale=0.0)


def test_without_the_adversary_the_model_is_unchanged():
    torch.manual_seed(0)
    plain = LFDTCMEN(**TINY)
    torch.manual_seed(0)
    off = LFDTCMEN(**TINY, lambda_id_adv=0.0)
    assert off.model.motion_identity_head is None
    assert all(torch.equal(p, q) for p, q in zip(plain.state_dict().values(), off.state_dict().values(), strict=True))
    with pytest.raises(MERError, match="lambda_id_adv"):
        LFDTCMEN(**TINY, lambda_id_adv=-1.0)


@pytest.mark.parametrize("term", ["orth", "rec", "cons", "cycle", "id", "cls"])
def test_a_zero_weight_switches_its_term_off(term: str):
    module = LFDTCMEN(**TINY, **{f"lambda_{term}": 0.0})
    terms = module.loss_terms(batch(), module(batch()))
    assert term not in terms and len(terms) == 5


def test_identity_loss_needs_the_linked_number_of_training_subjects():
    with pytest.raises(MERError, match="num_identities"):
        LFDTCMEN(**{**TINY, "num_identities": 0})
    LFDTCMEN(**{**TINY, "num_identities": 0, "lambda_id": 0.0})  # fine without the identity loss


# ---------------------------------------------------------------- gradients, baseline, fit
@pytest.mark.slow
def test_one_backward_reaches_every_parameter():
    module = LFDTCMEN(**TINY, lambda_id_adv=1.0)
    data = batch()
    module.total_loss(module.loss_terms(data, module(data))).backward()
    parts = ("identity_encoder", "motion_encoder", "decoder", "fusion", "identity_head", "motion_identity_head", "flow_encoder",
             "temporal", "head")
    named = dict(module.model.named_parameters())
    assert all(any(name.startswith(part) for name in named) for part in parts)
    dead = [name for name, p in named.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead


def test_the_no_drl_baseline_is_the_flow_branch_alone():
    module = LFDTCMEN(**{**TINY, "use_drl": False})
    names = {name.split(".")[0] for name, _ in module.model.named_parameters()}
    assert names == {"flow_encoder", "step_position", "temporal", "norm", "head"}
    assert module.inputs == {"flow"}
    (group,) = module.configure_optimizers().param_groups
    assert len(group["params"]) == len(list(module.parameters()))
    data = {k: v for k, v in batch().items() if k != "frames"}
    out = module(data)
    terms = module.loss_terms(data, out)
    assert set(terms) == {"cls"} and torch.isfinite(terms["cls"])
    module.total_loss(terms).backward()
    assert all(p.grad is not None for p in module.parameters())
    module.eval()
    probe = module.probe_features(data)
    assert set(probe) == {"clip_feature", "temporal_input"}
    torch.testing.assert_close(probe["clip_feature"], module(data)["features"])
    flow_steps = module.model.flow_encoder(data["flow"].flatten(0, 1)).view(len(data["flow"]), T - 1, -1)
    torch.testing.assert_close(probe["temporal_input"], flow_steps.mean(dim=1))


@pytest.mark.slow
def test_tiny_fit_on_the_synthetic_datamodule(cache_dir):
    data = SyntheticDataModule(**TINY_SYNTHETIC, cache_dir=str(cache_dir), num_frames=8, val_subjects=1)
    module = LFDTCMEN(**{**TINY, "num_frames": 8, "num_identities": data.num_identities})
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_train_batches=2, limit_val_batches=1)
    torch.manual_seed(0)
    trainer.fit(module, datamodule=data)
    logged = trainer.callback_metrics
    assert {"train/cycle", "train/id", "train/rec", "val/loss"} <= set(logged)
    assert all(torch.isfinite(v) for v in logged.values())
    (predicted,) = trainer.predict(module, dataloaders=data.test_dataloader())[:1]
    assert predicted["probs"].shape[1] == 3
    torch.testing.assert_close(predicted["probs"].sum(1), torch.ones(len(predicted["probs"])))
