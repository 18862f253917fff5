"""`mer probe`: the linear identity probe (planted identity found, none reported as chance), its
split and pooling written out by hand, each model's probe features, and the command end to end on
a tiny `mer loso` run with its one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from experiments.main import mer_main
from experiments.probe import output_stem
from experiments.probe.extract import load_weights, weights_file
from experiments.probe.linear import FoldProbe, balanced_accuracy, chance_level, pool_folds, probe_fold, split_per_subject
from datamodules import SyntheticDataModule
from lightning_modules import MEDN, STSTNet, Xie2022
from lightning_modules.base import MERClassifier
from lightning_modules.fold_batch_module import FoldBatch
from tests.conftest import TINY_SYNTHETIC, run_in_process


def subjects_of(n_subjects: int, per_subject: int) -> np.ndarray:
    return np.repeat([f"s{i:02d}" for i in range(n_subjects)], per_subject)


def probe_folds(features: np.ndarray, subjects: np.ndarray, n_folds: int) -> list[FoldProbe]:
    """The same samples probed with `n_folds` different fit/held-out splits, as folds of a run."""
    return [probe_fold(k, features, subjects, split_per_subject(subjects, seed=[0, k])) for k in range(n_folds)]


# -- the probe's arithmetic, by hand --------------------------------------------------------------
def test_balanced_accuracy_is_the_mean_recall_of_the_true_classes() -> None:
    true = np.array(["a", "a", "b", "b", "b"])
    pred = np.array(["a", "b", "b", "b", "c"])
    assert balanced_accuracy(true, pred) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_chance_level_weights_each_subjects_folds_by_its_held_out_samples() -> None:
    """Fold 0 probes {a, b} (chance 1/2), fold 1 probes {a, b, c, d} (chance 1/4), one held-out sample
    each. A uniform guesser's recall: a and b (1/2 + 1/4)/2 = 0.375 with variance
    (1/2·1/2 + 1/4·3/4)/2^2 = 0.109375; c and d 1/4 with variance 3/16. Balanced accuracy: the mean of
    the four, variance (2·0.109375 + 2·0.1875)/4^2."""
    fold0 = FoldProbe(0, np.array(["a", "b"]), np.array(["a", "a"]), ["a", "b"], 2, True)
    fold1 = FoldProbe(1, np.array(["a", "b", "c", "d"]), np.array(["a"] * 4), ["a", "b", "c", "d"], 4, True)
    mean, sd = chance_level([fold0, fold1])
    assert mean == pytest.approx((0.375 + 0.375 + 0.25 + 0.25) / 4)
    assert sd == pytest.approx(np.sqrt((2 * 0.109375 + 2 * 0.1875) / 16))
    assert chance_level([fold1, fold1])[0] == pytest.approx(1 / 4)
    pooled = pool_folds([fold0, fold1])  # pairs pooled: a 2/2 hits, b 0/2, c 0/1, d 0/1
    assert pooled["balanced_accuracy"] == pytest.approx(1 / 4)
    assert pooled["ratio"] == pytest.approx(0.25 / 0.3125)
    assert pooled["mean_fold_balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_split_halves_every_subject_and_skips_single_samples() -> None:
    subjects = np.array(["a"] * 5 + ["b"] * 4 + ["c"])
    split = split_per_subject(subjects, seed=3)
    assert split.subjects == ["a", "b"] and split.skipped == ["c"]
    assert not set(split.fit) & set(split.heldout)
    assert sorted([*split.fit, *split.heldout]) == list(range(9))
    assert [int(np.sum(subjects[split.fit] == s)) for s in "ab"] == [3, 2]
    assert [int(np.sum(subjects[split.heldout] == s)) for s in "ab"] == [2, 2]
    again = split_per_subject(subjects, seed=3)
    assert np.array_equal(again.fit, split.fit) and np.array_equal(again.heldout, split.heldout)
    assert any(not np.array_equal(split_per_subject(subjects, seed=s).fit, split.fit) for s in range(4, 10))


# -- the probe on features with and without identity ----------------------------------------------
def test_probe_finds_planted_identity() -> None:
    """Subject centres drawn N(0, 3^2) per dimension in 20 dims lie about 3·sqrt(40) ≈ 19 noise sds
    apart: a linear probe must name (nearly) every held-out sample's subject."""
    rng = np.random.default_rng(0)
    subjects = subjects_of(6, 20)
    centres = rng.normal(0, 3, size=(6, 20))
    features = centres[np.repeat(np.arange(6), 20)] + rng.normal(size=(120, 20))
    pooled = pool_folds(probe_folds(features, subjects, n_folds=2))
    assert pooled["balanced_accuracy"] >= 0.95
    assert pooled["chance"] == pytest.approx(1 / 6) and pooled["ratio"] >= 0.95 * 6


def test_probe_reports_chance_without_identity() -> None:
    """Features independent of the subject: whatever the fitted probe, its held-out hits are independent
    draws with E[balanced accuracy] = sum_s P(pred = s) / S = 1/S, and Var = sum_s q_s(1-q_s) / (m S^2)
    <= 1/(4 m S) (m held-out samples per subject over the pooled folds). S = 5, m = 3 folds x 100 = 300:
    sd <= 0.0129, so 4 sd = 0.052 is the tolerance."""
    rng = np.random.default_rng(1)
    subjects = subjects_of(5, 200)
    features = rng.normal(size=(1000, 16))
    pooled = pool_folds(probe_folds(features, subjects, n_folds=3))
    assert pooled["n_heldout"] == 1500 and pooled["chance"] == pytest.approx(0.2)
    assert abs(pooled["balanced_accuracy"] - 0.2) <= 4 * np.sqrt(1 / (4 * 300 * 5))


# -- what each model declares ---------------------------------------------------------------------
def test_medn_probe_features_are_its_motion_and_emotion_features() -> None:
    model = MEDN(image_size=72, patch_size=18, embed_dim=16, num_heads=2, sparse_rates=[1, 2, 4]).eval()
    g = torch.Generator().manual_seed(0)
    batch = {"flow": torch.randn(3, 7, 2, 72, 72, generator=g), "frames": torch.rand(3, 8, 3, 72, 72, generator=g)}
    with torch.no_grad():
        features, out = model.probe_features(batch), model(batch)
    assert {name: tuple(f.shape) for name, f in features.items()} == {
        "motion": (3, 16), "emotion": (3, 16), "motion_perp": (3, 16), "emotion_perp": (3, 16)}
    for name, key in (("motion", "f_m"), ("emotion", "f_e"), ("motion_perp", "f_m_perp"), ("emotion_perp", "f_e_perp")):
        torch.testing.assert_close(features[name], out[key])


def test_ststnet_probe_features_are_what_its_classifier_reads() -> None:
    model = STSTNet(num_classes=3).eval()
    batch = {"apex_flow": torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        pooled = model.probe_features(batch)["pooled"]
        logits = model(batch)["logits"]
    assert pooled.shape == (4, 16 * 5 * 5)  # the published 5x5x16 pooled map
    torch.testing.assert_close(model.net.classifier(pooled), logits)


@pytest.mark.parametrize("use_idnet_mine", [True, False])
def test_xie2022_probe_features_are_menet_and_idnet_features(use_idnet_mine: bool) -> None:
    model = Xie2022(num_classes=3, num_identities=3, num_frames=4, menet_size=32, idnet_size=16, base_width=8,
                    use_idnet_mine=use_idnet_mine).eval()
    batch = {"frames": torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        features = model.probe_features(batch)
        logits = model(batch)["logits"]
    assert set(features) == ({"f_e", "f_d"} if use_idnet_mine else {"f_e"})
    assert features["f_e"].shape == (2, model.menet.feature_dim)
    torch.testing.assert_close(model.menet.backbone.fc(features["f_e"]), logits)
    if use_idnet_mine:
        assert features["f_d"].shape == (2, model.idnet.feature_dim)
        torch.testing.assert_close(features["f_d"], model.idnet(batch["frames"])["features"])


def test_a_fold_batched_folds_weights_are_its_slice_of_the_group_checkpoint(tmp_path: Path) -> None:
    """Under --fold-batch a fold's record names its group; its weights are its slice of the group's
    stacked checkpoint, laid out by FoldBatch itself here."""
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(STSTNet(num_classes=3))
    group = tmp_path / "folds" / "group_0-1"
    group.mkdir(parents=True)
    torch.save({"state_dict": FoldBatch(models, batches=None).state_dict()}, group / "last.ckpt")
    (tmp_path / "folds" / "fold_001.json").write_text(json.dumps({"fold": 1, "fold_group": [0, 1]}))
    path, position = weights_file(tmp_path, 1)
    assert (path, position) == (group / "last.ckpt", 1)
    fresh = STSTNet(num_classes=3)
    load_weights(fresh, path, position)
    for name, value in models[1].state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value)
    assert weights_file(tmp_path, 0) == (tmp_path / "folds" / "fold_000" / "last.ckpt", None)  # no record: its own


# -- the command ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folds 0 and 1 of a tiny MEDN LOSO run (4 subjects, 1 epoch of 1 batch); folds 2 and 3 unfinished."""
    run_dir = tmp_path_factory.mktemp("probe") / "run"
    code = None
    try:
        mer_main(["loso", "--config", str(tiny_config), "--output", str(run_dir), "--wandb", "disabled", "--folds", "0-1",
                  "--trainer.limit_train_batches", "1"])
    except SystemExit as exit_:
        code = exit_.code
    assert code in (None, 0), f"mer loso failed with exit code {code}"
    return run_dir


@pytest.mark.slow
def test_mer_probe_end_to_end(tiny_run: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_in_process(mer_main, ["probe", str(tiny_run), "--output", str(tmp_path / "probe")], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "probe" / "probe_folds-0-1.json").read_text())  # 2 of 4 folds: not the run's name
    plan = json.loads((tiny_run / "run.json").read_text())
    clips = SyntheticDataModule(**TINY_SYNTHETIC, cache_dir=str(cache_dir)).table["subject"].astype(str).value_counts()
    assert result["model"] == "MEDN" and result["folds"] == [0, 1]
    assert set(result["features"]) == {"motion", "emotion", "motion_perp", "emotion_perp"}
    for fold in result["per_fold"]:
        test_subjects = plan["test_subjects"][str(fold["fold"])]
        assert fold["test_subjects"] == test_subjects
        assert not set(fold["probed_subjects"]) & set(test_subjects) and len(fold["probed_subjects"]) == 3
        counts = [clips[s] for s in fold["probed_subjects"]]  # each subject: ceil(n/2) fit, the rest held out
        assert (fold["n_fit"], fold["n_heldout"]) == (sum((n + 1) // 2 for n in counts), sum(n // 2 for n in counts))
    motion = result["features"]["motion"]
    assert motion["dim"] == 16 and motion["pooled"]["chance"] == pytest.approx(1 / 3)
    assert [f["fold"] for f in motion["per_fold"]] == [0, 1]
    assert any("fold 2" in note and "not finished" in note for note in result["notes"])
    assert (tmp_path / "probe" / "probe_folds-0-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(path.name for path in (tmp_path / "probe").iterdir()) == ["probe_folds-0-1.json", "probe_folds-0-1.png"]
    assert not (tiny_run / "probe.json").exists()
    table = out.splitlines()
    assert any(line.split()[:2] == ["motion", "16"] for line in table)
    assert "ratio" in out and "probe" in err  # the table, and the progress bar over folds on stderr

    code, _, err = run_in_process(mer_main, ["probe", str(tiny_run), "--folds", "1-3"], capsys)  # 2, 3 unfinished
    assert code == 0, err
    assert json.loads((tiny_run / "probe_folds-1.json").read_text())["folds"] == [1]
    assert (tiny_run / "probe_folds-1.png").is_file() and not (tiny_run / "probe.json").exists()


def test_probe_files_are_named_by_the_folds_probed() -> None:
    """Only a probe of every fold of the run takes the run's name (probe.json)."""
    plan = SimpleNamespace(n_folds=4)
    assert output_stem([0, 1, 2, 3], plan) == "probe" and output_stem([0, 1, 2, 3], plan, "held_out") == "probe_held_out"
    assert output_stem([0, 1], plan) == "probe_folds-0-1" and output_stem([1, 3], plan, "held_out") == "probe_held_out_folds-1,3"


def one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.slow
def test_mer_probe_errors(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert "not a run dir" in one_line_error(*run_in_process(mer_main, ["probe", str(tmp_path)], capsys)[::2])
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("run.json", "config.yaml"):
        shutil.copy(tiny_run / name, unfinished / name)
    assert "no finished fold" in one_line_error(*run_in_process(mer_main, ["probe", str(unfinished)], capsys)[::2])
    line = one_line_error(*run_in_process(mer_main, ["probe", str(tiny_run), "--folds", "3"], capsys)[::2])
    assert "no finished fold among --folds 3" in line
    line = one_line_error(*run_in_process(mer_main, ["probe", str(tiny_run), "--subjects", "held_out",
                                                     "--output", str(tmp_path / "h")], capsys)[::2])
    assert "held-out (test) subjects" in line and "k_folds" in line  # LOSO holds out one subject: nothing to tell apart
    if not torch.cuda.is_available():
        line = one_line_error(*run_in_process(mer_main, ["probe", str(tiny_run), "--device", "cuda"], capsys)[::2])
        assert "no CUDA device" in line
    monkeypatch.setattr(MEDN, "probe_features", MERClassifier.probe_features)
    line = one_line_error(*run_in_process(mer_main, ["probe", str(tiny_run), "--output", str(tmp_path / "x")], capsys)[::2])
    assert "MEDN declares no probe-able features" in line and not (tmp_path / "x" / "probe.json").exists()
