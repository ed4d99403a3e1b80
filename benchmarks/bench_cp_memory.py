"""Activation memory per rank under context parallelism (parallel.cp), measured against the
planner's prediction for the same config.

    python benchmarks/bench_cp_memory.py [--cp 1 2 4] [--seq-len 4096] [--d-model 256] [--layers 2]

For each cp, one torchrun launch of cp ranks (CPU, gloo, fp32) builds our GPT with its
sequences split over the cp group (``pretrain.parallel.context``) and runs one forward and
backward of one sequence of ``--seq-len`` tokens (causal LM), gradients already allocated
(as from the second step on). Each rank measures the peak of the tensor memory allocated
above the start (the same probe tests/pretrain/test_plan.py checks the planner with: every
storage an operation allocates, until it is freed) and the bytes autograd saved for the
backward (``saved_tensors_hooks``, each storage once). The table puts the fullest rank beside
``pretrain.plan``'s activations for the layout (tp=1, pp=1, cp, no recomputation), and the
planner's figure without the float (query × key) masks CPU attention keeps per layer under cp
(a GPU's FlexAttention keeps a block mask): there the per-token part falls as 1/cp and the
whole-sequence keys and values stay.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "pretrain"))
from torchrun_workers import torchrun_command, worker_environment  # noqa: E402

MB = 2**20


def overrides(cp: int, seq_len: int, d_model: int, layers: int) -> list[str]:
    """A tiny-shaped model made wide enough that the per-token activations, not the
    vocabulary or the attention mask, dominate."""
    return [
        "model=tiny",
        f"model.n_layers={layers}",
        f"model.d_model={d_model}",
        "model.n_heads=4",
        "model.n_kv_heads=2",
        "model.vocab_size=256",
        f"model.max_seq_len={seq_len}",
        f"train.seq_len={seq_len}",
        "train.micro_batch_size=1",
        "train.global_batch_size=1",
        "train.precision=fp32",
        f"parallel.cp={cp}",
    ]


def worker(out_dir: str, settings: list[str]) -> None:
    """One rank: one forward and backward of its share of the sequence, measured."""
    import torch
    import torch.distributed as dist
    from test_plan import PeakMemory  # the planner's own activation probe

    from data_pipeline.formats.special_tokens import SpecialTokens
    from pretrain.config import load_train_config
    from pretrain.model.gpt import GPT, LayerFactory
    from pretrain.model.loss import token_losses
    from pretrain.objectives import build_objective
    from pretrain.parallel.context import context_parallel
    from pretrain.parallel.layout import ParallelLayout, build_grid
    from pretrain.parallel.process_groups import init_distributed

    process = init_distributed()
    cfg = load_train_config(settings)
    cp = cfg.parallel.cp
    layers = LayerFactory()
    layers.context = context_parallel(build_grid(ParallelLayout(tp=1, pp=1, dp=1, cp=cp)), cp)
    model = GPT(cfg.model, layers, seed=0)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    special = SpecialTokens.synthetic(cfg.model.vocab_size)
    objective = build_objective(cfg.objective, special, cfg.train.seq_len, 0)
    windows = torch.randint(max(special.all_ids) + 1, cfg.model.vocab_size, (1, objective.window_length()))
    batch = objective(windows, torch.arange(1))
    if layers.context is not None:
        batch = layers.context.local_batch(batch)
        mean_loss = layers.context.sample_mean_loss
    else:
        from pretrain.model.loss import sample_mean_loss as mean_loss

    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with PeakMemory() as probe, torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        logits = model(batch.input_ids, batch.attention)
        mean_loss(token_losses(logits, batch.labels), batch.loss_mask).backward()
    result = {"peak": probe.peak, "saved": sum(saved.values()), "tokens": batch.input_ids.shape[1]}
    gathered: list = [None] * process.world_size
    dist.all_gather_object(gathered, result)
    if process.rank == 0:
        (Path(out_dir) / "ranks.json").write_text(json.dumps(gathered))
    dist.barrier()
    dist.destroy_process_group()


def predicted_activations(settings: list[str]) -> tuple[float, float]:
    """The planner's activations (no recomputation) of the fullest rank for the config, on
    this CPU (configs/cluster/cpu.yaml) and without the CPU attention's dense masks (as on a
    GPU, whose FlexAttention keeps a block mask instead)."""
    import dataclasses

    from pretrain.config import load_train_config
    from pretrain.planning.activations import ActivationSetting, stage_activations
    from pretrain.planning.preflight import CLUSTER_DIR, load_cluster
    from pretrain.planning.search import Planner

    cfg = load_train_config(settings)
    cp = cfg.parallel.cp
    cluster = dataclasses.replace(load_cluster(CLUSTER_DIR / "cpu.yaml"), gpus_per_node=cp)
    on_cpu = Planner(cluster).plan(cfg, cp).memory.fullest.activations_stored
    setting = ActivationSetting(seq_len=cfg.train.seq_len, micro_batch=1, element_bytes=4, cp=cp)
    without_masks = stage_activations(cfg.model, setting, cfg.model.n_layers, in_flight=1, has_head=True).stored
    return on_cpu, without_masks


def measure(cp: int, settings: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        command = torchrun_command(cp, __file__, Path(out), settings)
        done = subprocess.run(command, cwd=REPO, env=worker_environment(), capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"error: the cp={cp} launch failed:\n{done.stderr[-3000:]}")
        return json.loads((Path(out) / "ranks.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cp", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    print(
        "| cp | tokens per rank | measured peak MB | saved tensors MB | planner MB | measured / planner "
        "| planner without dense masks MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for cp in args.cp:
        settings = overrides(cp, args.seq_len, args.d_model, args.layers)
        ranks = measure(cp, settings)
        fullest = max(ranks, key=lambda rank: rank["peak"])
        planned, without_masks = predicted_activations(settings)
        print(
            f"| {cp} | {fullest['tokens']} | {fullest['peak'] / MB:.1f} | {fullest['saved'] / MB:.1f} | "
            f"{planned / MB:.1f} | {fullest['peak'] / planned:.2f} | {without_masks / MB:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(REPO))
        worker(sys.argv[2], sys.argv[3:])
    else:
        main()
