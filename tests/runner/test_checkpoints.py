"""Checkpoints of the runner (``experiments.runner.checkpoints``): written atomically with the previous
resume point kept, an interrupted or killed write leaves the old file whole, and a damaged checkpoint
(truncated, flipped bytes, empty) is named in one line and replaced by the previous one, or the job
starts again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from experiments.runner import checkpoints
from experiments.runner.checkpoints import AtomicCheckpointIO, UnreadableCheckpoint, checkpoint_epoch, resume_checkpoint
from experiments.runner.jobs.fold_job import EpochEndCheckpoint
from experiments.runner.paths import FoldPaths
from experiments.runner.run_plan import RunConfig, instantiate

ROOT = Path(__file__).resolve().parents[2]


class Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(root: Path, epochs: int, **trainer) -> L.Trainer:
    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,))), batch_size=8)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=True,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                        callbacks=[EpochEndCheckpoint(FoldPaths(root, 0).last_ckpt)], **trainer)
    trainer.fit(Linear(), data)
    return trainer


def lightning_checkpoint(path: Path, epoch: int, size: int = 1000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.full((size,), float(epoch))}, "epoch": epoch}, path)


def test_each_epoch_replaces_last_ckpt_atomically_keeping_the_previous_one(tmp_path: Path) -> None:
    fit(tmp_path, epochs=3, plugins=[AtomicCheckpointIO()])
    fold = FoldPaths(tmp_path, 0)
    assert torch.load(fold.last_ckpt, weights_only=False)["epoch"] == 2
    assert torch.load(fold.dir / "previous.ckpt", weights_only=False)["epoch"] == 1
    assert sorted(p.name for p in fold.dir.iterdir()) == ["last.ckpt", "previous.ckpt"]  # no temporary file left


def test_the_runner_builds_every_trainer_with_atomic_checkpoints(tiny_config: Path) -> None:
    cli = instantiate(RunConfig.from_yaml(tiny_config.read_text()))
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO


def test_an_interrupted_write_leaves_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    last = tmp_path / "last.ckpt"
    lightning_checkpoint(last, epoch=0)
    before = last.read_bytes()

    def half_then_ctrl_c(obj, file) -> None:
        file.write(before[: len(before) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.torch, "save", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}, "epoch": 1}, last)
    assert last.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


WRITER = """
import sys, time, torch
from experiments.runner import checkpoints
io, path = checkpoints.AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0}, path)

def half_then_wait(obj, file):
    file.write(b"PK" * 50_000)
    file.flush()
    print("half written", flush=True)
    time.sleep(300)

checkpoints.torch.save = half_then_wait
io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "epoch": 1}, path)
"""


def test_a_writer_killed_mid_write_leaves_the_old_checkpoint(tmp_path: Path) -> None:
    """SIGKILL while the epoch-1 checkpoint is half written: last.ckpt is still the whole epoch-0 one; the
    killed writer's temporary file is removed when the fold resumes."""
    fold = FoldPaths(tmp_path, 0)
    fold.dir.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(fold.last_ckpt)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert writer.stdout is not None and writer.stdout.readline() == "half written\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert checkpoint_epoch(fold.last_ckpt) == 0 and len(list(fold.dir.glob(".last.ckpt.*.tmp.ckpt"))) == 1
    assert resume_checkpoint(fold, "fold 0") == fold.last_ckpt and [p.name for p in fold.dir.iterdir()] == ["last.ckpt"]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # bytes flipped inside the stored weights: torch.load alone reads them without complaint
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 8]) + data[middle + 8:])


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty"])
def test_a_damaged_last_checkpoint_is_named_and_the_previous_one_resumed(tmp_path: Path, how: str,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    fold = FoldPaths(tmp_path, 3)
    lightning_checkpoint(fold.dir / "previous.ckpt", epoch=4)
    lightning_checkpoint(fold.last_ckpt, epoch=5)
    (fold.dir / ".last.ckpt.x1y2.tmp.ckpt").write_bytes(b"half")  # left by a killed writer
    damage(fold.last_ckpt, how)
    with pytest.raises(UnreadableCheckpoint):
        checkpoint_epoch(fold.last_ckpt)
    assert resume_checkpoint(fold, "fold 3") == fold.last_ckpt
    assert checkpoint_epoch(fold.last_ckpt) == 4 and sorted(p.name for p in fold.dir.iterdir()) == ["last.ckpt"]
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"warning: fold 3: {fold.last_ckpt} is unreadable (") and \
        err.rstrip().endswith("resuming from previous.ckpt (epoch 4)")


def test_without_a_readable_checkpoint_the_job_starts_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fold = FoldPaths(tmp_path, 0)
    lightning_checkpoint(fold.last_ckpt, epoch=2)
    lightning_checkpoint(fold.dir / "previous.ckpt", epoch=1)
    (fold.dir / "logs" / "version_0").mkdir(parents=True)
    damage(fold.last_ckpt, "flipped")
    damage(fold.dir / "previous.ckpt", "truncated")
    assert resume_checkpoint(fold, "fold 0") is None
    assert not fold.dir.exists()  # no logs or checkpoints of the abandoned attempt
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "fails its CRC check" in err and \
        f"{fold.dir / 'previous.ckpt'} is unreadable" in err and err.rstrip().endswith("training it again from the start")


def test_a_missing_last_checkpoint_resumes_the_previous_one_and_no_checkpoint_says_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fold = FoldPaths(tmp_path, 1)
    assert resume_checkpoint(fold, "fold 1") is None and capsys.readouterr().err == ""
    lightning_checkpoint(fold.dir / "previous.ckpt", epoch=0)
    assert resume_checkpoint(fold, "fold 1") == fold.last_ckpt and checkpoint_epoch(fold.last_ckpt) == 0
    assert "last.ckpt is missing: resuming from previous.ckpt (epoch 0)" in capsys.readouterr().err
    lightning_checkpoint(fold.dir / "previous.ckpt", epoch=7)
    assert resume_checkpoint(fold, "fold 1") == fold.last_ckpt and checkpoint_epoch(fold.last_ckpt) == 0  # last wins
