"""``python -m pretrain.plan model=gpt-13b train.seq_len=2048 train.global_batch_size=1024
cluster=h100-80gb cluster.nodes=16 [output=plan.jsonl]``: every parallel layout of the model
on the cluster with its memory per GPU and its speed, best first, and the overrides of the
best one. Options: configs/plan.yaml; the model behind the numbers: docs/plan.md."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from data_pipeline.command import hydra_command
from pretrain.config import OptimConfig, TrainConfig, TrainLoopConfig
from pretrain.model.config import ModelConfig
from pretrain.parallel.process_groups import set_process_defaults
from pretrain.planning.cluster import ClusterConfig
from pretrain.planning.report import format_breakdown, format_table, write_jsonl
from pretrain.planning.search import LayoutPlan, Planner


@dataclass
class PlanConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    # seq_len, global_batch_size and precision matter; the layout fields are what is searched.
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    # Also write every layout, best first, one JSON object per line.
    output: Optional[str] = None
    # Rows of the table.
    top: int = 10


def plan(config: PlanConfig) -> list[LayoutPlan]:
    set_process_defaults()  # before DeepSpeed is imported and CUDA touched
    if config.cluster.nodes < 1 or config.cluster.gpus_per_node < 1:
        raise ValueError(
            f"cluster.nodes={config.cluster.nodes} and cluster.gpus_per_node={config.cluster.gpus_per_node} "
            "must be at least 1"
        )
    if config.train.seq_len > config.model.max_seq_len:
        raise ValueError(f"train.seq_len={config.train.seq_len} exceeds model.max_seq_len={config.model.max_seq_len}")
    config.model.validate()
    base = dataclasses.replace(TrainConfig(), model=config.model, train=config.train, optim=config.optim)
    plans = Planner(config.cluster).search(base)
    cluster = config.cluster
    print(
        f"{config.model.name} ({config.model.n_layers} layers, d_model {config.model.d_model}), "
        f"{config.train.global_batch_size} × {config.train.seq_len} tokens per step, on {cluster.nodes} × "
        f"{cluster.gpus_per_node} {cluster.name}: {len(plans)} valid layouts, {sum(p.memory.fits for p in plans)} fit"
    )
    if not plans:
        raise ValueError(
            f"no valid layout of {config.model.name} on {cluster.world_size} devices: check train.global_batch_size "
            "and cluster.gpus_per_node against the model's heads and layers"
        )
    print(format_table(plans[: config.top]))
    best = plans[0]
    print()
    print(("recommended: " if best.memory.fits else "nothing fits; the smallest: ") + format_breakdown(best))
    print(f"overrides: {' '.join(best.overrides())}  (launch {best.layout.world_size} processes)")
    if config.output:
        write_jsonl(plans, Path(config.output))
        print(f"all {len(plans)} layouts: {config.output}")
    return plans


main = hydra_command("plan", PlanConfig, plan)

if __name__ == "__main__":
    main()
