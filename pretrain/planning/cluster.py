"""The machines a plan is made for: one dataclass, the Hydra schema of ``configs/cluster/``.

Every constant of the roofline model lives here, so that a plan for another machine is a
config file, not a code change (docs/plan.md explains each one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

GIB = 2**30


@dataclass
class ClusterConfig:
    name: str = "cpu"
    # Substring of torch.cuda.get_device_name() that identifies this accelerator (None: CPU).
    device_match: Optional[str] = None
    nodes: int = 1
    # Training processes per node (GPUs; on a CPU machine, the processes you launch).
    gpus_per_node: int = 1
    # Memory of one device in GiB; None: the machine's RAM.
    memory_gib: Optional[float] = None
    # On a CPU machine the processes of a node share one memory: each gets its share.
    processes_share_memory: bool = False
    # Whether memory allocated but never written counts: yes on a GPU (the caching allocator
    # reserves it); no on Linux, which maps untouched pages lazily, so DeepSpeed's empty
    # gradient buckets cost a CPU run nothing.
    untouched_memory_counts: bool = True
    # Fraction of the device memory a layout must leave free (allocator fragmentation, the
    # CUDA context and NCCL's buffers, which the model does not count).
    memory_margin: float = 0.1
    # Whether the device computes in bf16 (train.precision=auto then means bf16).
    bf16: bool = True
    # Dense matmul peak in TFLOP/s of one device (of one core on a CPU machine, where each
    # process computes on one core) in the training precision, and the fraction of it the
    # model's matmuls reach (calibrated; docs/plan.md).
    peak_tflops: float = 989.0
    matmul_efficiency: float = 0.5
    # Memory bandwidth of one device in GB/s (the optimizer update reads and writes every state once).
    memory_bandwidth_gb_per_s: float = 3350.0
    # Bandwidth per device of collectives inside a node (NVLink) and between nodes (the
    # network), in GB/s; and the fixed cost of one collective call.
    intra_node_gb_per_s: float = 450.0
    inter_node_gb_per_s: float = 50.0
    collective_latency_us: float = 20.0
    # Fixed cost of one optimizer step outside the model (launcher, Python, DeepSpeed).
    step_overhead_ms: float = 0.0

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    def device_memory_bytes(self) -> int:
        """What one training process may use."""
        memory = int(self.memory_gib * GIB) if self.memory_gib is not None else machine_ram_bytes()
        return memory // (self.gpus_per_node if self.processes_share_memory else 1)


def machine_ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
