"""Xie et al. 2022: Tables 1-2 backbones, the stages of Table 4, eqs. 7-9, Table 5 rows, resuming
mid-stage, identity classes of the fold's training subjects only, the synthetic config via the CLI."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from datamodules import SyntheticDataModule
from datamodules.datasets import TensorDictDataset
from datamodules.errors import MERError
from lightning_modules import Xie2022
from lightning_modules.xie2022.torch_model import (
    IDNET_LAYOUT, MENET_LAYOUT, DiverseAttention, FrameSelfAttention, idnet, menet,
)
from losses import divergence_loss, identity_cross_entropy
from tests.conftest import TINY_SYNTHETIC

TINY = {"num_classes": 3, "num_identities": 3, "num_frames": 4, "menet_size": 32, "idnet_size": 16, "base_width": 8,
        "lr": 1e-3, "mine_lr": 1e-3}
N_ITEMS, BATCH = 16, 4
ROOT = Path(__file__).resolve().parents[2]

# Table 5: which modules / losses each ablation row uses.
TABLE_5 = {
    "1: CE_e": {"use_dao": False, "use_div": False, "use_idnet_mine": False},
    "2: DAO + CE_e": {"use_div": False, "use_idnet_mine": False},
    "3: DAO + CE_e + L_div": {"use_idnet_mine": False},
    "4: IDNet + CE_e + L_MI": {"use_dao": False, "use_div": False},
    "5: IDNet + DAO + CE_e + L_MI": {"use_div": False},
    "6: all": {},
}


def loader(n: int = N_ITEMS, size: int = 40) -> DataLoader:
    """Hand-built training items: RGB frames in [0, 1], 3 classes, identities of 3 training subjects."""
    g = torch.Generator().manual_seed(0)
    tensors = {
        "frames": torch.rand(n, 4, 3, size, size, generator=g),
        "label": torch.arange(n) % 3,
        "identity": torch.arange(n) % 3,
    }
    return DataLoader(TensorDictDataset(tensors, torch.arange(n).numpy()), batch_size=BATCH, shuffle=False)


def trainer(max_epochs: int = 100, **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


# ---------------------------------------------------------------- architecture (Tables 1, 2)
def test_menet_keeps_time_and_idnet_kernels_are_spatial_only():
    assert MENET_LAYOUT.stem.kernel == 7 and all(s.kernel == 3 for s in MENET_LAYOUT.stages)
    strides = [MENET_LAYOUT.stem.stride, MENET_LAYOUT.stem_pool.stride] + [s.stride for s in MENET_LAYOUT.stages]
    assert all(s in (1, (1, 2, 2)) for s in strides)  # temporal stride 1 everywhere
    net = idnet(5, size=32, in_channels=3)
    kernels = [m.kernel_size for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert kernels and all(k[0] == 1 for k in kernels)
    assert IDNET_LAYOUT.stem.kernel == (1, 7, 7)
    stage3: dict[str, torch.Size] = {}
    model = menet(3, num_frames=6, size=64)
    model.backbone.stages[2].register_forward_hook(lambda m, i, o: stage3.update(shape=o.shape))
    out = model(torch.rand(2, 6, 3, 80, 80))
    # 64 px: stem /2, pool /2, Conv_2 /2, Conv_3 /2 -> 4x4, Conv_4 keeps it; T = 6 throughout
    assert stage3["shape"] == (2, 256, 6, 4, 4)
    assert out["maps"].shape == (2, 6, 4, 4) and out["features"].shape == (2, 512) and out["logits"].shape == (2, 3)
    torch.testing.assert_close(out["maps"].sum(dim=(2, 3)), torch.ones(2, 6))


def test_inputs_are_resized_inside_the_model_and_grey_is_an_option():
    net = menet(3, num_frames=4, size=32, in_channels=1, base_width=8)
    seen: dict[str, torch.Size] = {}
    net.backbone.stem.register_forward_hook(lambda m, i, o: seen.update(input=i[0].shape))
    net(torch.randint(0, 256, (2, 4, 3, 50, 50), dtype=torch.uint8))
    assert seen["input"] == (2, 1, 4, 32, 32)


def _softmax_by_hand(scores: list[list[float]]) -> list[list[float]]:
    total = sum(math.exp(v) for row in scores for v in row)
    return [[math.exp(v) / total for v in row] for row in scores]


def test_eq_1_maps_and_dao_branches_by_hand():
    """eq. 1 (softmax over H·W of the channel mean) per frame for IDNet; DAO: eq. 1 on frame 0,
    softmax of a 1×1 conv (w·x + b) on frames 1..T-1; features re-weighted by map × H·W."""
    b_, c_, t_, h_, w_ = 2, 3, 4, 2, 3
    features = torch.randn(b_, c_, t_, h_, w_, generator=torch.Generator().manual_seed(0))
    dao = DiverseAttention(c_, t_)
    with torch.no_grad():
        for module in (FrameSelfAttention(), dao):
            out, maps = module(features)
            for b in range(b_):
                for t in range(t_):
                    x = features[b, :, t].tolist()  # [c][i][j]
                    if module is dao and t > 0:
                        conv = dao.branches[t - 1]
                        weight, bias = conv.weight.flatten().tolist(), conv.bias.item()
                        scores = [[sum(weight[c] * x[c][i][j] for c in range(c_)) + bias for j in range(w_)] for i in range(h_)]
                    else:
                        scores = [[sum(x[c][i][j] for c in range(c_)) / c_ for j in range(w_)] for i in range(h_)]
                    expected = _softmax_by_hand(scores)
                    for i in range(h_):
                        for j in range(w_):
                            assert maps[b, t, i, j].item() == pytest.approx(expected[i][j], rel=1e-5)
                            for c in range(c_):
                                want = x[c][i][j] * expected[i][j] * h_ * w_
                                assert out[b, c, t, i, j].item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_identity_loss_ignores_items_without_an_identity():
    logits = torch.randn(4, 3)
    expected = torch.nn.functional.cross_entropy(logits[:2], torch.tensor([2, 0]))
    assert identity_cross_entropy(logits, torch.tensor([2, 0, -1, -1])) == pytest.approx(expected.item())
    assert identity_cross_entropy(logits, torch.tensor([-1, -1, -1, -1])).item() == 0


def test_bad_settings_are_one_line_errors():
    with pytest.raises(MERError, match="use_div needs use_dao"):
        Xie2022(**{**TINY, "use_dao": False})
    with pytest.raises(MERError, match="num_identities"):
        Xie2022(**{**TINY, "num_identities": 0})
    with pytest.raises(MERError, match="4 non-negative"):
        Xie2022(**{**TINY, "stage_steps": [1, 2]})


# ---------------------------------------------------------------- stages (Table 4)
def _snapshot(module: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    return {} if module is None else {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], params: set[str]) -> set[str]:
    return {k for k in params if not torch.equal(before[k], after[k])}


class StageRecorder(L.Callback):
    """Per iteration: stage, iteration counter, and which parameters / buffers of each part changed."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.before = {name: _snapshot(getattr(module, name)) for name in ("menet", "idnet", "mine")}
        self.stage, self.done = module.stage(), int(module.iterations_done)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        record = {"stage": self.stage, "done": self.done}
        for name in ("menet", "idnet", "mine"):
            part = getattr(module, name)
            if part is None:
                continue
            after = _snapshot(part)
            params = {k for k, _ in part.named_parameters()}
            record[name] = _changed(self.before[name], after, params)
            record[name + "_all_params"] = params
            record[name + "_buffers"] = _changed(self.before[name], after, set(after) - params)
        self.records.append(record)


@pytest.mark.slow
def test_each_stage_trains_only_its_target_and_mine_from_stage_2():
    torch.manual_seed(0)
    module, recorder = Xie2022(**TINY, stage_steps=[1, 1, 1, 1]), StageRecorder()
    fit = trainer(callbacks=[recorder])
    fit.fit(module, loader(n=8 * BATCH))
    assert [r["stage"] for r in recorder.records] == [1, 2, 3, 4]  # stopped by the schedule mid-epoch
    assert int(module.iterations_done) == 4 and module.stage() is None
    for r in recorder.records:
        target, frozen = ("idnet", "menet") if r["stage"] in (1, 3) else ("menet", "idnet")
        assert r[frozen] == set() and r[frozen + "_buffers"] == set(), (r["stage"], frozen)
        assert len(r[target]) > 0.9 * len(r[target + "_all_params"]), (r["stage"], target)
        assert r[target + "_buffers"], "the target's BatchNorm statistics update"
        # the DV bound is blind to a constant shift of T, so the last bias may get no gradient
        if r["stage"] == 1:
            assert r["mine"] == set()
        else:
            assert {"statistics.0.weight", "statistics.0.bias", "statistics.2.weight"} <= r["mine"], r["stage"]


@pytest.mark.slow
@pytest.mark.parametrize("row", TABLE_5.values(), ids=TABLE_5.keys())
def test_every_table_5_row_trains(row):
    torch.manual_seed(0)
    module = Xie2022(**TINY, **row, stage_steps=[1, 1, 1, 1])
    before = _snapshot(module.menet)
    fit = trainer()
    fit.fit(module, loader())
    uses_idnet = row.get("use_idnet_mine", True)
    assert int(module.iterations_done) == (4 if uses_idnet else 2)
    assert (module.idnet is not None) == uses_idnet and (module.mine is not None) == uses_idnet
    assert ("attention.branches.0.weight" in dict(module.menet.named_parameters())) == row.get("use_dao", True)
    logged = set(fit.logged_metrics)
    assert ("train/div" in logged) == row.get("use_div", True)
    assert ("train/mi" in logged) == uses_idnet and ("train/ce_id" in logged) == uses_idnet
    assert torch.isfinite(fit.logged_metrics["train/loss"])
    assert _changed(before, _snapshot(module.menet), {k for k, _ in module.menet.named_parameters()})


@pytest.mark.slow
def test_stage_losses_are_eqs_8_and_9():
    torch.manual_seed(0)
    module = Xie2022(**TINY, lambda_div=0.3, lambda_mi_menet=0.7, lambda_mi_idnet=0.2, stage_steps=[1, 1, 1, 1])
    recorded: dict[int, dict[str, float]] = {}
    original = module.stage_losses

    def spy(stage, batch):
        terms, objective = original(stage, batch)
        recorded[stage] = {k: v.item() for k, v in terms.items()} | {"objective": objective.item()}
        return terms, objective

    module.stage_losses = spy
    trainer().fit(module, loader())
    s2, s3 = recorded[2], recorded[3]
    assert s2["loss"] == pytest.approx(s2["ce"] + 0.3 * s2["div"] + 0.7 * s2["mi"], abs=1e-5)  # eq. 8
    assert s3["loss"] == pytest.approx(s3["ce_id"] + 0.2 * s3["mi"], abs=1e-5)  # eq. 9
    assert recorded[1]["loss"] == recorded[1]["ce_id"]  # eq. 4
    assert -1 <= s2["div"] <= 0


def _statistics_by_hand(mine: torch.nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Table 3's T(x, z) written out with the module's weights: FC, LeakyReLU, FC, LeakyReLU."""
    first, second = [layer for layer in mine.statistics if isinstance(layer, torch.nn.Linear)]
    hidden = F.leaky_relu(F.linear(torch.cat([x, z], dim=1), first.weight, first.bias), 0.01)
    return F.leaky_relu(F.linear(hidden, second.weight, second.bias), 0.01).squeeze(1)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_the_branch_minimises_the_mi_estimate_and_mine_maximises_it(stage):
    """Eq. 7 read adversarially, MINE in training mode as in the fit: the branch descends eq. 8 /
    eq. 9 with +λ·MI, MINE descends -MI, both through Belghazi et al.'s bias-corrected gradient,
    grad E_joint[T] - grad E_marginal[e^T] / ema, ema = 0.99 ema_before + 0.01 E_marginal[e^T].

    The expectation is rebuilt by hand from the branches' features and MINE's weights (same shuffle:
    same seed). The moving average is set to 3× this batch's E_marginal[e^T], so the corrected
    gradient differs clearly from the plain one (grad log E_marginal[e^T])."""
    torch.manual_seed(0)
    weight = 0.7 if stage == 2 else 0.2
    module = Xie2022(**TINY, lambda_div=0.3, lambda_mi_menet=0.7, lambda_mi_idnet=0.2)
    batch = next(iter(loader()))
    frames = batch["frames"]
    module.set_modes("menet" if stage == 2 else "idnet")
    assert module.mine.training
    trained, other = (module.menet, module.idnet) if stage == 2 else (module.idnet, module.menet)
    branch, mine = list(trained.parameters()), list(module.mine.parameters())

    def pairs(out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            fixed = other(frames)["features"]
        return (out["features"], fixed) if stage == 2 else (fixed, out["features"])

    torch.manual_seed(5)
    permutation = torch.randperm(len(frames))  # the shuffle MINE draws after seeding 5
    with torch.no_grad():
        x, z = pairs(trained(frames))
        mean_exp = _statistics_by_hand(module.mine, x, z[permutation]).exp().mean()
    module.mine.log_ema.fill_(math.log(3 * mean_exp.item()))  # a moving average from earlier batches

    torch.manual_seed(5)
    _, objective = module.stage_losses(stage, batch)
    got = torch.autograd.grad(objective, branch + mine, allow_unused=True)
    ema = 0.99 * 3 * mean_exp + 0.01 * mean_exp
    assert module.mine.log_ema.exp().item() == pytest.approx(ema.item(), rel=1e-5)

    out = trained(frames)
    x, z = pairs(out)
    joint = _statistics_by_hand(module.mine, x, z).mean()
    marginal = _statistics_by_hand(module.mine, x, z[permutation]).exp().mean()
    corrected = joint - marginal / ema  # the gradient of the bias-corrected estimate
    plain = joint - marginal.log()
    if stage == 2:
        rest = F.cross_entropy(out["logits"], batch["label"]) + 0.3 * divergence_loss(out["maps"])
    else:
        rest = F.cross_entropy(out["logits"], batch["identity"])
    used = [i for i, g in enumerate(got[: len(branch)]) if g is not None]
    assert len(used) > 0.9 * len(branch)

    def flat_grad(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])

    def distance(got_flat: torch.Tensor, want_flat: torch.Tensor) -> float:
        return ((got_flat - want_flat).norm() / want_flat.norm()).item()

    used_params = [branch[i] for i in used]
    got_branch = torch.cat([got[i].flatten() for i in used])
    got_mi_part = got_branch - flat_grad(rest, used_params)  # what the MI term contributed
    assert distance(got_branch, flat_grad(rest + weight * corrected, used_params)) < 1e-4
    assert distance(got_mi_part, flat_grad(weight * corrected, used_params)) < 1e-2
    assert distance(got_mi_part, flat_grad(weight * plain, used_params)) > 0.2  # not the eval-mode gradient
    assert distance(got_mi_part, flat_grad(-weight * corrected, used_params)) > 1.9  # nor the wrong sign
    got_mine = torch.cat([g.flatten() for g in got[len(branch):]])
    mine_used = [p for p, g in zip(mine, got[len(branch):]) if g is not None]
    assert len(mine_used) == len(mine)
    assert distance(got_mine, flat_grad(-corrected, mine)) < 1e-4
    assert distance(got_mine, flat_grad(-plain, mine)) > 0.05


class LoadedState(L.Callback):
    """The module's state when training (re)starts, after Lightning restored the checkpoint."""

    def on_train_start(self, trainer, module) -> None:
        self.state = _snapshot(module)


@pytest.mark.slow
def test_resuming_mid_stage_continues_in_that_stage(tmp_path: Path):
    torch.manual_seed(0)
    first = Xie2022(**TINY, stage_steps=[2, 3, 2, 2])
    first_fit = trainer(max_epochs=1)
    first_fit.fit(first, loader(n=3 * BATCH))  # 3 iterations: the next one is stage 2's second
    assert int(first.iterations_done) == 3 and first.stage() == 2
    checkpoint = tmp_path / "mid.ckpt"
    first_fit.save_checkpoint(checkpoint)
    saved = _snapshot(first)

    torch.manual_seed(1)
    fresh, recorder, loaded = Xie2022(**TINY, stage_steps=[2, 3, 2, 2]), StageRecorder(), LoadedState()
    resumed = trainer(max_epochs=50, callbacks=[recorder, loaded])
    resumed.fit(fresh, loader(n=3 * BATCH), ckpt_path=checkpoint)
    assert all(torch.equal(saved[k], loaded.state[k]) for k in saved)  # weights, BN stats, MINE's EMA, counter
    assert torch.isfinite(loaded.state["mine.log_ema"])
    first_step = recorder.records[0]
    assert (first_step["stage"], first_step["done"]) == (2, 3)
    assert first_step["idnet"] == set() and first_step["menet"]
    assert [r["stage"] for r in recorder.records] == [2, 2, 3, 3, 4, 4]
    assert int(fresh.iterations_done) == 9 and resumed.current_epoch < 49  # the schedule stopped the fit


def _trained_part(record: dict) -> str:
    """What an iteration trained, read off the parameters that changed: 'I' IDNet alone (stage 1),
    'I+MINE' (stage 3), 'M' MENet (stages 2 and 4, with MINE when present)."""
    if record.get("idnet"):
        return "I+MINE" if record["mine"] else "I"
    assert record["menet"], record
    return "M"


def _stages_by_hand(lengths: list[int], batches_per_epoch: int, unit: str, with_idnet: bool = True) -> list[int]:
    """The stage of every training batch, in order, by walking the schedule batch by batch."""
    stages: list[int] = []
    for stage, length in enumerate(lengths, 1):
        if stage in (1, 3) and not with_idnet:
            continue
        stages += [stage] * (length * batches_per_epoch if unit == "epochs" else length)
    return stages


@pytest.mark.parametrize(("unit", "lengths", "batches_per_epoch", "with_idnet"), [
    ("epochs", [1, 2, 1, 1], 2, True),
    ("steps", [3, 2, 1, 2], 3, True),
    ("epochs", [2, 1, 2, 2], 1, False),  # Table 5 rows without IDNet: stages 1 and 3 are skipped
], ids=["epochs", "steps", "epochs-menet-only"])
def test_stage_boundaries_in_epochs_and_in_steps(unit, lengths, batches_per_epoch, with_idnet):
    torch.manual_seed(0)
    row = {} if with_idnet else TABLE_5["3: DAO + CE_e + L_div"]
    module, recorder = Xie2022(**TINY, **row, **{f"stage_{unit}": lengths}), StageRecorder()
    fit = trainer(max_epochs=50, callbacks=[recorder])
    fit.fit(module, loader(n=batches_per_epoch * BATCH))
    expected = _stages_by_hand(lengths, batches_per_epoch, unit, with_idnet)
    assert [r["stage"] for r in recorder.records] == expected
    by_part = {1: "I", 2: "M", 3: "I+MINE", 4: "M"}
    assert [_trained_part(r) for r in recorder.records] == [by_part[s] for s in expected]
    assert module.stage() is None and fit.current_epoch < 49  # the schedule, not max_epochs, ended the fit
    if unit == "epochs":
        assert fit.current_epoch == len(expected) // batches_per_epoch


def test_resuming_between_epochs_continues_in_that_stage(tmp_path: Path):
    torch.manual_seed(0)
    first = Xie2022(**TINY, stage_epochs=[1, 2, 1, 1])
    first_fit = trainer(max_epochs=2)
    first_fit.fit(first, loader(n=2 * BATCH))  # epochs 0 (stage 1) and 1 (stage 2's first)
    checkpoint = tmp_path / "epoch2.ckpt"
    first_fit.save_checkpoint(checkpoint)

    torch.manual_seed(1)
    fresh, recorder = Xie2022(**TINY, stage_epochs=[1, 2, 1, 1]), StageRecorder()
    resumed = trainer(max_epochs=50, callbacks=[recorder])
    resumed.fit(fresh, loader(n=2 * BATCH), ckpt_path=checkpoint)
    assert [r["stage"] for r in recorder.records] == [2, 2, 3, 3, 4, 4]
    assert [_trained_part(r) for r in recorder.records] == ["M", "M", "I+MINE", "I+MINE", "M", "M"]
    assert resumed.current_epoch == 5


def test_stage_lengths_in_epochs_and_in_steps_are_exclusive():
    with pytest.raises(MERError, match="not both") as error:
        Xie2022(**TINY, stage_epochs=[1, 1, 1, 1], stage_steps=[1, 1, 1, 1])
    assert "\n" not in str(error.value)
    assert Xie2022(**TINY).stage_ends == [100, 400, 500, 800]  # neither: the authors' reading, in epochs
    assert Xie2022(**TINY).stage_unit == "epochs" and Xie2022(**TINY, stage_steps=[1, 1, 1, 1]).stage_unit == "steps"


# ---------------------------------------------------------------- identities on a real datamodule
class SeenItems(L.Callback):
    def __init__(self) -> None:
        self.index: list[int] = []
        self.identity: list[int] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.index += batch["index"].tolist()
        self.identity += batch["identity"].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("k_folds", [None, 2], ids=["loso", "2-fold"])
def test_identity_classes_never_include_a_held_out_subject(cache_dir, k_folds):
    data = SyntheticDataModule(**{**TINY_SYNTHETIC, "batch_size": 4}, cache_dir=str(cache_dir), k_folds=k_folds,
                               val_subjects=1)  # the session's tiny synthetic set (8 frames), prepared once
    data.prepare_data()
    subject_of = data.table["subject"].astype(str).to_numpy()
    for fold in range(data.num_folds):
        data.fold = fold
        data.setup("fit")
        held_out = set(data.fold_test_subjects(fold))
        classes = data.identity_subjects
        assert not held_out & set(classes) and data.num_identities == len(classes)
        for split, dataset in data.datasets.items():
            for i in range(len(dataset)):
                item = dataset[i]
                subject, identity = subject_of[int(item["index"])], int(item["identity"])
                if split == "train":
                    assert classes[identity] == subject and subject not in held_out
                else:
                    assert identity == -1, (split, subject)

    data.fold, data.val_subjects = 0, 0
    data.setup("fit")
    settings = {**TINY, "num_identities": data.num_identities, "num_frames": data.num_frames}
    module, seen = Xie2022(**settings, stage_steps=[2, 1, 1, 1]), SeenItems()
    assert module.idnet.backbone.fc.out_features == data.num_identities
    trainer(callbacks=[seen]).fit(module, datamodule=data)
    held_out = set(data.fold_test_subjects(0))
    assert seen.index and not held_out & set(subject_of[seen.index])
    assert all(0 <= i < data.num_identities for i in seen.identity)


def test_a_clip_length_other_than_num_frames_is_one_clear_error():
    with pytest.raises(MERError, match="num_frames"):
        menet(3, num_frames=4, size=32, base_width=8)(torch.rand(1, 6, 3, 32, 32))


@pytest.mark.slow
def test_synthetic_config_trains_one_fold_through_the_cli(cache_dir, tmp_path: Path):
    """configs/xie2022/synthetic.yaml via `mer fit`, shrunk: num_identities is linked, the schedule ends the fit."""
    same_clips_as_tiny_synthetic = [  # the session's prepared set: no second preparation
        "--data.init_args.n_subjects", "4", "--data.init_args.clips_per_subject", "5", "--data.init_args.num_frames", "8",
        "--data.init_args.tvl1.nscales", "5", "--data.init_args.tvl1.warps", "5", "--data.init_args.tvl1.epsilon", "0.01",
        "--data.init_args.cache_dir", str(cache_dir)]
    overrides = [*same_clips_as_tiny_synthetic, "--model.init_args.num_frames", "8", "--model.init_args.stage_steps", "[1, 2, 1, 2]",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    result = subprocess.run([sys.executable, "-c", "from experiments.main import mer_main; mer_main()", "fit",
                             "--config", str(ROOT / "configs/xie2022/synthetic.yaml"), *overrides],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (checkpoint,) = tmp_path.rglob("*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["hyper_parameters"]["num_identities"] == 3  # 4 subjects, one held out
    assert int(saved["state_dict"]["iterations_done"]) == 6 and saved["epoch"] < 999
