"""Evaluation protocols: which emotions a protocol keeps and the class each one becomes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

CDE_CLASSES = ("negative", "positive", "surprise")


@dataclass(frozen=True)
class Protocol:
    """Class names in label order, and the database emotion -> class mapping (others are excluded).

    `left_out` holds sample ids that the protocol's official list leaves out although their emotion
    maps to a class, each with the reason.
    """

    class_names: tuple[str, ...]
    mapping: Mapping[str, str]
    left_out: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.mapping.values()) - set(self.class_names)
        if unknown:
            raise ValueError(f"mapping targets {sorted(unknown)} are not classes {self.class_names}")


def own_classes(*emotions: str) -> Protocol:
    """Each listed emotion is a class of its own, in the order given."""
    return Protocol(emotions, {emotion: emotion for emotion in emotions})


def cde(negative: tuple[str, ...], positive: str, surprise: str, *, others: str | None = None,
        left_out: Mapping[str, str] | None = None) -> Protocol:
    """MEGC2019 composite mapping (negative, positive, surprise), optionally with an 'others' class."""
    mapping = {emotion: "negative" for emotion in negative} | {positive: "positive", surprise: "surprise"}
    if others is None:
        return Protocol(CDE_CLASSES, mapping, left_out or {})
    return Protocol((*CDE_CLASSES, "others"), mapping | {others: "others"}, left_out or {})
