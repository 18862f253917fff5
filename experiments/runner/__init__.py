"""The fold runner behind ``mer loso``.

- ``run_plan``: a planned run as data (RunPlan = run.json, RunConfig = config.yaml's fields the runner
  reads, fold_plan.json) and building a config's objects; imports nothing else of the runner.
- ``options``: ``mer loso``'s options, one group per concern, each checked in one place (``slurm_options``:
  the SLURM group, light enough for ``mer sweep --help``).
- ``planning``: every check, then the run directory claimed; ``orchestration``: plan, execute, pool
  (``--seeds``: per seed, then ``seed_runs``' summary).
- ``jobs/``: what executors run, a fold (``FoldJob``) or folds trained at once (``FoldGroupJob``), each
  with one ``run()``; ``jobs/fold_outputs`` writes every fold's record and predictions.
- ``executors/``: jobs in this process or in worker processes (``local``), as a SLURM job array
  (``slurm``), and the worker command an array task runs (``worker``).
- ``pooling``: predictions.csv, metrics.json and the confusion matrix from the finished folds.
- ``paths`` (where a fold's files live), ``fold_selection`` (``--folds 0-9``), ``wandb_runs``.
"""
