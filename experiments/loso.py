"""``mer loso``: every leave-one-subject-out fold, then UF1/UAR once on the pooled predictions.

Each fold gets a fresh model and Trainer built from the same config, seeded with
``seed_everything + fold``, trained for the configured epochs (or early-stopped on an inner
validation split of training subjects) and its LAST weights predict the held-out subject.
Nothing is selected on the held-out subject.

Output directory::

    config.yaml  run.json          resolved config and its hash (a rerun must match it)
    folds/fold_007.csv             predictions of a finished fold (a rerun skips it)
    folds/fold_007/                CSV logs and last checkpoint of that fold
    wandb/                         offline W&B runs (one per fold + one 'pooled'), `wandb sync`
    predictions.csv  metrics.json  confusion_matrix.png
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from .cli import make_cli
from datamodules.errors import MERError
from .metrics import pooled_metrics
from .reporting import atomic_write_csv, atomic_write_text, plot_confusion_matrix, result_table, write_json

FOLD_FILE = "fold_{:03d}.csv"


class FoldProgress(L.Callback):
    """Shows the running fold's epoch and loss on the outer progress bar over folds."""

    def __init__(self, bar: tqdm, fold: int, subject: str) -> None:
        self.bar, self.fold, self.subject = bar, fold, subject

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        self.bar.set_postfix_str(
            f"fold {self.fold} ({self.subject}) epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
            + (f" loss {float(loss):.3f}" if loss is not None else "")
        )


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Runner options; everything else is passed to LightningCLI (--config, overrides)."""
    parser = argparse.ArgumentParser(prog="mer loso", allow_abbrev=False, add_help=False)
    parser.add_argument("--output", type=Path, default=None, help="output directory (default outputs/<config name>)")
    parser.add_argument("--folds", default=None, help="run only these folds, e.g. '0-9' or '3,5' (SLURM arrays)")
    parser.add_argument("--wandb", choices=("offline", "online", "disabled"), default=os.environ.get("WANDB_MODE", "offline"))
    parser.add_argument("--wandb-project", default="mer-suite")
    options, rest = parser.parse_known_args(argv)
    if "--config" not in rest and not any(a.startswith("--config=") for a in rest):
        raise MERError("mer loso needs --config CFG (e.g. configs/medn/synthetic.yaml)")
    return options, rest


def default_output(cli_args: list[str]) -> Path:
    config = next(a.split("=", 1)[1] if "=" in a else cli_args[i + 1] for i, a in enumerate(cli_args) if a.startswith("--config"))
    path = Path(config)
    return Path("outputs") / f"{path.parent.name}-{path.stem}"


def parse_folds(spec: str | None, n_folds: int) -> list[int]:
    if spec is None:
        return list(range(n_folds))
    folds: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        try:
            folds.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise MERError(f"--folds '{spec}' is not a list of fold indices like '0-9' or '3,5'") from None
    bad = sorted(f for f in folds if not 0 <= f < n_folds)
    if bad:
        raise MERError(f"--folds {spec}: fold(s) {bad} out of range, this dataset has folds 0..{n_folds - 1}")
    return sorted(folds)


LOSO_HELP = """usage: mer loso --config CFG [--output DIR] [--folds SPEC] [--wandb MODE] [--wandb-project NAME] [overrides]

Every leave-one-subject-out fold of CFG, then UF1/UAR/accuracy once on the pooled predictions.
  --output DIR          results (default outputs/<config folder>-<config name>); rerun to resume
  --folds SPEC          only these folds, e.g. 0-9 or 3,5 (pooled metrics once all are done)
  --wandb MODE          offline (default, or $WANDB_MODE), online, disabled
  --wandb-project NAME  W&B project (default mer-suite)
  overrides             any LightningCLI option, e.g. --model.init_args.lambda_orth 0.5 --trainer.max_epochs 50
"""


def loso_main(argv: list[str]) -> None:
    if {"-h", "--help"} & set(argv):
        print(LOSO_HELP)
        return
    options, cli_args = parse_args(argv)
    run_loso(cli_args, options.output or default_output(cli_args), options.wandb, options.wandb_project, options.folds)


def quiet_lightning() -> None:
    """Per-fold Trainer chatter would bury the fold progress bar: keep warnings and errors only."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*LightningCLI's args parameter.*", ".*smaller than the logging interval.*",
                    ".*Total length of .* across ranks is zero.*", ".*LeafSpec.*", ".*does not have many workers.*"):
        warnings.filterwarnings("ignore", message=message)


def run_loso(cli_args: list[str], output: Path, wandb_mode: str = "offline", project: str = "mer-suite",
             folds: str | None = None) -> dict[str, Any] | None:
    """Run (or resume) a LOSO experiment into `output`; returns the pooled metrics once all folds are done."""
    quiet_lightning()
    os.environ.setdefault("WANDB_SILENT", "true")
    probe = make_cli(cli_args, run=False, save_config_callback=None)
    datamodule = probe.datamodule
    datamodule.prepare_data()
    subjects, class_names = datamodule.subjects, datamodule.class_names
    config_yaml = probe.parser.dump(probe.config, skip_none=False)
    config_hash = hashlib.sha256(config_yaml.encode()).hexdigest()[:12]
    base_seed = int(probe.config.seed_everything or 0)
    del probe

    output.mkdir(parents=True, exist_ok=True)
    (output / "folds").mkdir(exist_ok=True)
    _claim_output(output, config_yaml, config_hash, len(subjects))
    selected = parse_folds(folds, len(subjects))
    todo = [k for k in selected if not (output / "folds" / FOLD_FILE.format(k)).exists()]
    group = f"{output.name}-{config_hash}"
    with tqdm(total=len(selected), initial=len(selected) - len(todo), desc="LOSO folds", unit="fold") as bar:
        for k in todo:
            _run_fold(cli_args, output, k, subjects[k], base_seed + k, bar, wandb_mode, project, group)
            bar.update()

    finished = sorted(output.glob("folds/fold_*.csv"))
    if len(finished) < len(subjects):
        print(f"{len(finished)} of {len(subjects)} folds finished in {output}; pooled metrics are written once all are done.")
        return None
    return _report(output, finished, class_names, config_yaml, config_hash, wandb_mode, project, group)


def _claim_output(output: Path, config_yaml: str, config_hash: str, n_folds: int) -> None:
    """Refuse to mix folds of different configs in one directory."""
    run_file = output / "run.json"
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if previous.get("config_hash") != config_hash:
            raise MERError(
                f"{output} holds a LOSO run of another config (hash {previous.get('config_hash')} vs {config_hash}); "
                "use another --output or delete that directory"
            )
        return
    atomic_write_text(output / "config.yaml", config_yaml)
    write_json(run_file, {"config_hash": config_hash, "n_folds": n_folds})


def _fold_loggers(output: Path, k: int, subject: str, wandb_mode: str, project: str, group: str) -> list[dict[str, Any]]:
    loggers: list[dict[str, Any]] = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": str(output / "folds"), "name": f"fold_{k:03d}", "version": "logs"}}
    ]
    if wandb_mode != "disabled":
        loggers.append(
            {"class_path": "lightning.pytorch.loggers.WandbLogger",
             "init_args": {"project": project, "group": group, "name": f"fold-{k:03d}-{subject}", "job_type": "fold",
                           "save_dir": str(output), "offline": wandb_mode == "offline"}}
        )
    return loggers


def _run_fold(cli_args: list[str], output: Path, k: int, subject: str, seed: int, bar: tqdm,
              wandb_mode: str, project: str, group: str) -> None:
    """Train a fresh model on every subject but `subject`, predict `subject`, save atomically."""
    shutil.rmtree(output / "folds" / f"fold_{k:03d}", ignore_errors=True)  # leftovers of a killed run
    trainer_defaults = {
        "logger": _fold_loggers(output, k, subject, wandb_mode, project, group),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [FoldProgress(bar, k, subject)],
    }
    fold_args = [*cli_args, "--data.init_args.fold", str(k), "--seed_everything", str(seed)]
    cli = make_cli(fold_args, run=False, trainer_defaults=trainer_defaults, save_config_callback=None)
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    try:
        trainer.fit(model, datamodule=datamodule)
        batches = trainer.predict(model, datamodule=datamodule)
    finally:
        if wandb_mode != "disabled":
            import wandb

            wandb.finish()
    index = torch.cat([b["index"] for b in batches]).numpy()
    probs = torch.cat([b["probs"] for b in batches]).numpy()
    table = datamodule.table
    expected = set(datamodule.split()["test"].tolist())
    if set(index.tolist()) != expected or len(index) != len(expected):
        raise RuntimeError(f"fold {k}: predictions do not cover exactly the held-out subject's samples")
    rows = table.iloc[index]
    if set(rows["subject"].astype(str)) != {subject}:
        raise RuntimeError(f"fold {k}: predicted samples of subjects other than {subject}")
    frame = pd.DataFrame(
        {
            "sample_id": rows["sample_id"].to_numpy(),
            "subject": rows["subject"].astype(str).to_numpy(),
            "dataset": rows["dataset"].to_numpy(),
            "fold": k,
            "label": rows["label"].to_numpy(),
            "pred": probs.argmax(1),
        }
    )
    for c, name in enumerate(datamodule.class_names):
        frame[f"prob_{name}"] = probs[:, c]
    atomic_write_csv(output / "folds" / FOLD_FILE.format(k), frame)


def _report(output: Path, finished: list[Path], class_names: tuple[str, ...], config_yaml: str, config_hash: str,
            wandb_mode: str, project: str, group: str) -> dict[str, Any]:
    predictions = pd.concat([pd.read_csv(p, dtype={"subject": str, "sample_id": str}) for p in finished], ignore_index=True)
    metrics = pooled_metrics(predictions, class_names)
    metrics.update(class_names=list(class_names), config=yaml.safe_load(config_yaml), config_hash=config_hash)
    atomic_write_csv(output / "predictions.csv", predictions)
    write_json(output / "metrics.json", metrics)
    plot_confusion_matrix(
        metrics["confusion_matrix"], class_names, output / "confusion_matrix.png",
        f"{output.name}: UF1 {metrics['uf1']:.3f}  UAR {metrics['uar']:.3f}  (n={metrics['n_samples']})",
    )
    if wandb_mode != "disabled":
        _log_pooled_to_wandb(output, metrics, wandb_mode, project, group)
    print(result_table(metrics))
    print(f"outputs: {output}/predictions.csv, metrics.json, confusion_matrix.png")
    return metrics


def _log_pooled_to_wandb(output: Path, metrics: dict[str, Any], mode: str, project: str, group: str) -> None:
    import wandb

    run = wandb.init(project=project, group=group, name="pooled", job_type="pooled", dir=str(output), mode=mode,
                     config=metrics["config"], reinit=True)
    summary = {"pooled/uf1": metrics["uf1"], "pooled/uar": metrics["uar"], "pooled/acc": metrics["acc"]}
    for name, m in metrics["per_dataset"].items():
        summary.update({f"pooled/{name}/uf1": m["uf1"], f"pooled/{name}/uar": m["uar"]})
    run.log({**summary, "confusion_matrix": wandb.Image(str(output / "confusion_matrix.png"))})
    run.summary.update(summary)
    run.finish()
