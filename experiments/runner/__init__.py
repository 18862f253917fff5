"""The fold runner: a fold is a serialisable job; executors run jobs serially, as worker processes
pinned to devices, or as SLURM array tasks; pooling is a separate, rerunnable step."""
