"""LFD-TCMEN training logic: the six weighted losses of the abstract and the optimiser."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.errors import MERError
from losses import (consistency_loss, cross_correlation_loss, focal_loss, identity_cross_entropy, masked_mean,
                    scale_gradient)

from ..backbones.resnet import Norm
from ..base import Batch, MERClassifier, WeightedLossMixin, check_loss_weights
from .torch_model import LFDTCMENModel, MotionInput, different_subject_partners, standardise_columns

DRL_TERMS = ("orth", "rec", "cons", "cycle", "id")


class LFDTCMEN(WeightedLossMixin, MERClassifier):
    """Learnable Feature Disentanglement with Temporal-Complemented Motion Enhancement (Qian, Huang
    & Qu, Entropy 2026, 28(2):180). Only the abstract is public; every choice below that it leaves
    open is ours.

    The abstract gives: a DRL module that isolates motion from subject appearance, end to end; a
    TCME module that integrates the purified motion representations with optical-flow dynamics to
    model the spatiotemporal evolution; a multi-task objective of orthogonality, reconstruction,
    consistency, cycle, identity and classification losses.

    Not specified by the paper; we use:
      - Encoders: the suite's 2D ResNet (ImageNet layout) per frame. Identity encoder: one frame.
        Motion encoder: the frame relative to the clip's onset frame (frame 0, the identity
        reference): ``motion_input="difference"`` (default) reads the difference of the two frames,
        each standardised to zero mean and unit std (a global illumination gain cancels), ``"pair"``
        the frame and the onset stacked. Frames are resized to ``drl_size`` first. (With "pair" the
        motion code carried the subject as well as the identity code did on the synthetic set's
        training subjects, and a plain frame - onset still let the illumination drift carry a scaled
        copy of the face; see docs/models/lfd_tcmen.md.) The motion encoder normalises each image alone
        (``motion_norm="layer"``: GroupNorm with one group, the same in training and evaluation);
        ``"batch"`` (BatchNorm, as the identity and flow encoders) is the ablation. With batch norm
        the DRL losses shaped training-mode codes, normalised by each batch's statistics, while the
        model is evaluated with running statistics: on the synthetic set's training subjects a
        linear probe found the subject in 0.44 of the eval-mode motion codes but 0.18 of the
        training-mode ones (folds 0-3, seed 0; the no-DRL flow features: 0.42 and 0.33), and the
        motion code leaked more identity than the no-DRL baseline (0.477 vs 0.391, seeds 0-2);
        with per-image normalisation it leaked less on those training subjects (0.318). Measured
        like-for-like on fresh data it leaks less than the baseline's flow features on training
        subjects but more on held-out subjects (docs/models/lfd_tcmen.md).
      - Decoder: (identity code of the onset, motion code of frame t) -> frame t (FrameDecoder).
      - L_orth: mean squared Pearson correlation between every identity-code dimension and every
        motion-code dimension over the batch's frames (batch-centred difference loss of Bousmalis
        et al. 2016; ``losses.disentangle.cross_correlation_loss``).
      - L_rec: L1 between the rebuilt and the real (resized) frames, every frame of the clip.
      - L_cons: spread of a clip's per-frame identity codes around their mean + squared onset
        motion code (``losses.disentangle.consistency_loss``).
      - L_cycle: every clip takes a partner of another subject in the batch (training identities;
        ``different_subject_partners``) and one step t drawn uniformly from 1..T-1 (one step, not
        all, to halve the cost); the frame rebuilt from (own onset identity code, partner's motion
        code of step t) is re-encoded: MSE of its identity code to the own onset identity code plus
        MSE of its motion code (relative to the own onset) to the partner's. Targets are not
        detached. Clips without such a partner contribute 0.
      - L_id: cross-entropy of a linear subject classifier on the clip's mean identity code over
        the fold's training subjects (``batch['identity']``; items marked -1 are ignored), plus,
        when ``lambda_id_adv`` > 0, an adversarial identity term on the motion code: a second linear
        subject classifier reads every step's motion code (steps 1..T-1, each standardised per
        dimension over the batch's B*(T-1) steps by ``standardise_columns``, so that shrinking the
        code cannot hide the subject; each step labelled with its clip's subject) through a
        gradient-reversal layer (``losses.scale_gradient``, factor ``-lambda_id_adv``; Ganin &
        Lempitsky, ICML 2015), and learns in its own AdamW group at ``adversary_lr_scale * lr``.
        The adversary is our reading of the abstract's identity loss and "purified" motion: the
        orthogonality term only decorrelates the two codes across the batch, which does not stop the
        motion code from carrying the subject itself. It defaults to 0 (nothing is built or
        computed) and is off in every shipped config: on the synthetic set (measured with batch norm
        in the motion encoder) it did not lower the linear probe's score of the motion code on
        training subjects beyond the seed-to-seed spread (it ends at chance on its own head while a
        refitted probe still finds the subject; docs/models/lfd_tcmen.md).
        It is part of L_id and so is off with ``lambda_id: 0`` too.
      - L_cls: focal loss (gamma ``focal_gamma``) on the emotion logits.
      - Total: ``lambda_cls L_cls + sum lambda_k L_k`` over the DRL terms; a term with weight 0 is
        not computed (that is its switch). ``val/loss`` and ``test/loss`` are L_cls alone: the
        cycle and identity terms need training identities, which evaluation items do not carry.
      - TCME: motion codes of steps 1..T-1 (step t: onset -> frame t, the same step as flow[t-1])
        and flow features of a ResNet per flow step, fused per step and channel by a learned gate
        (GatedFusion), plus learned step embeddings, ``temporal_depth`` pre-norm transformer blocks
        over the steps, LayerNorm, mean over steps = the clip feature; Dropout + Linear head.
      - Optimiser: AdamW (``lr``, ``weight_decay``), no schedule.
    ``use_drl=False`` is the "no DRL" ablation: the flow branch, the same temporal model and head,
    trained with L_cls only (the DRL weights are then unused).

    ``probe_features`` (named so that a name is the same position in both models): 'clip_feature'
    (what the head reads) and 'temporal_input' (the steps the transformer reads, mean over steps:
    the gated fusion with DRL, the flow features without); with DRL also 'identity_code' (mean over
    frames) and 'motion_code' (mean over steps 1..T-1), whose counterpart in the no-DRL model is its
    'temporal_input' (the per-step motion representation before the temporal model).

    The architecture options (use_drl, frame_channels, flow_channels, num_frames, motion_input,
    motion_norm, drl_size, code_dim, encoder_blocks, base_width, decoder_width, fusion_dim,
    temporal_depth, num_heads, mlp_ratio, dropout) are :class:`LFDTCMENModel`'s (``num_frames``
    must match the datamodule's).

    Args:
        num_classes: linked from the datamodule.
        num_aus: linked from the datamodule (unused).
        num_identities: linked from the datamodule: classes of the identity loss, needed when
            ``lambda_id > 0``.
        lambda_orth: weight of the orthogonality loss.
        lambda_rec: weight of the reconstruction loss.
        lambda_cons: weight of the consistency loss.
        lambda_cycle: weight of the cycle loss.
        lambda_id: weight of the identity loss.
        lambda_cls: weight of the classification (focal) loss.
        lambda_id_adv: gradient-reversal factor of the motion-code adversary inside L_id (0 = none).
        adversary_lr_scale: the adversary's learning rate as a multiple of ``lr``.
        focal_gamma: gamma of the focal loss.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self,
        num_classes: int = 3,
        num_aus: int = 0,
        num_identities: int = 0,
        use_drl: bool = True,
        frame_channels: int = 3,
        flow_channels: int = 2,
        num_frames: int = 8,
        motion_input: MotionInput = "difference",
        motion_norm: Norm = "layer",
        drl_size: int = 64,
        code_dim: int = 64,
        encoder_blocks: Sequence[int] = (2, 2, 2, 2),
        base_width: int = 32,
        decoder_width: int = 16,
        fusion_dim: int = 128,
        temporal_depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        lambda_orth: float = 1.0,
        lambda_rec: float = 1.0,
        lambda_cons: float = 1.0,
        lambda_cycle: float = 1.0,
        lambda_id: float = 1.0,
        lambda_cls: float = 1.0,
        lambda_id_adv: float = 0.0,
        adversary_lr_scale: float = 1.0,
        focal_gamma: float = 2.0,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__(num_classes, num_aus, num_identities)
        check_loss_weights(lambda_orth=lambda_orth, lambda_rec=lambda_rec, lambda_cons=lambda_cons, lambda_cycle=lambda_cycle,
                           lambda_id=lambda_id, lambda_cls=lambda_cls, lambda_id_adv=lambda_id_adv)
        if use_drl and lambda_id > 0 and num_identities < 2:
            raise MERError(f"lambda_id > 0 needs num_identities >= 2 (the fold's training subjects), got {num_identities}; "
                           "it is linked from the datamodule's num_identities (or set lambda_id: 0)")
        if adversary_lr_scale <= 0:
            raise MERError(f"adversary_lr_scale multiplies the learning rate and must be > 0, got {adversary_lr_scale}")
        self.save_hyperparameters()
        self.model = LFDTCMENModel(
            num_classes, num_identities if use_drl and lambda_id > 0 else 0, use_drl, lambda_id_adv > 0, frame_channels,
            flow_channels, num_frames, motion_input, motion_norm, drl_size, code_dim, tuple(encoder_blocks), base_width, decoder_width, fusion_dim,
            temporal_depth, num_heads, mlp_ratio, dropout,
        )  # fmt: skip

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset({"flow", "frames", "identity"} if self.hparams.use_drl else {"flow"})

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.model(batch["flow"], batch.get("frames") if self.hparams.use_drl else None)

    def probe_features(self, batch: Batch) -> dict[str, Tensor]:
        out = self(batch)
        shared = {"clip_feature": out["features"], "temporal_input": out["temporal_input"].mean(dim=1)}
        if not self.hparams.use_drl:
            return shared
        return {**shared, "identity_code": out["identity_codes"].mean(dim=1),
                "motion_code": out["motion_codes"][:, 1:].mean(dim=1)}

    # -- losses --------------------------------------------------------------------------------
    def active_terms(self) -> list[str]:
        """The loss terms with a non-zero weight (only those are computed)."""
        drl = [t for t in DRL_TERMS if self.hparams[f"lambda_{t}"] > 0] if self.hparams.use_drl else []
        return (["cls"] if self.hparams.lambda_cls > 0 else []) + drl

    def loss_weights(self) -> dict[str, float]:
        return {t: float(self.hparams[f"lambda_{t}"]) for t in ("cls", *DRL_TERMS)}

    def loss_terms(self, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        active = self.active_terms()
        terms: dict[str, Tensor] = {}
        if "cls" in active:
            terms["cls"] = focal_loss(outputs["logits"], batch["label"], gamma=self.hparams.focal_gamma)
        if not set(active) & set(DRL_TERMS):
            return terms
        ids, motion, clip = outputs["identity_codes"], outputs["motion_codes"], outputs["clip"]
        if "orth" in active:
            terms["orth"] = cross_correlation_loss(ids.flatten(0, 1), motion.flatten(0, 1))
        if "rec" in active:
            terms["rec"] = F.l1_loss(self.rebuild(ids, motion), clip)
        if "cons" in active:
            terms["cons"] = consistency_loss(ids, motion[:, 0])
        if "cycle" in active:
            terms["cycle"] = self.cycle_loss(batch["identity"], outputs)
        if "id" in active:
            identity_logits = self.model.identity_head(ids.mean(dim=1))
            adversary = self.motion_adversary_loss(batch["identity"], motion)
            terms["id"] = identity_cross_entropy(identity_logits, batch["identity"]) + adversary
        return terms

    def motion_adversary_loss(self, identity: Tensor, motion_codes: Tensor) -> Tensor:
        """Cross-entropy of the subject adversary on every step's motion code (steps 1..T-1, each
        with its clip's subject) behind a gradient reversal of strength ``lambda_id_adv``; 0
        without an adversary."""
        if self.model.motion_identity_head is None:
            return motion_codes.new_zeros(())
        steps = motion_codes[:, 1:]
        codes = scale_gradient(standardise_columns(steps.flatten(0, 1)), -self.hparams.lambda_id_adv)
        step_identity = identity.repeat_interleave(steps.shape[1])
        return identity_cross_entropy(self.model.motion_identity_head(codes), step_identity)

    def rebuild(self, identity_codes: Tensor, motion_codes: Tensor) -> Tensor:
        """Every frame t rebuilt from (onset identity code, motion code of t): (B, T, C, s, s)."""
        return self.model.decode(identity_codes[:, :1].expand_as(identity_codes), motion_codes)

    def swap(self, identity: Tensor, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The cycle path: per clip, a frame rebuilt from (own onset identity code, partner's motion
        code of a random step), re-encoded. Returns 'partner', 'valid', 'step' (B,) in 1..T-1,
        'swapped' (B, C, s, s), 're_identity' and 're_motion' (B, D)."""
        partner, valid = different_subject_partners(identity)
        ids, motion, clip = outputs["identity_codes"], outputs["motion_codes"], outputs["clip"]
        step = torch.randint(1, motion.shape[1], (len(partner),), device=partner.device)
        swapped = self.model.decode(ids[:, 0], motion[partner, step])
        return {
            "partner": partner, "valid": valid, "step": step, "swapped": swapped,
            "re_identity": self.model.encode_identity(swapped),
            "re_motion": self.model.encode_motion(swapped, clip[:, 0]),
        }  # fmt: skip

    def cycle_loss(self, identity: Tensor, outputs: dict[str, Tensor]) -> Tensor:
        """MSE of the re-encoded identity code to the own onset identity code plus MSE of the
        re-encoded motion code to the partner's, averaged over the clips that have a partner."""
        cycle = self.swap(identity, outputs)
        ids, motion = outputs["identity_codes"], outputs["motion_codes"]
        identity_error = (cycle["re_identity"] - ids[:, 0]).pow(2).mean(dim=1)
        motion_error = (cycle["re_motion"] - motion[cycle["partner"], cycle["step"]]).pow(2).mean(dim=1)
        return masked_mean(identity_error + motion_error, cycle["valid"])

    def evaluation_loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        """L_cls: evaluation items carry no training identity (see the class docstring)."""
        return focal_loss(outputs["logits"], batch["label"], gamma=self.hparams.focal_gamma)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW; the motion-code adversary (if any) in its own group at ``adversary_lr_scale * lr``."""
        head = self.model.motion_identity_head
        adversary = {id(p) for p in head.parameters()} if head is not None else set()
        groups = [{"params": [p for p in self.parameters() if id(p) not in adversary]}]
        if head is not None:
            groups.append({"params": list(head.parameters()), "lr": self.hparams.adversary_lr_scale * self.hparams.lr})
        return torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
