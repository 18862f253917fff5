"""MEDN training logic: total loss eq. 16 and the optimiser of §IV-D."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from losses import au_bce_loss, focal_loss, orthogonal_loss

from ..base import Batch, MERClassifier, WeightedLossMixin, check_loss_weights
from .torch_model import Fusion, MEDNModel, MotionBackbone


class MEDN(WeightedLossMixin, MERClassifier):
    """Motion-Emotion feature Decoupling Network (Hu et al., arXiv 2604.17899).

    L_total = L_cls (focal, eq. 15) + λ_au · L_au (eq. 1) + λ_orth · L_orth (eq. 8)  (eq. 16).
    Ablations of Tables V-VII: ``sparse_rates=[1]`` (plain ViT), ``[4]`` (single rate),
    ``fusion=weighted_sum``, ``lambda_orth=0`` (no orthogonal loss), ``motion_backbone``.
    Where a data source has no AU labels (``num_aus=0`` or ``au_mask`` false) the AU term is 0.

    The architecture options (motion_backbone, flow_channels, image_size, seq_len, patch_size,
    embed_dim, depth, num_heads, mlp_ratio, sparse_rates, fusion, dropout, vit_patch_size, vit_width,
    vit_depth, vit_heads) are :class:`MEDNModel`'s (the ``vit_*`` set the size of the ``vit_b16``
    motion backbone; ViT-B/16's 16/768/12/12 by default).

    Args:
        num_classes: linked from the datamodule.
        num_aus: linked from the datamodule: AUs of the AU loss.
        num_identities: linked from the datamodule (unused).
        lambda_au: weight of the AU loss (eq. 16).
        lambda_orth: weight of the orthogonal loss (eq. 16).
        focal_gamma: γ of the focal loss (2 in the paper).
        lr: AdamW learning rate (1e-4).
        weight_decay: AdamW weight decay (1e-3).
        motion_lr_step: epochs between decays of the motion branch's learning rate (100).
        motion_lr_gamma: decay factor of the motion branch's learning rate (0.1).
    """

    fold_batch_equivalence = "docs/speed.md, statistical equivalence: the README main job, seeds 0-4"

    def __init__(
        self,
        num_classes: int = 3,
        num_aus: int = 0,
        num_identities: int = 0,
        motion_backbone: MotionBackbone = "led",
        flow_channels: int = 2,
        image_size: int = 144,
        seq_len: int = 7,
        patch_size: int = 18,
        embed_dim: int = 64,
        depth: int = 1,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        sparse_rates: Sequence[int] = (1, 2, 4, 8),
        fusion: Fusion = "cofm",
        dropout: float = 0.1,
        vit_patch_size: int = 16,
        vit_width: int = 768,
        vit_depth: int = 12,
        vit_heads: int = 12,
        lambda_au: float = 1.0,
        lambda_orth: float = 1.0,
        focal_gamma: float = 2.0,
        lr: float = 1e-4,
        weight_decay: float = 1e-3,
        motion_lr_step: int = 100,
        motion_lr_gamma: float = 0.1,
    ) -> None:
        super().__init__(num_classes, num_aus, num_identities)
        check_loss_weights(lambda_au=lambda_au, lambda_orth=lambda_orth)
        self.save_hyperparameters()
        self.model = MEDNModel(
            num_classes, num_aus, motion_backbone, flow_channels, image_size, seq_len, patch_size,
            embed_dim, depth, num_heads, mlp_ratio, tuple(sparse_rates), fusion, dropout,
            vit_patch_size=vit_patch_size, vit_width=vit_width, vit_depth=vit_depth, vit_heads=vit_heads,
        )  # fmt: skip

    @property
    def inputs(self) -> frozenset[str]:
        motion_input = "frames" if self.hparams.motion_backbone == "led" else "apex_flow"
        return frozenset({"flow", motion_input, *(("au",) if self.num_aus else ())})

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.model(batch["flow"], batch.get("frames"), batch.get("apex_flow"))

    def probe_features(self, batch: Batch) -> dict[str, Tensor]:
        """Motion f_m and emotion f_e features (before eq. 5) and their orthogonal components
        f_m⊥, f_e⊥ (eqs. 5-7, what the fusion reads)."""
        out = self(batch)
        return {"motion": out["f_m"], "emotion": out["f_e"],
                "motion_perp": out["f_m_perp"], "emotion_perp": out["f_e_perp"]}

    def loss_terms(self, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        terms = {
            "cls": focal_loss(outputs["logits"], batch["label"], gamma=self.hparams.focal_gamma),
            "orth": orthogonal_loss(outputs["f_m_perp"], outputs["f_e_perp"]),
        }
        if self.num_aus:
            terms["au"] = au_bce_loss(outputs["au_logits"], batch["au"], batch.get("au_mask"))
        return terms

    def loss_weights(self) -> dict[str, float]:
        return {"au": self.hparams.lambda_au, "orth": self.hparams.lambda_orth}

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (lr 1e-4, wd 1e-3); the motion branch's lr × γ every `motion_lr_step` epochs (§IV-D)."""
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            [{"params": list(self.model.motion_parameters())}, {"params": list(self.model.other_parameters())}],
            lr=hp.lr, weight_decay=hp.weight_decay,
        )  # fmt: skip
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [lambda epoch: hp.motion_lr_gamma ** (epoch // hp.motion_lr_step), lambda epoch: 1.0]
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
