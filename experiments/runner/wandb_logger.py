"""The fold runs' W&B logger: Lightning's, without the deprecated ``anonymous`` argument."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import loggers


class WandbLogger(loggers.WandbLogger):
    """Lightning's ``WandbLogger`` (2.6.6) hands ``anonymous=None`` to ``wandb.init`` when not asked for it,
    and wandb (0.19 on) warns "The anonymous setting has no effect" for any value given, on every fold. This
    logger leaves the unset argument out; everything else is Lightning's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
