"""`mer audit`: a clean tiny LOSO run passes every check; copies of it with one planted defect each fail
exactly the check that covers it, with one line naming the fold or sample. `--predictions` reports
pooled and per-subject/per-fold scores of a hand-made CSV, both recomputed here by hand."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.main import mer_main
from tests.conftest import run_in_process

CHECKS = ("pooled = fold files", "metrics recompute", "subjects disjoint", "tested once", "weights not from test")


@pytest.fixture(scope="module")
def clean_run(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pooled 4-fold LOSO run (1 epoch) of the tiny synthetic config."""
    output = tmp_path_factory.mktemp("audit") / "run"
    mer_main(["loso", "--config", str(tiny_config), "--output", str(output), "--wandb", "disabled"])
    return output


def audit(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code, out, _ = run_in_process(mer_main, ["audit", str(run_dir)], capsys)
    return code, out.splitlines()


def verdicts(lines: list[str]) -> dict[str, str]:
    """Check name -> its verdict line."""
    return {name: line for line in lines for name in CHECKS if line[6:].startswith(name)}


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.ckpt"))
    return copy


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"sample_id": str, "subject": str})


@pytest.mark.slow
def test_clean_run_passes(clean_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = audit(clean_run, capsys)
    assert code == 0, lines
    found = verdicts(lines)
    assert list(found) == list(CHECKS) and all(line.startswith("PASS") for line in found.values()), lines
    record = json.loads((clean_run / "audit.json").read_text())
    assert record["passed"] and [c["name"] for c in record["checks"]] == list(CHECKS)
    plan = json.loads((clean_run / "fold_plan.json").read_text())
    assert plan["kind"] == "loso" and len(plan["folds"]) == 4
    pooled = read_csv(clean_run / "predictions.csv").astype({"label": str, "pred": str})
    subjects = [macro(part["label"].tolist(), part["pred"].tolist()) for _, part in pooled.groupby("subject")]
    averaged = record["averaging"]
    by_hand = macro(pooled["label"].tolist(), pooled["pred"].tolist())
    assert [averaged["pooled"]["uf1"], averaged["pooled"]["uar"]] == pytest.approx(by_hand)
    mean = averaged["mean_per_subject"]
    assert [mean["uf1"], mean["uar"]] == pytest.approx(np.mean(subjects, axis=0))


def change_one_prediction(run: Path) -> None:
    """Fold 1's first prediction changed in its fold file and in predictions.csv alike: only the metrics
    (written before the change) no longer follow from the predictions."""
    fold = read_csv(run / "folds" / "fold_001.csv")
    fold.loc[0, "pred"] = (fold.loc[0, "pred"] + 1) % 3
    fold.to_csv(run / "folds" / "fold_001.csv", index=False)
    pooled = read_csv(run / "predictions.csv")
    row = pooled.index[(pooled["fold"] == 1)][0]
    pooled.loc[row, "pred"] = fold.loc[0, "pred"]
    pooled.to_csv(run / "predictions.csv", index=False)


def duplicate_one_sample(run: Path) -> None:
    """Fold 1 predicts one of its samples twice; the run is pooled again so that its files agree."""
    fold = read_csv(run / "folds" / "fold_001.csv")
    pd.concat([fold, fold.iloc[[0]]], ignore_index=True).to_csv(run / "folds" / "fold_001.csv", index=False)
    with pytest.raises(SystemExit) as exit_:  # pooling audits the run: the duplicate already fails it
        mer_main(["loso", "--aggregate-only", str(run)])
    assert exit_.value.code == 1


def add_test_subject_to_training(run: Path) -> None:
    def add(plan: dict) -> None:
        fold = plan["folds"][2]
        fold["train_subjects"].append(fold["test_subjects"][0])
    edit_json(run / "fold_plan.json", add)


def validation_subject_in_training(run: Path) -> None:
    def overlap(plan: dict) -> None:
        fold = plan["folds"][1]
        fold["val_subjects"] = [fold["train_subjects"][0]]
    edit_json(run / "fold_plan.json", overlap)


def subject_never_held_out(run: Path) -> None:
    """Fold 3 holds out s01 again instead of its own s03 (s03 is now only ever trained on)."""
    def swap(plan: dict) -> None:
        fold = plan["folds"][3]
        fold["train_subjects"] = sorted({*fold["train_subjects"], *fold["test_subjects"]} - {"s01"})
        fold["test_subjects"] = ["s01"]
    edit_json(run / "fold_plan.json", swap)


def sample_missing(run: Path) -> None:
    """The data had one sample more when planned than the run tested."""
    edit_json(run / "fold_plan.json", lambda plan: plan.update(n_samples=plan["n_samples"] + 1))


def weights(**changes: object) -> Callable[[Path], None]:
    return lambda run: edit_json(run / "folds" / "fold_001.json", lambda record: record.update(changes))


DEFECTS = {
    "changed prediction": (change_one_prediction, "metrics recompute", "predictions.csv give"),
    "duplicated sample": (duplicate_one_sample, "tested once", "fold 1: sample synthetic/s01_c00 is predicted 2 times"),
    "test subject in training": (add_test_subject_to_training, "subjects disjoint",
                                 "fold 2: test subject 's02' is also in its training subjects"),
    "validation subject in training": (validation_subject_in_training, "subjects disjoint",
                                       "fold 1: validation subject 's00' is also in its training subjects"),
    "subject never held out": (subject_never_held_out, "subjects disjoint",
                               "subject 's03' is held out by 0 folds; a loso plan holds out every subject exactly once"),
    "sample never tested": (sample_missing, "tested once", "but the data had"),
    "test-chosen checkpoint": (weights(weights="best_test_uf1"), "weights not from test",
                               "fold 1: predicted by weights 'best_test_uf1'"),
    "earlier epoch": (weights(epochs_trained=0), "weights not from test",
                      "fold 1: predicted by the weights after 0 epoch(s)"),
    "monitored test metric": (weights(weights="inner_validation", monitor="test/uf1"), "weights not from test",
                              "fold 1: weights chosen on test/uf1"),
    "early stop on test metric": (weights(epochs_trained=0, early_stopping={"monitor": "test/loss"}),
                                  "weights not from test", "fold 1: training stopped early on test/loss"),
    "no record": (lambda run: (run / "folds" / "fold_001.json").unlink(), "weights not from test",
                  "fold 1: folds/fold_001.json missing"),
}


@pytest.mark.slow
@pytest.mark.parametrize("defect", DEFECTS)
def test_each_defect_fails_its_check(defect: str, clean_run: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    plant, failing, message = DEFECTS[defect]
    run = copy_of(clean_run, tmp_path)
    plant(run)
    capsys.readouterr()
    code, lines = audit(run, capsys)
    assert code == 1, lines
    found = verdicts(lines)
    assert [name for name, line in found.items() if line.startswith("FAIL")] == [failing], lines
    assert message in found[failing], found[failing]
    assert not json.loads((run / "audit.json").read_text())["passed"]


def carve_validation(run: Path) -> None:
    """Fold 1 gets one of its training subjects as inner validation subject (fold_plan.json)."""
    def carve(plan: dict) -> None:
        fold = plan["folds"][1]
        fold["val_subjects"] = [fold["train_subjects"].pop()]
    edit_json(run / "fold_plan.json", carve)


HONEST_RECORDS = {
    "validation-chosen checkpoint": {"weights": "inner_validation", "monitor": "val/uf1", "checkpoint_epoch": 0},
    "early stopped on validation": {"epochs_trained": 0, "early_stopping": {"monitor": "val/loss", "stopped_epoch": 0}},
}


@pytest.mark.slow
@pytest.mark.parametrize("record", HONEST_RECORDS)
def test_validation_chosen_weights_pass(record: str, clean_run: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Weights chosen, or training stopped, on an inner validation metric of a fold with validation subjects."""
    run = copy_of(clean_run, tmp_path)
    carve_validation(run)
    weights(**HONEST_RECORDS[record])(run)
    code, lines = audit(run, capsys)
    assert code == 0, lines


def macro(labels: list[str], preds: list[str]) -> tuple[float, float]:
    """Macro F1 and recall over the classes among labels or predictions, in plain Python."""
    f1s, recalls = [], []
    for c in sorted(set(labels) | set(preds)):
        tp = sum(l == c and p == c for l, p in zip(labels, preds))
        fp = sum(l != c and p == c for l, p in zip(labels, preds))
        fn = sum(l == c and p != c for l, p in zip(labels, preds))
        f1s.append(2 * tp / (2 * tp + fp + fn))
        recalls.append(tp / (tp + fn) if tp + fn else 0.0)
    return float(np.mean(f1s)), float(np.mean(recalls))


ROWS = [  # (subject, split, truth, guess): A and B each show one class and get it right, C is hard;
    # averaging per subject credits A and B with UF1 1.0 each (pooled about 0.54, the mean about 0.74)
    ("A", "f1", "happy", "happy"), ("A", "f1", "happy", "happy"), ("A", "f1", "happy", "happy"),
    ("B", "f1", "sad", "sad"), ("B", "f1", "sad", "sad"),
    ("C", "f2", "surprise", "happy"), ("C", "f2", "surprise", "sad"), ("C", "f2", "happy", "surprise"),
    ("C", "f2", "sad", "sad"),
]


def test_predictions_file_pooled_beside_averaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "theirs.csv"
    pd.DataFrame(ROWS, columns=["Subject", "split", "truth", "guess"]).to_csv(path, index=False)
    code, out, err = run_in_process(mer_main, ["audit", "--predictions", str(path), "--subject-col", "Subject",
                                               "--label-col", "truth", "--pred-col", "guess", "--fold-col", "split"], capsys)
    assert code == 0, err
    pooled = macro([r[2] for r in ROWS], [r[3] for r in ROWS])
    def mean_over(column: int, groups: tuple[str, ...]) -> np.ndarray:
        return np.mean([macro([r[2] for r in ROWS if r[column] == g], [r[3] for r in ROWS if r[column] == g])
                        for g in groups], axis=0)
    per_subject, per_fold = mean_over(0, ("A", "B", "C")), mean_over(1, ("f1", "f2"))
    assert pooled[0] == pytest.approx((6 / 8 + 6 / 7 + 0) / 3)  # happy, sad, surprise F1 counted by hand
    assert per_subject[0] == pytest.approx((1 + 1 + (0 + 2 / 3 + 0) / 3) / 3)  # A, B, C
    assert per_subject[0] - pooled[0] > 0.15  # the file is built so that averaging inflates the score
    record = json.loads(path.with_suffix(".audit.json").read_text())["averaging"]
    assert record["pooled"]["uf1"] == pytest.approx(pooled[0]) and record["pooled"]["uar"] == pytest.approx(pooled[1])
    assert [record["mean_per_Subject"]["uf1"], record["mean_per_Subject"]["uar"]] == pytest.approx(per_subject)
    assert [record["mean_per_split"]["uf1"], record["mean_per_split"]["uar"]] == pytest.approx(per_fold)
    assert f"UF1 {pooled[0]:.4f}  UAR {pooled[1]:.4f}" in out
    difference = f"(minus pooled: UF1 {per_subject[0] - pooled[0]:+.4f}, UAR {per_subject[1] - pooled[1]:+.4f})"
    assert f"UF1 {per_subject[0]:.4f}  UAR {per_subject[1]:.4f}  {difference}" in out
    assert "mean of 3 per-Subject scores" in out and "mean of 2 per-split scores" in out


@pytest.mark.parametrize("argv, fragment", [
    (["audit"], "either a run directory"),
    (["audit", "/nonexistent/run"], "/nonexistent/run is not a directory"),
    (["audit", "--predictions", "{csv}", "--label-col", "truth"],
     "no column 'truth' (--label-col); its columns are subject, label, pred"),
])
def test_user_errors_are_one_line(argv: list[str], fragment: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "ours.csv"
    csv.write_text("subject,label,pred\n01,0,1\n")
    code, _, err = run_in_process(mer_main, [arg.format(csv=csv) for arg in argv], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
