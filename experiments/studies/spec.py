"""A study spec (YAML): rows (configs + overrides) run with `mer loso` per replicate seed, then measured.

    name: medn_mechanism
    title: "MEDN: orthogonal and AU losses on a set with shared-AU (hard) emotions"
    seeds: [41, 42, 43]          # replicate s: seed_everything s and, with fresh_data, generator_seed s
    fresh_data: true             # every replicate draws its own synthetic set (default true)
    loso_args: [--workers, "1", --threads-per-fold, "1"]  # passed to every `mer loso`
    rows:
      - name: MEDN (both losses)
        configs: [configs/studies/medn/medn.yaml]
      - name: no orthogonal loss
        configs: [configs/studies/medn/medn.yaml]
        args: [--model.init_args.lambda_orth, "0"]
    measures: [scores, hard_scores, probe_training, medn_decoupling]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from datamodules.errors import MERError

MEASURES = ("scores", "hard_scores", "probe_training", "probe_held_out", "medn_decoupling", "mine_judge")


@dataclass(frozen=True)
class Row:
    name: str
    configs: list[str]
    args: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        """The row's folder name: its name in lower case, runs of other characters as '_'."""
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


@dataclass(frozen=True)
class StudySpec:
    name: str
    title: str
    seeds: list[int]
    rows: list[Row]
    measures: list[str]
    fresh_data: bool = True
    loso_args: list[str] = field(default_factory=list)


def load_spec(path: Path) -> StudySpec:
    """The spec at `path`; a one-line error naming the file and the field for anything malformed."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise MERError(f"{path}: cannot read the study spec ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise MERError(f"{path}: a study spec is a mapping with name, title, seeds, rows and measures")
    missing = [key for key in ("name", "seeds", "rows", "measures") if key not in raw]
    if missing:
        raise MERError(f"{path}: missing {', '.join(missing)}")
    unknown = sorted(set(raw["measures"]) - set(MEASURES))
    if unknown:
        raise MERError(f"{path}: unknown measures {unknown}; choose from {list(MEASURES)}")
    seeds = raw["seeds"]
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise MERError(f"{path}: seeds must be distinct non-negative integers, got {seeds}")
    rows = []
    for item in raw["rows"]:
        if not isinstance(item, dict) or "name" not in item or not item.get("configs"):
            raise MERError(f"{path}: every row needs a name and a list of configs, got {item}")
        rows.append(Row(str(item["name"]), [str(c) for c in item["configs"]], [str(a) for a in item.get("args", [])]))
    slugs = [row.slug for row in rows]
    if len(set(slugs)) != len(slugs) or not all(slugs):
        raise MERError(f"{path}: row names must give distinct folder names, got {slugs}")
    return StudySpec(str(raw["name"]), str(raw.get("title", raw["name"])), list(seeds), rows, list(raw["measures"]),
                     bool(raw.get("fresh_data", True)), [str(a) for a in raw.get("loso_args", [])])
