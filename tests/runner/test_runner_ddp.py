"""A fold trained with DDP (2 CPU ranks, gloo): rank 0 alone writes, and the fold's prediction file
holds exactly its held-out subject's samples once each (the distributed sampler pads ranks with
repeated samples; the gather must drop them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_ddp_fold_writes_each_held_out_sample_once(cde_root, tmp_path):
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        "model": {"class_path": "lightning_modules.STSTNet"},
        "data": {"class_path": "datamodules.MEGC2019CompositeDataModule",
                 "init_args": {"root": str(cde_root), "batch_size": 32}},
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    output = tmp_path / "run"
    mer = Path(sys.executable).with_name("mer")  # DDP re-runs the command line for rank 1: a real command
    done = subprocess.run([str(mer), "loso",
                           "--config", str(path), "--folds", "0-1", "--output", str(output), "--wandb", "disabled"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    labels = pd.read_csv(cde_root / "labels.csv", dtype={"sub": str})
    for k, subject in enumerate(["sub01", "sub02"]):  # CASME II's first two subjects: 3 and 9 samples, odd counts
        fold = pd.read_csv(output / "folds" / f"fold_{k:03d}.csv", dtype={"sample_id": str, "subject": str})
        expected = labels[(labels["dataset"] == "casme2") & (labels["sub"] == subject)]
        assert set(fold["subject"]) == {f"casme2_{subject}"}
        assert fold["sample_id"].is_unique and len(fold) == len(expected)
    assert sorted(p.name for p in (output / "folds").glob("*.csv")) == ["fold_000.csv", "fold_001.csv"]
