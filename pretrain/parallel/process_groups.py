"""Process-group set-up that works the same alone, under torchrun and under the deepspeed
launcher, on CPU (gloo) and GPU (nccl)."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import torch


def set_process_defaults() -> None:
    """What a pretrain command sets for its process when it starts, before it imports DeepSpeed
    or touches CUDA (importing pretrain sets nothing); init_distributed sets it too, for
    programs that build a Trainer themselves (benchmarks)."""
    choose_accelerator_quietly()
    default_cuda_allocator()


def choose_accelerator_quietly() -> None:
    """Without a GPU, DeepSpeed warns "Setting accelerator to CPU" when imported; choosing the
    CPU for it beforehand says the same silently."""
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def default_cuda_allocator() -> None:
    """Expandable segments let the caching allocator grow a segment instead of keeping
    blocks of every size it met, which spares the fragmentation that varying shapes cause
    (evaluation, the last batch, pipeline stages). Set only where the user set neither
    allocator variable, and before torch first touches CUDA (it reads it then)."""
    if "PYTORCH_ALLOC_CONF" not in os.environ:
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def strip_launcher_arguments(argv: list[str]) -> list[str]:
    """The deepspeed launcher appends ``--local_rank=N`` (or ``--local_rank N``) to the
    script's arguments; Hydra would read it as a bad override. Move it to LOCAL_RANK."""
    kept: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg.startswith("--local_rank="):
            os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
        elif arg == "--local_rank":
            os.environ.setdefault("LOCAL_RANK", next(args, "0"))
        else:
            kept.append(arg)
    return kept


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _set_slurm_environment() -> None:
    """Under ``srun`` (one task per GPU, e.g. launch/slurm.sbatch or Hydra's submitit
    launcher) Slurm names the ranks; torch.distributed wants them as RANK and friends."""
    first_host = subprocess.run(
        ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    os.environ.update(
        RANK=os.environ["SLURM_PROCID"],
        LOCAL_RANK=os.environ["SLURM_LOCALID"],
        WORLD_SIZE=os.environ["SLURM_NTASKS"],
        LOCAL_WORLD_SIZE=os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0],
        MASTER_ADDR=os.environ.get("MASTER_ADDR", first_host),
    )
    # One port per job, so jobs sharing a node do not collide.
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def _set_single_process_environment() -> None:
    """DeepSpeed insists on a launcher environment (else it looks for MPI); a plain
    ``python -m pretrain.train`` is one process, so say so."""
    if "RANK" in os.environ:
        return
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        _set_slurm_environment()
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def _skip_shared_memory_op_build() -> None:
    """On CPU, deepspeed.init_distributed JIT-compiles a shared-memory collective op
    (minutes with g++) that gloo training never uses."""
    comm_torch = importlib.import_module("deepspeed.comm.torch")
    comm_torch.build_shm_op = lambda: None


def _init_process_group(backend: str, device: torch.device) -> None:
    """The default group, made here rather than by DeepSpeed (which adopts it) so that NCCL
    learns this rank's GPU (``device_id``: its communicator binds to it at once, not to a
    device guessed from the rank). Under torchrun, workers restarted after a failure
    (--max-restarts) meet in the same store as the attempt before; without a per-attempt
    prefix, new process groups read the dead workers' addresses and fail to connect (seen
    with gloo in torch 2.13). The attempt number comes from the store itself, counting
    arrivals, so every node agrees on it even when their agents count restarts differently
    (a node restarted only because another failed does not count a retry)."""
    from deepspeed import constants  # its default_pg_timeout reads DEEPSPEED_TIMEOUT (minutes)

    device_id = device if device.type == "cuda" else None
    if "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        torch.distributed.init_process_group(backend, timeout=constants.default_pg_timeout, device_id=device_id)
        return
    store, rank, world_size = next(torch.distributed.rendezvous("env://", timeout=constants.default_pg_timeout))
    attempt = (store.add("pretrain/arrivals", 1) - 1) // world_size
    prefixed = torch.distributed.PrefixStore(f"pretrain-attempt-{attempt}", store)
    torch.distributed.init_process_group(
        backend,
        store=prefixed,
        rank=rank,
        world_size=world_size,
        timeout=constants.default_pg_timeout,
        device_id=device_id,
    )


def select_device(local_rank: int) -> torch.device:
    """This process's device: the GPU LOCAL_RANK names among those it sees, the CPU without
    one. A task that sees only its own GPU (Slurm ``--gpus-per-task=1``) sees it as device 0
    whatever its local rank, so the index wraps around the visible count. DeepSpeed takes
    LOCAL_RANK for the device index (its engine, ``zero.Init`` and pipeline module move
    tensors to ``cuda:LOCAL_RANK``), so LOCAL_RANK is made to name that device too."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    os.environ["LOCAL_RANK"] = str(device.index)
    return device


@dataclass(frozen=True)
class ProcessInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> ProcessInfo:
    set_process_defaults()
    import deepspeed

    _set_single_process_environment()
    if not torch.cuda.is_available():
        _skip_shared_memory_op_build()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        _init_process_group(backend, device)
    deepspeed.init_distributed(dist_backend=backend, verbose=False)  # adopts the group
    return ProcessInfo(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        local_rank=local_rank,
        device=device,
    )


def entry_arguments() -> None:
    """Call before ``hydra.main`` parses ``sys.argv``."""
    sys.argv = strip_launcher_arguments(sys.argv)
