"""MEDN: Motion-Emotion feature Decoupling Network (arXiv 2604.17899), pure PyTorch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

from torch import Tensor, nn

from lightning_modules.backbones import resnet18, resnet34
from lightning_modules.backbones.vit import ViT
from lightning_modules.medn.cofm import CoFM, WeightedSumFusion
from lightning_modules.medn.led import LEDMotionEncoder
from lightning_modules.medn.sevit import SEVit
from losses.orthogonal import orthogonal_components

MotionBackbone = Literal["led", "resnet18", "resnet34", "vit_b16"]
Fusion = Literal["cofm", "weighted_sum"]


class MEDNModel(nn.Module):
    """Motion branch (LED on the RGB clip, or ResNet-18/34 / ViT-B/16 on the onset-apex flow;
    Table VII) with an AU head (eq. 1), SEVit emotion branch on the flow sequence (eqs. 2-4),
    orthogonal components (eqs. 5-7), fusion (CoFM eqs. 9-14 or weighted sum, Table V No.3),
    classifier.

    Both branches produce D = ``embed_dim`` features. With the LED backbone the clip has
    ``seq_len + 1`` frames (flow is computed w.r.t. the first frame, §IV-B).
    Ablations: plain ViT ``sparse_rates=(1,)``; single rate ``(4,)``; ``fusion="weighted_sum"``;
    no orthogonal loss is ``lambda_orth=0`` in the training code.

    ``motion_backbone="vit_b16"``: a plain :class:`ViT` whose size is ``vit_patch_size``,
    ``vit_width``, ``vit_depth``, ``vit_heads`` (ViT-B/16 by default: 16, 768, 12, 12; the paper
    names ViT-B/16 without other details, smaller values are for tests). Its input side is
    ``image_size`` rounded up to a multiple of ``vit_patch_size`` (our choice; 144 = 9 x 16 needs
    no resizing); other flow sizes are resized bilinearly to it.
    """

    def __init__(
        self,
        num_classes: int,
        num_aus: int,
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
    ):
        super().__init__()
        self.motion_backbone = motion_backbone
        self.motion = self._build_motion(
            motion_backbone, flow_channels, seq_len, image_size, embed_dim, dropout,
            (vit_patch_size, vit_width, vit_depth, vit_heads),
        )  # fmt: skip
        self.au_head = nn.Linear(embed_dim, num_aus) if num_aus else None
        self.sevit = SEVit(
            flow_channels, image_size, seq_len, patch_size, embed_dim, depth, num_heads,
            mlp_ratio, sparse_rates, dropout,
        )  # fmt: skip
        if fusion == "cofm":
            self.fusion: nn.Module = CoFM(embed_dim, num_heads)
        elif fusion == "weighted_sum":
            self.fusion = WeightedSumFusion()
        else:
            raise ValueError(f"unknown fusion {fusion!r}; expected 'cofm' or 'weighted_sum'")
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, num_classes))

    @staticmethod
    def _build_motion(
        name: str, flow_channels: int, seq_len: int, image_size: int, dim: int, dropout: float,
        vit_size: tuple[int, int, int, int],
    ) -> nn.Module:
        """Table VII backbone; ``vit_size`` = (patch, width, depth, heads)."""
        if name == "led":
            return LEDMotionEncoder(num_frames=seq_len + 1, feature_dim=dim, dropout=dropout)
        if name == "resnet18":
            return resnet18(flow_channels, dim)
        if name == "resnet34":
            return resnet34(flow_channels, dim)
        if name == "vit_b16":
            patch, width, depth, heads = vit_size
            side = -(-image_size // patch) * patch
            return ViT(flow_channels, dim, side, patch, width, depth, heads, dropout=dropout)
        raise ValueError(
            f"unknown motion_backbone {name!r}; expected 'led', 'resnet18', 'resnet34' or 'vit_b16'"
        )

    def motion_parameters(self) -> Iterator[nn.Parameter]:
        """Motion backbone + AU head (own lr schedule, §IV-D)."""
        yield from self.motion.parameters()
        if self.au_head is not None:
            yield from self.au_head.parameters()

    def other_parameters(self) -> Iterator[nn.Parameter]:
        """Everything not in :meth:`motion_parameters`."""
        motion = {id(p) for p in self.motion_parameters()}
        return (p for p in self.parameters() if id(p) not in motion)

    def forward(
        self, flow: Tensor, frames: Tensor | None = None, apex_flow: Tensor | None = None
    ) -> dict[str, Tensor]:
        """flow (B, T', C, H, W); frames (B, T'+1, 3, H, W) in [0, 1] for LED; apex_flow
        (B, C, H, W) for the ResNet and ViT backbones. Returns logits, au_logits, f_m, f_e, f_m_perp,
        f_e_perp and the fusion weights w_m, w_e (B, 1)."""
        if self.motion_backbone == "led":
            if frames is None:
                raise ValueError("motion_backbone='led' needs `frames` (B, T, 3, H, W)")
            f_m = self.motion(frames)
        else:
            if apex_flow is None:
                raise ValueError(f"motion_backbone={self.motion_backbone!r} needs `apex_flow`")
            f_m = self.motion(apex_flow)
        f_e = self.sevit(flow)
        f_m_perp, f_e_perp = orthogonal_components(f_m, f_e)
        fused = self.fusion(f_m_perp, f_e_perp)
        return {
            "logits": self.classifier(fused.fused),
            "au_logits": self.au_head(f_m) if self.au_head is not None else f_m.new_zeros(len(f_m), 0),
            "f_m": f_m,
            "f_e": f_e,
            "f_m_perp": f_m_perp,
            "f_e_perp": f_e_perp,
            "w_m": fused.w_m,
            "w_e": fused.w_e,
        }
