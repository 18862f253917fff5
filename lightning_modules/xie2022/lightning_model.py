"""Xie et al. 2022 training: the four stages of Table 4 with Lightning's manual optimisation."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.errors import MERError
from losses import MINE, divergence_loss, identity_cross_entropy, scale_gradient

from ..base import Batch, MERClassifier, check_loss_weights
from .torch_model import AttentionResNet, idnet, menet

STAGE_TARGETS = {1: "idnet", 2: "menet", 3: "idnet", 4: "menet"}  # Table 4
DEFAULT_STAGE_EPOCHS = (100, 300, 100, 300)  # §"Parameter settings", read as epochs (the authors' scripts)


class Xie2022(MERClassifier):
    """Decoupling facial motion and identity features (Xie et al., PeerJ CS 2022): MENet + DAO,
    IDNet + self-attention, MINE between their features, trained in the four stages of Table 4.

    Stages (one fit, in order; lengths ``stage_epochs`` in epochs or ``stage_steps`` in iterations):
      1. IDNet: L_ce_d (eq. 4) on the training subjects' identities.
      2. MENet: L_ce_e + λ_{1,1} L_div + λ_{1,2} L_MI (eq. 8).
      3. IDNet: L_ce_d + λ_2 L_MI (eq. 9).
      4. MENet again (eq. 8).
    Only the stage's target trains; the other branch is frozen (eval mode, no gradient). MINE (Table 3,
    ``losses.MINE``) trains alongside in stages 2-4 with its own Adam.

    L_MI (eq. 7): as printed, ``T - log(e^T)`` is identically 0 and would train nothing. We read it
    as MINE's Donsker-Varadhan estimate of eq. 3 (marginal pairs by shuffling f^d in the batch),
    used adversarially as in Belghazi et al. and Ruan et al. 2022 (whom the paper follows): the
    statistics network MAXIMISES the bound, so that it estimates I(f^e; f^d), and the branch being
    trained MINIMISES λ·estimate, which decouples identity from motion features. Both updates come
    from one backward pass through a gradient-reversal layer (``losses.scale_gradient``).

    Stage lengths. §"Parameter settings": "Maximum number of iterations of MENet and IDNet is set to
    300 and 100, respectively", applied to each stage of that network (IDNet: stages 1 and 3, MENet:
    2 and 4). Two readings, exactly one given:
      * ``stage_epochs = [100, 300, 100, 300]`` (default, the authors' reading): their public training
        scripts (github.com/TingxuanXie/DFMIDMER, train_SDU*.py) loop ``epochs = 300`` over the
        whole training set, so an "iteration" is an epoch. (Those scripts loop 300 epochs for IDNet
        too; we keep the paper's 100 for IDNet.)
      * ``stage_steps = [100, 300, 100, 300]``: the literal reading, an iteration is one batch
        (on CASME II 5-fold at batch 32, about 43 epochs per MENet stage).
    When stage 4 ends the module sets ``trainer.should_stop``: the schedule, not the Trainer, says
    how long to train, so configs set ``trainer.max_epochs`` high enough to contain it. Progress is
    the buffer ``iterations_done`` (steps) or the trainer's ``current_epoch`` (epochs), both saved
    in checkpoints, so resuming continues in the right stage.

    Table 5 rows: 1 ``use_dao=false, use_div=false, use_idnet_mine=false``; 2 ``use_div=false,
    use_idnet_mine=false``; 3 ``use_idnet_mine=false``; 4 ``use_dao=false, use_div=false``;
    5 ``use_div=false``; 6 defaults. Without IDNet + MINE, stages 1 and 3 are skipped.

    Args:
        num_classes: linked from the datamodule.
        num_aus: linked from the datamodule (unused).
        num_identities: training subjects of the fold (linked); IDNet's classes.
        num_frames: T frames per clip (the paper does not give T; must match the datamodule's).
        menet_size: MENet's frames are resized to this inside the model (256 in the paper).
        idnet_size: IDNet's frames are resized to this inside the model (128 in the paper).
        in_channels: 3 for RGB, 1 to convert the frames to grey (the paper does not say; RGB our choice).
        base_width: channels of the first ResNet stage (64 in Tables 1-2; smaller for CPU-sized runs).
        use_dao: Table 5 switch: the DAO module.
        use_div: Table 5 switch: the divergence loss L_div.
        use_idnet_mine: Table 5 switch: IDNet and MINE (stages 1 and 3).
        stage_epochs: lengths of stages 1-4 in epochs (neither given: ``[100, 300, 100, 300]``).
        stage_steps: lengths of stages 1-4 in iterations (batches); give at most one of the two.
        lambda_div: λ_{1,1} (0.1).
        lambda_mi_menet: λ_{1,2} (0.1).
        lambda_mi_idnet: λ_2 (0.1).
        lr: Adam learning rate of MENet and IDNet (1e-4).
        mine_lr: Adam learning rate of MINE (not given; 1e-4, our choice).
        mine_hidden: MINE's hidden width (64, Table 3).
    """

    def __init__(
        self,
        num_classes: int = 5,
        num_aus: int = 0,
        num_identities: int = 0,
        num_frames: int = 8,
        menet_size: int = 256,
        idnet_size: int = 128,
        in_channels: int = 3,
        base_width: int = 64,
        use_dao: bool = True,
        use_div: bool = True,
        use_idnet_mine: bool = True,
        stage_epochs: Sequence[int] | None = None,
        stage_steps: Sequence[int] | None = None,
        lambda_div: float = 0.1,
        lambda_mi_menet: float = 0.1,
        lambda_mi_idnet: float = 0.1,
        lr: float = 1e-4,
        mine_lr: float = 1e-4,
        mine_hidden: int = 64,
    ) -> None:
        super().__init__(num_classes, num_aus, num_identities)
        check_loss_weights(lambda_div=lambda_div, lambda_mi_menet=lambda_mi_menet, lambda_mi_idnet=lambda_mi_idnet)
        _check_settings(num_frames, use_dao, use_div, use_idnet_mine, num_identities)
        self.stage_unit, stage_lengths = _stage_schedule(stage_epochs, stage_steps)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.menet = menet(num_classes, num_frames, menet_size, in_channels, use_dao, base_width)
        self.idnet: AttentionResNet | None = None
        self.mine: MINE | None = None
        if use_idnet_mine:
            self.idnet = idnet(num_identities, idnet_size, in_channels, base_width)
            self.mine = MINE(self.menet.feature_dim, self.idnet.feature_dim, hidden=mine_hidden)
        lengths = [n if use_idnet_mine or STAGE_TARGETS[s] == "menet" else 0 for s, n in enumerate(stage_lengths, 1)]
        self.stage_ends = list(accumulate(lengths))
        self.register_buffer("iterations_done", torch.zeros((), dtype=torch.long))

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset({"frames", "identity"} if self.idnet is not None else {"frames"})

    # -- schedule --------------------------------------------------------------------------------
    def progress(self) -> int:
        """Units of the schedule done: iterations (the buffer's count) or epochs (the trainer's)."""
        return int(self.iterations_done) if self.stage_unit == "steps" else self.trainer.current_epoch

    def stage(self, done: int | None = None) -> int | None:
        """The stage (1-4) the next iteration or epoch belongs to after ``done`` units of the
        schedule (by default :meth:`progress`); None once stage 4 has ended."""
        done = self.progress() if done is None else done
        position = bisect.bisect_right(self.stage_ends, done)
        return position + 1 if position < 4 else None

    # -- forward / evaluation ---------------------------------------------------------------------
    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """MENet's outputs ('logits', 'features', 'maps' with DAO): the only path to a prediction."""
        return self.menet(batch["frames"])

    def probe_features(self, batch: Batch) -> dict[str, Tensor]:
        """MENet's motion features f^e and (with IDNet) IDNet's identity features f^d, as MINE reads them (eq. 3)."""
        features = {"f_e": self.menet(batch["frames"])["features"]}
        if self.idnet is not None:
            features["f_d"] = self.idnet(batch["frames"])["features"]
        return features

    def evaluation_loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(outputs["logits"], batch["label"])

    # -- training --------------------------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for MENet, IDNet (lr 1e-4, §"Parameter settings") and MINE, in that order."""
        hp = self.hparams
        optimizers = [torch.optim.Adam(self.menet.parameters(), lr=hp.lr)]
        if self.idnet is not None and self.mine is not None:
            optimizers += [torch.optim.Adam(self.idnet.parameters(), lr=hp.lr),
                           torch.optim.Adam(self.mine.parameters(), lr=hp.mine_lr)]
        return optimizers

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        done = self.progress()  # in steps, the step's one host sync
        stage = self.stage(done)
        if stage is None:  # e.g. resumed from a checkpoint taken after stage 4
            self.trainer.should_stop = True
            return
        self.set_modes(STAGE_TARGETS[stage])
        terms, objective = self.stage_losses(stage, batch)
        configured = self.optimizers()
        optimizers = self.stage_optimizers(stage, configured if isinstance(configured, list) else [configured])
        for optimizer in optimizers:
            optimizer.zero_grad()
        self.manual_backward(objective)
        for optimizer in optimizers:
            optimizer.step()
        self.iterations_done += 1
        if self.stage_unit == "steps" and self.stage(done + 1) is None:
            self.trainer.should_stop = True
        size = len(batch["frames"])
        self.log("train/stage", float(stage), on_step=True, on_epoch=False, batch_size=size)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        if self.stage_unit == "epochs" and self.stage(self.trainer.current_epoch + 1) is None:
            self.trainer.should_stop = True

    def set_modes(self, target: str) -> None:
        """Target branch and MINE in training mode; the frozen branch in eval mode (BN stats fixed)."""
        self.menet.train(target == "menet")
        if self.idnet is not None and self.mine is not None:
            self.idnet.train(target == "idnet")
            self.mine.train()

    def stage_optimizers(self, stage: int, optimizers: Sequence) -> list:
        """Those of ``configure_optimizers``' optimisers that step in ``stage``: the target's, and
        MINE's from stage 2 on."""
        menet_opt, *others = optimizers
        if STAGE_TARGETS[stage] == "menet":
            return [menet_opt, *others[1:]]  # + MINE when present
        idnet_opt, mine_opt = others
        return [idnet_opt] if stage == 1 else [idnet_opt, mine_opt]

    def stage_losses(self, stage: int, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        """Logged terms (with the stage's loss, eq. 4/8/9, as 'loss') and the objective to descend."""
        hp, frames = self.hparams, batch["frames"]
        if STAGE_TARGETS[stage] == "menet":
            out = self.menet(frames)
            terms = {"ce": F.cross_entropy(out["logits"], batch["label"])}
            loss = objective = terms["ce"]
            if hp.use_div:
                terms["div"] = divergence_loss(out["maps"])
                loss = objective = loss + hp.lambda_div * terms["div"]
            if self.idnet is not None and self.mine is not None:
                with torch.no_grad():
                    identity_features = self.idnet(frames)["features"]
                terms["mi"] = self.mine(scale_gradient(out["features"], -hp.lambda_mi_menet), identity_features)
                loss, objective = loss + hp.lambda_mi_menet * terms["mi"], objective - terms["mi"]
            return {**terms, "loss": loss}, objective
        assert self.idnet is not None and self.mine is not None
        out = self.idnet(frames)
        terms = {"ce_id": identity_cross_entropy(out["logits"], batch["identity"])}
        if stage == 1:
            return {**terms, "loss": terms["ce_id"]}, terms["ce_id"]
        with torch.no_grad():
            motion_features = self.menet(frames)["features"]
        terms["mi"] = self.mine(motion_features, scale_gradient(out["features"], -hp.lambda_mi_idnet))
        loss = terms["ce_id"] + hp.lambda_mi_idnet * terms["mi"]
        return {**terms, "loss": loss}, terms["ce_id"] - terms["mi"]


def _stage_schedule(stage_epochs: Sequence[int] | None, stage_steps: Sequence[int] | None) -> tuple[str, list[int]]:
    """The schedule's unit ('epochs' or 'steps') and the four stage lengths (Table 4)."""
    if stage_epochs is not None and stage_steps is not None:
        raise MERError(f"give the stage lengths in epochs or in steps, not both (stage_epochs={list(stage_epochs)}, "
                       f"stage_steps={list(stage_steps)}); set the other to null")
    if stage_steps is not None:
        unit, lengths = "steps", stage_steps
    else:
        unit, lengths = "epochs", DEFAULT_STAGE_EPOCHS if stage_epochs is None else stage_epochs
    if len(lengths) != 4 or any(n < 0 for n in lengths):
        raise MERError(f"stage_{unit} needs 4 non-negative counts (Table 4's stages 1-4), got {list(lengths)}")
    return unit, list(lengths)


def _check_settings(num_frames: int, use_dao: bool, use_div: bool, use_idnet_mine: bool, num_identities: int) -> None:
    if use_div and not use_dao:
        raise MERError("use_div needs use_dao: the divergence loss (eq. 6) acts on DAO's attention maps")
    if use_dao and num_frames < 2:
        raise MERError(f"DAO needs num_frames >= 2 (T-1 attention branches), got {num_frames}")
    if use_idnet_mine and num_identities < 2:
        raise MERError(
            f"use_idnet_mine needs num_identities >= 2 (the fold's training subjects), got {num_identities}; "
            "it is linked from the datamodule's num_identities"
        )
