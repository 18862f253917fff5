"""`mer dataset-info`: counts and sheet issues without frames, as text or JSON; user errors exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.main import mer_main
from tests.conftest import require_shared

SUMMARY_KEYS = {"n_samples", "n_subjects", "class_counts", "warnings", "unusable", "excluded"}


def mer(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `mer ARGV` in-process: (exit code, stdout, stderr)."""
    try:
        mer_main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sheet(relative: str) -> str:
    return str(require_shared(f"data/annotations/{relative}"))


def test_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = mer(["dataset-info", "casme2", "--annotations", sheet("casme2/CASME2-coding-20140508.xlsx"),
                          "--protocol", "cde", "--json"], capsys)
    assert (code, err) == (0, "")
    summary = json.loads(out)
    assert set(summary) == SUMMARY_KEYS
    assert (summary["n_samples"], summary["n_subjects"]) == (145, 24)
    assert summary["class_counts"] == {"negative": 88, "positive": 32, "surprise": 25}
    assert summary["excluded"]["others"] == 99
    assert len(summary["warnings"]) == 6 and summary["unusable"] == []


def test_json_over_several_sheets(capsys: pytest.CaptureFixture[str]) -> None:
    parts = [sheet(f"dfme/{part}_full_with_AU.xlsx") for part in ("training", "testA", "testB")]
    code, out, _ = mer(["dataset-info", "dfme", "--annotations", *parts, "--protocol", "7class", "--json"], capsys)
    summary = json.loads(out)
    assert code == 0 and (summary["n_samples"], summary["n_subjects"]) == (2629, 259)
    assert sum(summary["class_counts"].values()) == 2629


def test_readable_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = mer(["dataset-info", "casme3", "--annotations", sheet("casme3/casme3_partA_labels.xlsx"),
                        "--protocol", "3class"], capsys)
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "casme3, protocol 3class (negative, positive, surprise)"
    assert "samples:  699 from 88 subjects" in lines
    assert "classes:  negative 457, positive 55, surprise 187" in lines
    assert "excluded: others 161" in lines
    assert "warnings: 61" in lines and "unusable: 0" in lines
    assert ("  casme3_partA_labels.xlsx row 751 (spNO.216/d): onset 3647 is after offset 2694: no frames to sample; "
            "fix the sheet to prepare it") in lines


def test_fold_switches(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["dataset-info", "samm", "--annotations", sheet("samm/SAMM_Micro_FACS_Codes_v2.xlsx"), "--protocol", "cde"]
    _, folded, _ = mer(args, capsys)
    _, unfolded, _ = mer([*args, "--no-fold-side", "--no-fold-intensity"], capsys)
    assert "AUL12" not in folded and "AUL12" in unfolded and "AU12A" in unfolded
    assert "warnings: 17" in folded and "warnings: 20" in unfolded


def test_missing_sheet_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "CASME2-coding.xlsx"
    code, out, err = mer(["dataset-info", "casme2", "--annotations", str(missing), "--protocol", "cde", "--json"], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"error: annotation sheet not found: {missing}"]


def test_unknown_protocol_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = mer(["dataset-info", "mmew", "--annotations", "x.csv", "--protocol", "cde"], capsys)
    assert code == 2 and err.splitlines() == ["error: unknown protocol 'cde' for mmew; choose one of 6class, 7class"]


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = mer(["dataset-info", "--help"], capsys)
    usage = out.split("\n")[0]  # 'usage: mer [options] dataset-info ...' in the jsonargparse subcommand tree
    assert code == 0 and usage.startswith("usage: mer") and "dataset-info" in usage, out
    assert "casme3: 3class, 4class, 7class" in " ".join(out.split())
