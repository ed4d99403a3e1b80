"""Running a stage's work units: on local processes, as Slurm job arrays (submitit) or as Ray tasks."""
