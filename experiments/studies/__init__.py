"""``mer study SPEC``: one paper's mechanism on synthetic data where the truth is known, end to end.

For every replicate seed s (seed by seed; ``--seeds`` picks some) and every row of the spec
(``spec.py``): ``mer loso`` of the row's configs
with ``seed_everything: s`` (and, with ``fresh_data``, ``generator_seed: s``: a synthetic set of its
own) into ``OUTPUT/<row>/seed_<s>`` (resumable: the runner skips finished folds), then the spec's
measures (``measures.py``) of that run, kept in its ``study_measures.json`` (a measure already there
is not computed again). Finally ``OUTPUT/table.json`` and ``table.md``: every number per row, mean ±
sample std over the seeds. ``OUTPUT/commands.txt`` lists the `mer loso` commands it ran.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser, Namespace

from datamodules.errors import MERError

from ..atomic_files import atomic_write_text, read_json, write_json
from .spec import Row, StudySpec, load_spec

MEASURES_FILE = "study_measures.json"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="mer study", exit_on_error=False, description="Run a study spec (configs/studies/...): every row's `mer loso` per replicate "
                                        "seed, its measures, then table.json/table.md with mean ± std. Resumable.")
    parser.add_argument("spec", help="a study spec YAML, e.g. configs/studies/medn/study.yaml")
    parser.add_argument("--output", type=Optional[str], default=None,
                        help="the study's folder (default outputs/studies/<spec name>)")
    parser.add_argument("--seeds", type=Optional[str], default=None,
                        help="run only these of the spec's seeds, e.g. '52' or '52,53' (separate processes can run "
                             "different seeds at once); the table holds every seed measured so far")
    parser.add_argument("--table-only", action="store_true",
                        help="run and measure nothing: write the table of what is already measured")
    return parser


def main(argv: list[str]) -> None:
    """`mer study` on `argv`."""
    run(build_parser().parse_args(argv))


def run(args: Namespace) -> None:
    import torch

    torch.set_num_threads(1)  # the measures, on one thread (our choice: studies share their CPUs with other jobs)
    spec = load_spec(Path(args.spec))
    output = Path(args.output) if args.output else Path("outputs") / "studies" / spec.name
    output.mkdir(parents=True, exist_ok=True)
    measured: dict = {row.name: {} for row in spec.rows}
    seconds: dict = {row.name: {} for row in spec.rows}
    selected = selected_seeds(spec, args.seeds)
    for seed in spec.seeds:  # seed by seed: a study cut short holds whole replicates of every row
        for row in spec.rows:
            run_dir = output / row.slug / f"seed_{seed}"
            if not args.table_only and seed in selected:
                run_replicate(spec, row, seed, run_dir, output)
            record = read_record(run_dir)
            if record["measures"]:
                measured[row.name][seed] = record["measures"]
                seconds[row.name][seed] = sum(record["seconds"].values())
    from .table import markdown, study_table

    table = study_table(spec, measured, seconds)
    write_json(output / "table.json", table)
    atomic_write_text(output / "table.md", markdown(table))
    print(markdown(table))
    print(f"wrote {output / 'table.json'} and {output / 'table.md'}")


def selected_seeds(spec: StudySpec, seeds: str | None) -> list[int]:
    """The spec's seeds named by --seeds (all without it); a seed not in the spec is a one-line error."""
    if seeds is None:
        return spec.seeds
    from ..runner.options import RunScope

    chosen = RunScope(seeds=seeds).seed_list()
    unknown = sorted(set(chosen) - set(spec.seeds))
    if unknown:
        raise MERError(f"--seeds {seeds}: {unknown} not among the spec's seeds {spec.seeds}")
    return chosen


def loso_arguments(spec: StudySpec, row: Row, seed: int, run_dir: Path) -> list[str]:
    """The `mer loso` arguments of one row and replicate."""
    configs = [arg for config in row.configs for arg in ("--config", config)]
    data = ["--data.init_args.generator_seed", str(seed)] if spec.fresh_data else []
    return ["loso", *configs, *spec.loso_args, *row.args, "--seed_everything", str(seed), *data,
            "--output", str(run_dir), "--wandb", "disabled"]


def run_replicate(spec: StudySpec, row: Row, seed: int, run_dir: Path, output: Path) -> None:
    """`mer loso` (a subprocess; it skips finished folds), then every measure not yet in the record."""
    from .measures import measure

    arguments = loso_arguments(spec, row, seed, run_dir)
    record = read_record(run_dir)
    with open(output / "commands.txt", "a") as log:
        log.write(f"mer {shlex.join(arguments)}\n")
    print(f"[study {spec.name}] {row.name}, seed {seed}: mer {shlex.join(arguments)}", flush=True)
    finished_before = (run_dir / "metrics.json").is_file()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from experiments.main import mer_main; mer_main()", *arguments])
    if done.returncode != 0:
        raise MERError(f"{row.name}, seed {seed}: `mer {shlex.join(arguments)}` failed (exit {done.returncode}); "
                       "fix the cause and rerun the same mer study command (finished folds are kept)")
    if not (run_dir / "metrics.json").is_file():
        raise MERError(f"{run_dir}: mer loso left no metrics.json (folds missing?); rerun the same mer study command")
    if not finished_before:  # training time, summed over the calls that trained (a resumed run's too)
        record["seconds"]["loso"] = record["seconds"].get("loso", 0.0) + time.perf_counter() - start
    for name in spec.measures:
        if name in record["measures"]:
            continue
        start = time.perf_counter()
        record["measures"][name] = measure(name, run_dir)
        record["seconds"][name] = time.perf_counter() - start
        write_json(run_dir / MEASURES_FILE, record)
    write_json(run_dir / MEASURES_FILE, record)


def read_record(run_dir: Path) -> dict:
    """The replicate's measures and timings so far (empty if none)."""
    path = run_dir / MEASURES_FILE
    if not path.is_file():
        return {"measures": {}, "seconds": {}}
    return read_json(path, "delete it and rerun the same mer study command (its measures are computed again)",
                     keys=("measures", "seconds"))
