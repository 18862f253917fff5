"""Where jobs run: in this process or in worker processes (``local``), or as a SLURM job array
(``slurm``, whose tasks run the ``worker`` command); every executor calls a job's ``run()``."""
