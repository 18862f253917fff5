"""The README's results table is what `mer report` prints on the committed run folders, and each of those
runs passes `mer audit` (nothing trained here: the folders under results/ hold every fold's predictions)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from experiments.main import mer_main
from tests.conftest import run_in_process

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
COMMAND = re.search(r"^mer report (results/.*)$", README, re.MULTILINE)
TABLE = re.search(r"<!-- mer report: begin -->\n(.*?)<!-- mer report: end -->", README, re.DOTALL)


def report_arguments(output: Path) -> list[str]:
    """The README's `mer report` arguments, writing to `output` instead of results/."""
    argv = shlex.split(COMMAND.group(1))
    argv[argv.index("--output") + 1] = str(output)
    return argv


def test_readme_table_is_mer_reports_output(tmp_path, capsys, monkeypatch):
    assert COMMAND and TABLE, "README.md lost its results command or table markers"
    monkeypatch.chdir(ROOT)
    code, out, err = run_in_process(mer_main, ["report", *report_arguments(tmp_path / "table.md")], capsys)
    assert code == 0, err
    assert out == TABLE.group(1)
    assert (tmp_path / "table.md").read_text() == (ROOT / "results" / "composite.md").read_text() == out


@pytest.mark.parametrize("run_dir", sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.glob("results/*/seed_*/metrics.json")))
def test_every_reported_run_passes_the_audit(run_dir, tmp_path, capsys):
    code, out, err = run_in_process(mer_main, ["audit", str(ROOT / run_dir), "--output", str(tmp_path / "audit.json")],
                                    capsys)
    assert code == 0, out + err
    assert "audit PASSED" in out + err
