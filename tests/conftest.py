"""Shared fixtures. Real data lives in ../shared (never committed): tests that need it skip
with a reason on a user's clone and FAIL when CI is set. Tests marked ``gpu`` run where CUDA is
available and are skipped elsewhere."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.helpers.slurm_cluster import SlurmCluster, missing_slurm, slurm_cluster

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.gpu`` tests run where torch sees a CUDA device and are skipped, with the reason, elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu); none is available here")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def require_shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {path} is missing: CI must run with ../shared beside the clone")
        pytest.skip(f"{path} not available (real data is not shipped with the project)")
    return path


@pytest.fixture(scope="session")
def cde_root() -> Path:
    return require_shared("data/megc2019_cde")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared-clip cache for the whole session (the tiny synthetic set is built once)."""
    return tmp_path_factory.mktemp("mer_cache")


TINY_SYNTHETIC = {
    "n_subjects": 4,
    "clips_per_subject": 5,
    "image_size": 72,
    "prepare_workers": 2,
    "batch_size": 8,
}
TINY_MEDN = {
    "image_size": 72,
    "patch_size": 18,
    "embed_dim": 16,
    "num_heads": 2,
    "sparse_rates": [1, 2, 4],
    "lr": 1.0e-3,
}


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A MEDN-on-synthetic config small enough for a LOSO run in seconds."""
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1},
        "model": {"class_path": "lightning_modules.MEDN", "init_args": TINY_MEDN},
        "data": {"class_path": "datamodules.SyntheticDataModule",
                 "init_args": {**TINY_SYNTHETIC, "cache_dir": str(cache_dir)}},
    }
    path = tmp_path_factory.mktemp("configs") / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_in_process(main: Callable[[list[str]], Any], argv: list[str],
                   capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run a command's main function on `argv` in this process: (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    reason = missing_slurm()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    with slurm_cluster(tmp_path_factory.mktemp("slurm"), gpus=4) as cluster:  # fake GPUs: nothing GPU runs
        yield cluster


@pytest.fixture
def on_cluster(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """`mer loso`'s sbatch calls (and the jobs, which inherit the environment) talk to our cluster."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    return slurm
