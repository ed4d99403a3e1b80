"""executor=ray: every pending unit of a stage as a Ray task, the stages one after the other,
on the cluster at executor.ray.address or on a local Ray started (and stopped) here."""

from __future__ import annotations

from typing import Sequence

from data_pipeline.executors.config import RayConfig
from data_pipeline.executors.pool import UnitFailedError
from data_pipeline.executors.stage import Stage, run_unit


class RayExecutor:
    def __init__(self, config: RayConfig) -> None:
        self.config = config

    def run(self, stages: Sequence[Stage]) -> None:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            local = {"num_cpus": self.config.num_cpus} if self.config.address is None else {}
            ray.init(address=self.config.address, include_dashboard=False, log_to_driver=False, **local)
        try:
            # no retries: a unit that fails (or whose worker dies) fails the run, named
            remote_unit = ray.remote(num_cpus=self.config.cpus_per_task, max_retries=0)(run_unit)
            for stage in stages:
                running = {remote_unit.remote(stage, unit): unit for unit in stage.pending()}
                while running:
                    done, _ = ray.wait(list(running), num_returns=1)
                    unit = running.pop(done[0])
                    try:
                        ray.get(done[0])
                    except ray.exceptions.RayError as error:
                        for reference in running:
                            ray.cancel(reference, force=True)
                        raise UnitFailedError(f"{stage.name} unit {unit} failed on Ray: {error}") from None
        finally:
            if started_here:
                ray.shutdown()
