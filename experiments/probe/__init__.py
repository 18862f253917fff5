"""``mer probe RUN_DIR``: how much subject identity the features of each finished fold carry.

For every finished fold of a ``mer loso`` run: rebuild its model from the run's config, load its
last checkpoint, take the features the model declares (``probe_features``) on the fold's training
subjects' samples (train + inner val; never its held-out subjects), split each subject's samples
half/half (seeded), fit a linear probe (logistic regression on standardised features) that
predicts the subject on one half and score it on the other (balanced accuracy, chance level).
Folds are pooled by their held-out predictions (see ``output.POOLING``). Writes probe.json and
probe.png into the run dir (or --output).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from jsonargparse import ArgumentParser, Namespace

from datamodules.errors import MERError

if TYPE_CHECKING:
    from ..runner.plan import RunPlan


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        description="Linear probe of subject identity on the features each model declares, for every finished "
                    "fold of a `mer loso` run dir (its training subjects only), pooled over folds. "
                    "Prints a table; writes probe.json and probe.png.")
    parser.add_argument("run_dir", help="a run directory written by `mer loso`")
    parser.add_argument("--output", type=Optional[str], default=None,
                        help="folder for probe.json and probe.png (default RUN_DIR)")
    parser.add_argument("--folds", type=Optional[str], default=None,
                        help="only these folds, e.g. '0-3,7' (default every finished fold)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where features are computed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-subject fit/held-out split")
    return parser


def run(args: Namespace) -> None:
    from tqdm import tqdm

    from ..reporting import write_json
    from ..runner.folds import FoldPaths, parse_folds
    from .extract import fold_features
    from .linear import FoldProbe, pool_folds, probe_fold, split_per_subject
    from .output import POOLING, plot_probe, probe_table

    run_dir = Path(args.run_dir)
    plan = load_plan(run_dir)
    check_device(args.device)
    selected = parse_folds(args.folds, plan.n_folds)
    finished = [k for k in selected if FoldPaths(run_dir, k).done()]
    if not finished:
        raise MERError(f"{run_dir} has no finished fold{' among --folds ' + args.folds if args.folds else ''}; "
                       "finish some with `mer loso` first")
    notes = [f"{plan.fold_name(k)} is not finished: not probed" for k in selected if k not in finished]
    probes: dict[str, list[FoldProbe]] = {}
    dims: dict[str, int] = {}
    per_fold: list[dict[str, Any]] = []
    for k in tqdm(finished, desc="probe", unit="fold", file=sys.stderr):
        if not FoldPaths(run_dir, k).last_ckpt.is_file():
            notes.append(f"{plan.fold_name(k)}: {FoldPaths(run_dir, k).last_ckpt} is missing: not probed")
            continue
        data = fold_features(plan, run_dir, k, args.device)
        split = split_per_subject(data.subjects, seed=[args.seed, k])
        notes += [f"{plan.fold_name(k)}: subject {s} has < 2 training samples: not probed" for s in split.skipped]
        per_fold.append({"fold": k, "test_subjects": plan.test_subjects[k], "probed_subjects": split.subjects,
                         "skipped_subjects": split.skipped, "n_fit": len(split.fit), "n_heldout": len(split.heldout)})
        if len(split.subjects) < 2:
            notes.append(f"{plan.fold_name(k)}: fewer than 2 subjects with >= 2 samples: not probed")
            continue
        for name, features in data.features.items():
            probes.setdefault(name, []).append(probe_fold(k, features, data.subjects, split))
            dims[name] = features.shape[1]
    if not probes:
        raise MERError(f"{run_dir}: no finished fold has 2 training subjects with 2 samples each to probe")
    notes += [f"feature {name}, fold {p.fold}: the logistic regression did not converge"
              for name, folds in probes.items() for p in folds if not p.converged]
    result = {
        "run_dir": str(run_dir.resolve()),
        "model": str(plan.config.get("model", {}).get("class_path", "?")).rsplit(".", 1)[-1],
        "config_hash": plan.config_hash,
        "folds": sorted({p.fold for folds in probes.values() for p in folds}),
        "method": "per fold: each training subject's samples split ceil(n/2) fit / rest held out "
                  f"(seed [{args.seed}, fold]); logistic regression (L2, C=1) on features standardised on the "
                  "fit part predicts the subject; balanced accuracy on the held-out part",
        "pooling": POOLING,
        "features": {name: {"dim": dims[name], "pooled": pool_folds(folds), "per_fold": [p.summary() for p in folds]}
                     for name, folds in probes.items()},
        "per_fold": per_fold,
        "notes": notes,
    }
    output = Path(args.output) if args.output else run_dir
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "probe.json", result)
    plot_probe(result, output / "probe.png")
    print(probe_table(result))
    print(f"wrote {output / 'probe.json'} and {output / 'probe.png'}")


def load_plan(run_dir: Path) -> RunPlan:
    """The run's plan; a folder of per-seed runs (seed_N/) is named as such."""
    from ..runner.plan import RunPlan

    if not (run_dir / "run.json").is_file():
        seeds = sorted(p.parent.name for p in run_dir.glob("*/run.json"))
        if seeds:
            raise MERError(f"{run_dir} holds several runs ({', '.join(seeds)}); probe one of them, e.g. "
                           f"`mer probe {run_dir / seeds[0]}`")
        raise MERError(f"{run_dir} is not a run dir of `mer loso` (no run.json); give the --output folder of a LOSO run")
    return RunPlan.load(run_dir)


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise MERError("--device cuda: no CUDA device is visible here; use --device cpu")
