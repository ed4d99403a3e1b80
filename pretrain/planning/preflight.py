"""The planner at training start: ``pretrain.train ... plan=true`` prints the plan of the
configured layout and exits; otherwise a start whose predicted memory per device exceeds the
device is refused with the numbers, before any process group exists (``memory_check=false``
starts anyway)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from data_pipeline.command import CONFIG_DIR
from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.config import TrainConfig
from pretrain.planning.cluster import GIB, ClusterConfig
from pretrain.planning.report import format_breakdown
from pretrain.planning.search import LayoutPlan, Planner

CLUSTER_DIR = CONFIG_DIR / "cluster"
FALLBACK_GPU = "h100-80gb"  # speed constants for a GPU no cluster config names


class LayoutDoesNotFit(ValueError):
    """A config error like the others: the commands print it as one line."""


def load_cluster(path: Path) -> ClusterConfig:
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ClusterConfig), OmegaConf.load(path)))
    assert isinstance(config, ClusterConfig)
    return config


def this_machine(world_size: int) -> ClusterConfig:
    """The cluster config of the device this process runs on, sized to the launch: the
    device's real memory on a GPU; on a CPU, the RAM shared by the processes of this node."""
    # torchrun and the deepspeed launcher say how many processes share a node; srun says it
    # as e.g. "4(x2)".
    local = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", str(world_size)))
    per_node = min(world_size, int(local.split("(")[0]))
    shape = dict(nodes=max(1, world_size // per_node), gpus_per_node=per_node)
    if not torch.cuda.is_available():
        return dataclasses.replace(load_cluster(CLUSTER_DIR / "cpu.yaml"), **shape)
    device = int(os.environ.get("LOCAL_RANK", "0"))  # this rank's GPU, not GPU 0 for every rank
    memory = torch.cuda.get_device_properties(device).total_memory / GIB
    return dataclasses.replace(cluster_of_gpu(torch.cuda.get_device_name(device)), memory_gib=memory, **shape)


def cluster_of_gpu(name: str) -> ClusterConfig:
    """The cluster config whose ``device_match`` the GPU's name contains (``FALLBACK_GPU``'s
    speed constants for a GPU none names)."""
    clusters = [load_cluster(path) for path in sorted(CLUSTER_DIR.glob("*.yaml"))]
    known = [c for c in clusters if c.device_match and c.device_match in name]
    return known[0] if known else load_cluster(CLUSTER_DIR / f"{FALLBACK_GPU}.yaml")


def with_vocabulary(cfg: TrainConfig) -> TrainConfig:
    """The config with model.vocab_size filled in from the tokenizer, as the trainer does."""
    if cfg.model.vocab_size is not None:
        return cfg
    from pretrain.data.sources import data_sources, tokenizer_dir

    special = SpecialTokens.load(tokenizer_dir(cfg.data, data_sources(cfg.data)[0]))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=special.vocab_size))


def preflight(cfg: TrainConfig, world_size: int) -> bool:
    """True when the caller should exit (``plan=true``: the plan is printed). Raises
    LayoutDoesNotFit naming the numbers when the layout will not fit and memory_check is on."""
    if not cfg.plan and not cfg.memory_check:
        return False
    cluster = this_machine(world_size)
    plan = Planner(cluster).plan(with_vocabulary(cfg), world_size)
    if cfg.plan:
        print(f"plan on {cluster.name} ({cluster.nodes} × {cluster.gpus_per_node}):")
        print(format_breakdown(plan))
        return True
    if not plan.memory.fits:
        raise LayoutDoesNotFit(refusal(plan))
    return False


def refusal(plan: LayoutPlan) -> str:
    rank = plan.memory.fullest
    return (
        f"predicted memory per device {rank.total / 1e9:.2f} GB (weights {rank.weights / 1e9:.2f}, gradients "
        f"{rank.gradients / 1e9:.2f}, optimizer {rank.optimizer / 1e9:.2f}, activations {rank.activations / 1e9:.2f}, "
        f"buffers {rank.buffers / 1e9:.2f}) exceeds the {plan.memory.usable_bytes / 1e9:.2f} GB usable of "
        f"{plan.memory.device_bytes / 1e9:.2f} GB; lower train.micro_batch_size, "
        "set train.activation_checkpointing=true "
        "or a higher parallel.zero_stage (python -m pretrain.plan lists layouts that fit), "
        "or memory_check=false to start anyway"
    )
