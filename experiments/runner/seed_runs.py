"""``mer loso --seeds 0,1,2``: the whole fold plan once per seed, then mean ± std of the pooled scores.

Seed N is the config with ``seed_everything: N`` (fold k then trains with seed N + k) run into
``OUTPUT/seed_N``: an ordinary run directory, whose folds are runner jobs like any (sequential,
``--workers``, ``--devices``, SLURM) and which resumes like any. The fold plan (``split_seed``) is
the same for every seed, so every seed tests the same folds. Once every seed is pooled,
``OUTPUT/seeds_summary.json`` and ``seeds_summary.png`` hold the mean ± standard deviation of the
pooled UF1, UAR and accuracy over the seeds (overall, per test set of an official split, per
database of a composite set), and the table is printed. The standard deviation is the sample one
(ddof 1; our choice: the seeds are a sample of the training randomness), null for a single seed.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

from datamodules.errors import MERError

from ..atomic_files import write_json
from ..metrics import mean_std
from ..plots import pyplot, save_figure
from .options import LosoOptions
from .pooling import POOLED_SCORES as SCORES, aggregate, wandb_summary
from .run_plan import RunConfig, RunPlan
from .wandb_runs import sweep_trial, trial_run

SUMMARY_JSON = "seeds_summary.json"
SUMMARY_PNG = "seeds_summary.png"


def seed_dir(output: Path, seed: int) -> Path:
    return Path(output) / f"seed_{seed}"


def seed_dirs(output: Path) -> dict[int, Path]:
    """The seed run directories already in `output`, by seed."""
    found = {}
    for path in Path(output).glob("seed_*"):
        number = path.name.removeprefix("seed_")
        if path.is_dir() and number.isdigit():
            found[int(number)] = path
    return dict(sorted(found.items()))


def seed_config(config_yaml: str, seed: int) -> str:
    """The resolved config with ``seed_everything: seed``."""
    return RunConfig.from_yaml(config_yaml).with_seed(seed).to_yaml()


def check_output(output: Path, seeds: bool) -> None:
    """A seeds run's OUTPUT holds seed_N run directories only, a single run's never any."""
    if seeds and (Path(output) / "run.json").exists():
        raise MERError(f"{output} holds a single-seed run (run.json); --seeds writes {output}/seed_N/ run directories: "
                       "use another --output")
    if not seeds and seed_dirs(output):
        raise MERError(f"{output} holds the runs of several seeds (seed_N/); resume them with --seeds, or use another --output")


def score_table(per_seed: dict[int, dict[str, Any]], scope: tuple[str, ...] = ()) -> dict[str, Any]:
    """Per score: the per-seed values of `scope` (e.g. ('per_test_set', 'testA')), their mean and std."""
    table = {}
    for score in SCORES:
        values = []
        for metrics in per_seed.values():
            for key in scope:
                metrics = metrics[key]
            values.append(float(metrics[score]))
        mean, std = mean_std(values)
        table[score] = {"mean": mean, "std": None if math.isnan(std) else std, "per_seed": values}
    return table


def summarise(output: Path, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Write seeds_summary.json and .png into `output`, print the table; `per_seed`: each seed's metrics.json."""
    first = next(iter(per_seed.values()))
    summary: dict[str, Any] = {
        "seeds": list(per_seed),
        "runs": {str(seed): f"seed_{seed}" for seed in per_seed},
        "std": "sample standard deviation over the seeds (ddof 1); null for one seed",
        "n_samples": first["n_samples"],
        "pooled": score_table(per_seed),
    }
    for group in ("per_test_set", "per_dataset"):
        names = list(first.get(group) or {})
        if (group == "per_test_set" and names) or len(names) > 1:  # test sets always, databases of a composite
            summary[group] = {name: score_table(per_seed, (group, name)) for name in names}
    write_json(output / SUMMARY_JSON, summary)
    plot_seeds(summary, output / SUMMARY_PNG, output.name)
    log_mean_to_sweep_trial(output, summary)
    print(seeds_table(summary))
    print(f"outputs: {output / SUMMARY_JSON}, {output / SUMMARY_PNG}")
    return summary


def log_mean_to_sweep_trial(output: Path, summary: dict[str, Any]) -> None:
    """Under ``wandb agent``: the mean over the seeds as the trial run's ``pooled/<score>`` (the sweep
    metric) with ``pooled/<score>_std`` beside it, also per test set / database; nothing otherwise."""
    if sweep_trial() is None:
        return
    plan = RunPlan.load(seed_dir(output, summary["seeds"][0]))
    if plan.wandb == "disabled":
        return
    values = {**wandb_summary(seeds_metrics(summary, "mean")),
              **{f"{name}_std": std for name, std in wandb_summary(seeds_metrics(summary, "std")).items()}}
    config = {**{k: v for k, v in plan.config.values.items() if k != "seed_everything"}, "seeds": summary["seeds"]}
    with trial_run(plan, output, config) as run:
        run.log(values)
        run.summary.update(values)


def seeds_metrics(summary: dict[str, Any], statistic: str) -> dict[str, Any]:
    """A seeds summary as pooled metrics (``metrics.json``'s layout) holding one `statistic` over the seeds:
    'mean' or 'std' (None for a single seed)."""
    def values(table: dict[str, Any]) -> dict[str, float | None]:
        return {score: entry[statistic] for score, entry in table.items()}

    return {**values(summary["pooled"]),
            **{group: {name: values(table) for name, table in (summary.get(group) or {}).items()}
               for group in ("per_dataset", "per_test_set")}}


def _mean_std(entry: dict[str, Any]) -> str:
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}" if entry["std"] is not None else f"{entry['mean']:.4f}"


def seeds_table(summary: dict[str, Any]) -> str:
    """Per seed the pooled UF1/UAR/Acc, then mean ± std over the seeds (overall and per test set / database)."""
    seeds = summary["seeds"]
    lines = [f"{len(seeds)} seed(s) {', '.join(map(str, seeds))}: pooled scores, mean ± std (ddof 1) over seeds",
             f"{'':<14}" + "".join(f"{name.upper() if name != 'acc' else 'Acc':>19}" for name in SCORES)]
    for i, seed in enumerate(seeds):
        lines.append(f"{'seed ' + str(seed):<14}" + "".join(f"{summary['pooled'][s]['per_seed'][i]:>19.4f}" for s in SCORES))
    rows = [("all", summary["pooled"])] + [(name, table) for group in ("per_test_set", "per_dataset")
                                          for name, table in (summary.get(group) or {}).items()]
    for name, table in rows:
        lines.append(f"{name:<14}" + "".join(f"{_mean_std(table[s]):>19}" for s in SCORES))
    return "\n".join(lines)


def plot_seeds(summary: dict[str, Any], path: Path, title: str) -> None:
    """Each seed's pooled UF1/UAR/Acc as dots, the mean ± std as a bar with error bar."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for x, score in enumerate(SCORES):
        entry = summary["pooled"][score]
        ax.bar(x, entry["mean"], yerr=entry["std"] or 0.0, capsize=6, color="#9ecae1", width=0.6)
        ax.plot([x] * len(entry["per_seed"]), entry["per_seed"], "o", color="#08519c", markersize=4)
    ax.set_xticks(range(len(SCORES)), ["UF1", "UAR", "Acc"])
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}: {len(summary['seeds'])} seeds, mean ± std", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def resume_command(output: Path, options: LosoOptions) -> str:
    """The command that resumes a seeds run with its own resolved config (any seed's: --seeds sets the seed)."""
    first = next(iter(seed_dirs(output).values()))
    command = ["mer", "loso", "--config", str(first / "config.yaml"), "--output", str(output),
               "--seeds", str(options.scope.seeds), *options.executor_arguments()]
    if options.scope.folds is not None:
        command += ["--folds", options.scope.folds]
    return shlex.join(command + options.wandb.arguments())


def pool(run_dir: Path) -> dict[str, Any] | None:
    """``--aggregate-only DIR``: pool a run, or every seed run of a seeds run and their summary."""
    seeds = seed_dirs(run_dir)
    if (run_dir / "run.json").exists() or not seeds:
        return aggregate(run_dir)
    return summarise_pooled(run_dir, {seed: aggregate(path) for seed, path in seeds.items()})


def summarise_pooled(output: Path, pooled: dict[int, dict[str, Any] | None]) -> dict[str, Any] | None:
    """The seeds summary once every seed is pooled; else None, naming the seeds still missing."""
    missing = [seed for seed, metrics in pooled.items() if metrics is None]
    if missing:
        print(f"seeds summary not written: seed(s) {', '.join(map(str, missing))} are not pooled yet "
              f"(see above); rerun the same command to finish them")
        return None
    return summarise(output, pooled)
