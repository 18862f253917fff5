"""`mer` that pauses a fold right after one of its epoch-end checkpoints, so that a test interrupts or kills
it at a known point (never while a file is being written, never after the fold finished)::

    python -m tests.helpers.paused_mer EPOCH MARKER loso --config ... --output ...

Once the resume point of epoch EPOCH (0-based) is saved, the process writes the file MARKER and sleeps
until a signal ends it (an error after PAUSE_LIMIT_S). A process that finds MARKER already there does not
pause, so the same command resumes the run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from experiments.main import mer_main
from experiments.runner.jobs.fold_job import EpochEndCheckpoint

PAUSE_LIMIT_S = 300.0


def main(argv: list[str]) -> None:
    epoch, marker, *args = argv
    save = EpochEndCheckpoint.on_train_epoch_end

    def save_then_pause(self, trainer, pl_module) -> None:
        save(self, trainer, pl_module)
        if trainer.current_epoch == int(epoch) and not Path(marker).exists():
            Path(marker).write_text("paused\n")
            deadline = time.monotonic() + PAUSE_LIMIT_S
            while time.monotonic() < deadline:
                time.sleep(0.05)
            raise RuntimeError(f"paused_mer: no signal ended the pause within {PAUSE_LIMIT_S:g} s")

    EpochEndCheckpoint.on_train_epoch_end = save_then_pause
    mer_main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
