"""A real single-node SLURM (munged + slurmctld + slurmd) started for the test session.

Everything lives in one temporary directory: slurm.conf, cgroup.conf, the munge key and socket,
state, spool and logs; with ``gpus=N`` also N fake GPUs (gres ``gpu`` backed by character-device
files made in that directory, nothing GPU runs): SLURM schedules them and sets
``CUDA_VISIBLE_DEVICES`` in the job steps as on a GPU node. The daemons run in the foreground as our children, so they are stopped by
pid at the end, also when a test fails. Clients (sbatch, squeue, scontrol, and the jobs
themselves) find this cluster through ``$SLURM_CONF``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
INSTALL_HINT = "apt-get install slurm-wlm munge (as root), as .ci/run does"


def missing_slurm() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    missing = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None
               and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"SLURM/munge not installed ({', '.join(missing)} not found): {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "the single-node test cluster runs its daemons as root (SlurmUser=root); run the SLURM tests as root"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def node_name() -> str:
    """This host's short name: slurmctld and slurmd only run where the config names them."""
    return socket.gethostname().split(".")[0]


FAKE_GPU_MAJOR = 250  # a character-device major number of the "local/experimental" range: no driver behind it
REAL_MEMORY_MB = 1000  # what the node offers --mem (memory is not a consumable with CR_CPU: only the request is checked)
FEATURE = "mertest"  # the node's feature, for --constraint


def fake_gpus(root: Path, n: int) -> list[Path]:
    """`n` character-device files standing for GPUs (SLURM reads only their device numbers)."""
    (root / "dev").mkdir(exist_ok=True)
    paths = [root / "dev" / f"fakegpu{i}" for i in range(n)]
    for i, path in enumerate(paths):
        if not path.exists():
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(FAKE_GPU_MAJOR, i))
    return paths


def write_config(root: Path, cpus: int, gpus: int = 0) -> Path:
    """slurm.conf + cgroup.conf (+ gres.conf with `gpus` fake GPUs) + munge key for one node named after
    this host, with partitions ``debug`` (default) and ``cpu``; returns slurm.conf."""
    node = node_name()
    for folder in ("munge", "state", "spool", "log"):
        (root / folder).mkdir(mode=0o700, parents=True, exist_ok=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    gres = f"Gres=gpu:{gpus} " if gpus else ""
    conf.write_text(f"""\
ClusterName=mertest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=2
{"GresTypes=gpu" if gpus else ""}
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={REAL_MEMORY_MB} Feature={FEATURE} {gres}State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=ALL MaxTime=INFINITE State=UP
""")
    if gpus:
        files = fake_gpus(root, gpus)
        (root / "gres.conf").write_text(f"AutoDetect=off\nName=gpu File={files[0].parent}/fakegpu[0-{gpus - 1}]\n")
    (root / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")
    return conf


class SlurmCluster:
    """Handle on the running cluster: its environment for clients and small query helpers."""

    def __init__(self, root: Path, conf: Path) -> None:
        self.root, self.conf = root, conf
        self.env = {**os.environ, "SLURM_CONF": str(conf)}

    def run(self, *command: str, stream: str = "stdout") -> str:
        """A SLURM client command against this cluster; its stdout or stderr (raises on failure)."""
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}\n{self.logs()}")
        return getattr(done, stream)

    def job(self, job_id: str, details: bool = False) -> dict[str, str]:
        """``scontrol show job`` of one job (or array task ``A_i``) as a dict of its Key=Value fields
        (`details`: ``-d``, which adds e.g. ``GRES=gpu:2(IDX:0-1)``, the GPUs the job was given)."""
        fields: dict[str, str] = {}
        for token in self.run("scontrol", "show", "job", "-o", *(["-d"] if details else []), job_id).split():
            key, _, value = token.partition("=")
            fields.setdefault(key, value)
        return fields

    def start_now(self, job_id: str) -> None:
        """Let a requeued job start at once, not at the BeginTime SLURM gives it (about 2 min later); not
        checked, as the job may have started between a look at its state and this update."""
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=self.env, capture_output=True,
                       timeout=60)

    def wait_for(self, what: str, check: Callable[[], T], timeout: float, every: float = 1.0) -> T:
        """Poll `check()` until it returns something truthy; fail with the daemons' logs after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(every)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")

    def cancel_all(self) -> None:
        """Cancel every job of this cluster and wait for them to end: a job step survives slurmd."""
        self.run("scancel", "--user", "root")
        try:
            self.wait_for("the cancelled jobs to end", lambda: not self.run("squeue", "-h"), 30)
        except TimeoutError:
            pass  # the daemons are stopped anyway; what is left is reported by the failing test

    def logs(self, lines: int = 15) -> str:
        tails = []
        for log in sorted((self.root / "log").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {log.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(tails)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def slurm_cluster(root: Path, cpus: int = 2, gpus: int = 0) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd (foreground children, by pid); stop them by pid on exit
    (`gpus`: fake GPUs on the node, see :func:`fake_gpus`)."""
    conf = write_config(root, cpus, gpus)
    cluster = SlurmCluster(root, conf)
    commands = [
        [_daemon("munged"), "--foreground", "--force", f"--socket={root}/munge/munge.socket",
         f"--key-file={root}/munge/munge.key", f"--pid-file={root}/munge/munged.pid",
         f"--seed-file={root}/munge/munged.seed", f"--log-file={root}/log/munged.log"],
        [_daemon("slurmctld"), "-D", "-i", "-f", str(conf)],
        [_daemon("slurmd"), "-D", "-f", str(conf), "-N", node_name()],
    ]
    started: list[subprocess.Popen] = []
    try:
        for command in commands:
            with open(root / "log" / f"{Path(command[0]).name}.stdout.log", "w") as out:
                started.append(subprocess.Popen(command, env=cluster.env, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL))
            time.sleep(0.5)
            if started[-1].poll() is not None:
                raise RuntimeError(f"{command[0]} exited at start ({started[-1].returncode})\n{cluster.logs()}")
        cluster.wait_for("the node to become idle", lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T"), 60)
        yield cluster
    finally:
        if len(started) == len(commands) and all(process.poll() is None for process in started):
            cluster.cancel_all()
        for process in reversed(started):
            _stop(process)


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def gres_indices(gres: str) -> list[int]:
    """The device indices of scontrol's ``GRES=gpu:2(IDX:0-1)`` (ranges and lists, e.g. ``IDX:0,2-3``)."""
    indices = []
    for part in gres.partition("IDX:")[2].rstrip(")").split(","):
        first, _, last = part.partition("-")
        indices += range(int(first), int(last or first) + 1)
    return indices


def job_logs(run_dir: Path) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                     for log in sorted((run_dir / "slurm").glob("*.out")))
