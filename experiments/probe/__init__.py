"""``mer probe RUN_DIR``: how much subject identity the features of each finished fold carry.

For every finished fold of a ``mer loso`` run: rebuild its model from the run's config, load its
last checkpoint, take the features the model declares (``probe_features``) on the fold's training
subjects' samples (train + inner val; never its held-out subjects; with ``--subjects held_out``
its held-out subjects' samples instead, which needs folds of >= 2 test subjects), split each subject's samples
half/half (seeded), fit a linear probe (logistic regression on standardised features) that
predicts the subject on one half and score it on the other (balanced accuracy, chance level).
Folds are pooled by their held-out predictions (see ``output.POOLING``). Writes probe.json and
probe.png into the run dir (or --output); with --folds, probe_folds-<folds>.json/.png; the held-out
subjects' probe writes probe_held_out*.json/.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from jsonargparse import ArgumentParser, Namespace

from datamodules.errors import MERError

from ..atomic_files import write_json
from ..output_folder import check_output_folder, writing_into
from ..runner.fold_selection import format_folds

if TYPE_CHECKING:
    from ..runner.run_plan import RunPlan


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="mer probe", exit_on_error=False,
        description="Linear probe of subject identity on the features each model declares, for every finished "
                    "fold of a `mer loso` run dir (its training subjects only), pooled over folds. "
                    "Prints a table; writes probe.json and probe.png, named probe_folds-<folds>.* where not every fold "
                    "of the run was probed (--folds, or a run still training).")
    parser.add_argument("run_dir", help="a run directory written by `mer loso`")
    parser.add_argument("--output", type=Optional[str], default=None,
                        help="folder for probe.json and probe.png (default RUN_DIR)")
    parser.add_argument("--folds", type=Optional[str], default=None,
                        help="only these folds, e.g. '0-3,7' (default every finished fold)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where features are computed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-subject fit/held-out split")
    parser.add_argument("--subjects", default="training", choices=["training", "held_out"],
                        help="whose samples are probed: each fold's training subjects (default) or its held-out "
                             "subjects (folds must hold out >= 2 subjects, e.g. subject k-fold)")
    return parser


def main(argv: list[str]) -> None:
    """`mer probe` on `argv`."""
    run(build_parser().parse_args(argv))


def run(args: Namespace) -> None:
    from .output import plot_probe, probe_table
    from .probe_run import probe_run

    run_dir = Path(args.run_dir)
    plan = load_plan(run_dir)
    check_device(args.device)
    output = Path(args.output) if args.output else run_dir
    check_output_folder(output)
    result = probe_run(plan, run_dir, args.folds, args.device, args.seed, args.subjects)
    stem = output / output_stem(result["folds"], plan, args.subjects)
    with writing_into(output):
        output.mkdir(parents=True, exist_ok=True)
        write_json(stem.with_suffix(".json"), result)
    plot_probe(result, stem.with_suffix(".png"))
    print(probe_table(result))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")


def output_stem(probed: list[int], plan: RunPlan, subjects: str = "training") -> str:
    """'probe' where every fold of the run was probed; else named by the folds probed, 'probe_folds-1-3'
    (a subset, e.g. of a run still training or of --folds 1-3, never takes the whole run's name);
    'probe_held_out...' for the held-out subjects' probe."""
    stem = "probe" if subjects == "training" else "probe_held_out"
    return stem if sorted(probed) == list(range(plan.n_folds)) else f"{stem}_folds-{format_folds(sorted(probed))}"


def load_plan(run_dir: Path) -> RunPlan:
    """The run's plan; a folder of runs (e.g. seed_N/ of `mer loso --seeds`) is named as such."""
    from ..runner.run_plan import RunPlan

    if not (run_dir / "run.json").is_file():
        runs = sorted(p.parent.name for p in run_dir.glob("*/run.json"))
        if runs:
            raise MERError(f"{run_dir} is not a run dir but holds runs ({', '.join(runs)}); probe one of them, e.g. "
                           f"`mer probe {run_dir / runs[0]}`")
        raise MERError(f"{run_dir} is not a run dir of `mer loso` (no run.json); give the --output folder of a LOSO run")
    return RunPlan.load(run_dir)


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise MERError("--device cuda: no CUDA device is visible here; use --device cpu")
