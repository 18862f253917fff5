"""What an annotation adapter declares about one database; the parsing itself is shared (rows.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .protocols import Protocol
from .sheet import cell_text


@dataclass(frozen=True)
class SubjectFormat:
    """Subject ids as the release names its folders: prefix + zero-padded number.

    Any of 1, '01', 'sub1', 'SUB01' reads as 'sub01' for SubjectFormat('sub', 2).
    """

    prefix: str
    width: int = 0

    def normalise(self, cell: object) -> str | None:
        """The folder name, or None when the cell is not a subject id of this database."""
        match = re.fullmatch(rf"(?:{re.escape(self.prefix)})?\s*(\d+)", cell_text(cell), re.IGNORECASE)
        return None if match is None else self.format(int(match[1]))

    def format(self, number: int) -> str:
        return f"{self.prefix}{number:0{self.width}d}"


@dataclass(frozen=True)
class Database:
    """One database's annotation conventions.

    Args:
        title: name used in messages.
        subject: how subject ids are written on disk.
        emotions: every emotion the release uses, normalised (lower case), in label order.
        protocols: protocol name -> Protocol over `emotions`.
        emotion_aliases: other spellings (normalised) -> emotion; also SMIC's numeric codes.
        has_aus: whether the sheet has an action-unit column.
        sample_id: template over subject, clip and onset; must be unique per clip.
        extra_columns: output column -> accepted sheet column names (normalised), copied as text
            when the sheet has them (what a frame loader needs besides the standard fields).
        lowercase_clip: clip folders are lower case on disk; other spellings are read so, with a warning.
        clip_names: regular expression of the release's clip names (a sheet where none matches is
            rejected as another database's), and `clip_example` one such name.
    """

    title: str
    subject: SubjectFormat
    emotions: tuple[str, ...]
    protocols: Mapping[str, Protocol]
    emotion_aliases: Mapping[str, str] = field(default_factory=dict)
    has_aus: bool = True
    sample_id: str = "{subject}_{clip}"
    extra_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    lowercase_clip: bool = False
    clip_names: str = r".+"
    clip_example: str = ""

    def __post_init__(self) -> None:
        for name, protocol in self.protocols.items():
            unknown = set(protocol.mapping) - set(self.emotions)
            if unknown:
                raise ValueError(f"{self.title} protocol {name!r} maps unknown emotions {sorted(unknown)}")

    def emotion(self, raw: str) -> str | None:
        """The normalised emotion ('Happiness' -> 'happiness'), None when the database has no such emotion."""
        spelled = " ".join(raw.lower().split())
        emotion = self.emotion_aliases.get(spelled, spelled)
        return emotion if emotion in self.emotions else None
