"""``mer loso``'s and ``mer sweep``'s SLURM options (``executors.slurm`` writes them into the sbatch
scripts), in a module of their own that imports nothing heavy: ``mer sweep --help`` lists them too."""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from typing import Literal

from datamodules.errors import MERError

# sbatch's own time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
SLURM_TIME = re.compile(r"(\d+-\d+(:\d+){0,2}|\d+(:\d+){0,2})")
SLURM_MEMORY = re.compile(r"\d+[KMGT]?", re.IGNORECASE)  # sbatch --mem: a size, megabytes without a unit
SBATCH_KEY = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")  # a long sbatch option name, without its dashes
# The #SBATCH options the scripts set, with the option of ours that sets them (None: mer itself; --dependency
# is given when submitting): --sbatch-option may not set them a second time.
OWN_SBATCH_KEYS: dict[str, str | None] = {
    "partition": "--partition", "time": "--time", "cpus-per-task": "--cpus-per-task", "gpus-per-task": "--gpus-per-task",
    "mem": "--mem", "constraint": "--constraint", "account": "--account", "qos": "--qos", "array": "--array-parallelism",
    **dict.fromkeys(("job-name", "ntasks", "chdir", "output", "open-mode", "signal", "requeue", "no-requeue", "dependency")),
}


@dataclass
class SlurmOptions:
    """Where folds run: here, or as a SLURM job array (``executors.slurm``).

    Args:
        launcher: ``local`` (this machine) or ``slurm`` (one array task per chunk of folds).
        partition: SLURM partition of the array tasks.
        time: SLURM time limit per array task.
        gpus_per_task: GPUs per SLURM array task.
        cpus_per_task: CPUs per SLURM array task.
        mem: memory per SLURM array task (sbatch ``--mem``, e.g. ``32G``; default: the cluster's).
        constraint: node features the array tasks need (sbatch ``--constraint``, e.g. ``a100``).
        account: SLURM account charged for every job.
        qos: SLURM quality of service of every job.
        sbatch_option: one more ``#SBATCH --KEY=VALUE`` line of the array tasks, e.g. ``exclude=node[1-2]``
            or ``mail-type=FAIL`` (a bare KEY for a flag).
        setup: a shell line every job runs before its step, e.g. ``module load cuda/12.1`` or
            ``source ~/venvs/mer/bin/activate`` or ``export HF_HOME=/scratch/me``.
        max_requeues: a task SLURM requeued (time limit or preemption) more than this many times
            fails at its start, naming its unfinished folds, instead of requeueing forever.
        aggregate_partition: SLURM partition of the CPU-only pooling and summary jobs (default: the
            cluster's default partition).
        aggregate_time: SLURM time limit of the pooling and summary jobs.
        aggregate_mem: memory of the pooling and summary jobs (default: the cluster's).
        array_parallelism: at most this many array tasks at once (SLURM ``%N``).
        folds_per_task: folds per SLURM array task.
        dry_run: print the sbatch script(s) instead of submitting.
    """

    launcher: Literal["local", "slurm"] = "local"
    partition: str | None = None
    time: str = "04:00:00"
    gpus_per_task: int = 0
    cpus_per_task: int = 2
    mem: str | None = None
    constraint: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_option: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    max_requeues: int = 3
    aggregate_partition: str | None = None
    aggregate_time: str = "00:30:00"  # our choice: pooling reads the fold CSVs and plots once, minutes at most
    aggregate_mem: str | None = None
    array_parallelism: int | None = None
    folds_per_task: int = 1
    dry_run: bool = False

    @property
    def on_slurm(self) -> bool:
        return self.launcher == "slurm"

    def check(self) -> None:
        """The SLURM options that cannot work, found before the run is planned (nothing created yet)."""
        if not self.on_slurm:
            return
        least = {"--folds-per-task": (self.folds_per_task, 1), "--cpus-per-task": (self.cpus_per_task, 1),
                 "--gpus-per-task": (self.gpus_per_task, 0), "--array-parallelism": (self.array_parallelism, 1),
                 "--max-requeues": (self.max_requeues, 0)}
        bad = [f"{name} {value} (give at least {minimum})" for name, (value, minimum) in least.items()
               if value is not None and value < minimum]
        bad += [f"{name} '{value}' (give a time like 04:00:00, 90 (minutes) or 2-00:00:00)"
                for name, value in (("--time", self.time), ("--aggregate-time", self.aggregate_time))
                if not SLURM_TIME.fullmatch(str(value))]
        bad += [f"{name} '{value}' (give a size like 16G or 4000M)"
                for name, value in (("--mem", self.mem), ("--aggregate-mem", self.aggregate_mem))
                if value is not None and not SLURM_MEMORY.fullmatch(str(value))]
        bad += [f"--setup {str(line)!r} (give one shell line per --setup)" for line in self.setup
                if not str(line).strip() or "\n" in str(line)]
        if bad:
            raise MERError(f"impossible SLURM option(s): {', '.join(bad)}")
        self.sbatch_lines()
        if not self.dry_run and shutil.which("sbatch") is None:
            raise MERError("sbatch not found: --launcher slurm needs SLURM's client commands on this machine "
                           "(--dry-run writes and prints the scripts without submitting)")

    def sbatch_lines(self) -> list[str]:
        """The ``#SBATCH`` lines of ``--sbatch-option``; one-line error for a malformed one or one that
        repeats an option the scripts set."""
        lines, keys = [], set()
        for option in self.sbatch_option:
            key, has_value, value = str(option).partition("=")
            if not SBATCH_KEY.fullmatch(key) or (has_value and not value.strip()) or "\n" in value:
                raise MERError(f"--sbatch-option '{option}' is not KEY=VALUE with a long sbatch option name as KEY, "
                               "e.g. exclude=node[1-2] (or a bare KEY for a flag, e.g. exclusive)")
            if key in keys:
                raise MERError(f"--sbatch-option '{option}': --{key} is given twice; give it once")
            if key in OWN_SBATCH_KEYS:
                ours = OWN_SBATCH_KEYS[key]
                raise MERError(f"--sbatch-option '{option}': " + (f"mer sets --{key} from its option {ours}; give that instead"
                               if ours else f"mer sets --{key} itself (see the scripts of --dry-run); drop this option"))
            if self.mem and key.startswith("mem-per-"):
                raise MERError(f"--sbatch-option '{option}': sbatch takes one of --mem, --mem-per-cpu and "
                               "--mem-per-gpu; drop --mem or this option")
            keys.add(key)
            lines.append(f"#SBATCH --{key}" + (f"={shlex.quote(value)}" if has_value else ""))
        return lines
