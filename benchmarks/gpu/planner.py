"""The planner's prediction for a row's config (pretrain/planning; docs/plan.md): tokens/s and
the fullest rank's memory on one device of the run's cluster config, so the first GPU run
also checks the planner. Arithmetic only: it runs in the benchmark's own process."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from gpu.rows import Setup, Shape, train_overrides
from pretrain.config import load_train_config
from pretrain.planning.cluster import GIB, ClusterConfig
from pretrain.planning.preflight import CLUSTER_DIR, cluster_of_gpu, load_cluster
from pretrain.planning.search import Planner


def one_device_cluster(gpu_name: Optional[str], gpu_memory_gib: Optional[float]) -> ClusterConfig:
    """configs/cluster/cpu.yaml without a GPU; else the GPU's (h100-80gb, h200, ...) with its
    real memory; one device either way."""
    cluster = load_cluster(CLUSTER_DIR / "cpu.yaml") if gpu_name is None else cluster_of_gpu(gpu_name)
    if gpu_memory_gib is not None:
        cluster = dataclasses.replace(cluster, memory_gib=gpu_memory_gib)
    return dataclasses.replace(cluster, nodes=1, gpus_per_node=1)


def predict(setup: Setup, shape: Shape, corpus: Path, cluster: ClusterConfig) -> dict:
    cfg = load_train_config(train_overrides(setup, shape, corpus, Path("unused")))
    plan = Planner(cluster).plan(cfg, world_size=1)
    return {"tokens_per_s": plan.speed.tokens_per_s, "peak_gib": plan.memory.fullest.total / GIB}
