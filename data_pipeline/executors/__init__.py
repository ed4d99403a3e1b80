"""Running a stage's work units: on local processes, as Slurm job arrays (submitit) or as Ray tasks.

Every executor has ``run(stages)``: the stages in order, each one's pending units (those
without a completion marker) done with ``stage.run_unit``, which writes the marker."""
