"""`python -m experiments.benchmarks.gpu_targets`: the one command that measures every GPU target.
Here on CPU-sized work (`--smoke`): the table has a row per workload whose verdict follows from its
numbers; on a GPU the same command runs the published protocols (marked gpu)."""

from __future__ import annotations

import json

import pytest

from experiments.benchmarks.gpu_targets import main
from tests.conftest import ROOT


def check_report(output, smoke: bool) -> None:
    report = json.loads((output / "gpu_targets.json").read_text())
    assert report["smoke"] is smoke
    rows = {row["workload"]: row for row in report["rows"]}
    assert set(rows) == {"ststnet_published", "medn_cde", "tvl1_64" if smoke else "tvl1_144"}
    for name in ("ststnet_published", "medn_cde"):
        row = rows[name]
        assert row["unit"] == "s" and row["measured"] > 0 and 0 <= row["uf1"] <= 1
        assert row["holds"] == (row["measured"] <= float(row["target"].split()[1]))
        assert row["ratio"] == pytest.approx(row["measured"] / row["floor"])
    flow = rows["tvl1_64" if smoke else "tvl1_144"]
    assert flow["unit"] == "pairs/s" and flow["holds"] == (flow["measured"] >= 1000)
    text = (output / "gpu_targets.md").read_text()
    assert text.startswith("device: ") and text.count("\n| ") == 2 + len(rows)  # header, rule, one line a workload


@pytest.mark.slow
def test_smoke_run_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs' data paths are relative to the repository root
    main(["--smoke", "--device", "cpu", "--output", str(tmp_path)])
    check_report(tmp_path, smoke=True)


@pytest.mark.gpu
def test_the_targets_on_a_gpu(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["--device", "cuda", "--output", str(tmp_path)])
    check_report(tmp_path, smoke=False)
