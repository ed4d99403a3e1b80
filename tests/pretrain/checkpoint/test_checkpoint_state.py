"""Mixed precision under every ZeRO stage and layout: training tracks fp32, checkpoints hold
the optimizer's fp32 master weights and moments, and resuming under another layout
(including into ZeRO-3) continues the run; a save and the model's construction add no more
host memory than the rank's own share. One torchrun launch (2 gloo processes on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pretrain.checkpoint.directory import checkpoint_root, complete_checkpoints, latest_complete
from pretrain.checkpoint.sharded import ShardedState

# Constant LR so that the comparison of the issue (fp32 vs bf16) is not masked by warmup.
ADAMW = ["optim=adamw", "optim.lr=3e-3", "optim.schedule=constant", "optim.warmup_steps=0", "train.max_steps=10"]
LAYOUTS = {
    "dp2": ["parallel=single"],
    "tp2": ["parallel=tp2"],
    "pp2": ["parallel=pp2"],
}
ZERO_STAGES = {"dp2": (0, 1, 2, 3), "tp2": (0, 1, 2, 3), "pp2": (0, 1)}  # DeepSpeed: pipelines take ZeRO <= 1


def run_overrides(layout: str, zero: int, precision: str) -> list[str]:
    # DeepSpeed's ZeRO-0 pipeline clips by a wrong norm (refused by validate_layout).
    clip = ["optim.grad_clip=0"] if layout == "pp2" and zero == 0 else []
    return [*LAYOUTS[layout], f"parallel.zero_stage={zero}", f"train.precision={precision}", *ADAMW, *clip]


MATRIX = {
    f"{layout}-z{zero}-{precision}": run_overrides(layout, zero, precision)
    for layout, stages in ZERO_STAGES.items()
    for zero in stages
    for precision in ("fp32", "bf16")
}
# Save at step 5 under one layout, resume to 10 under another; compared with the straight
# run of the second layout.
RESUMES = {
    "tp2-z1-bf16 -> dp2-z3-bf16": ("tp2-z1-bf16", "dp2-z3-bf16"),
    "pp2-z1-bf16 -> dp2-z0-bf16": ("pp2-z1-bf16", "dp2-z0-bf16"),
    "dp2-z0-bf16 -> tp2-z2-bf16": ("dp2-z0-bf16", "tp2-z2-bf16"),
    "dp2-z2-fp32 -> tp2-z3-fp32": ("dp2-z2-fp32", "tp2-z3-fp32"),
}
# train.async_save: checkpoints at steps 4 and 8 written while the next steps run; the one
# of step 10 must be byte for byte that of the same run saved in step.
BACKGROUND = {f"{name}-async": name for name in ("tp2-z1-bf16", "dp2-z3-fp32")}

# 12.6M parameters: 151 MB of fp32 weights and Adam moments, half of it on each ZeRO-1 rank.
MEMORY = ["parallel=zero1", "model.d_model=512", "model.n_heads=8", "model.n_kv_heads=8", "train.max_steps=1"]
MEMORY_SLACK = 16 * 2**20  # the interpreter's own allocations during a save
# 28.5M parameters (114 MB in fp32), built under ZeRO-3 (dp 2) and under tp 2.
BUILD = ["model.d_model=768", "model.n_heads=8", "model.n_kv_heads=8"]
BUILD_SLACK = 24 * 2**20  # the interpreter, and the module zero.Init builds before partitioning it


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoint_state")


@pytest.fixture(scope="module")
def runs(token_corpus: Path, workdir: Path, common, launch_runs) -> dict:
    plan = {name: common(token_corpus, workdir / name) + overrides for name, overrides in MATRIX.items()}
    for name, (first, second) in RESUMES.items():
        run_dir = workdir / name.replace(" -> ", "-to-")
        plan[f"{name} (first half)"] = common(token_corpus, run_dir) + MATRIX[first] + ["train.max_steps=5"]
        plan[name] = common(token_corpus, run_dir) + MATRIX[second]
    for name, reference in BACKGROUND.items():
        plan[name] = (
            common(token_corpus, workdir / name) + MATRIX[reference] + ["train.async_save=true", "train.save_every=4"]
        )
    plan["save-memory"] = common(token_corpus, workdir / "save-memory") + MEMORY
    for layout in ("zero3", "tp2"):
        plan[f"build-memory-{layout}"] = common(token_corpus, workdir / "build") + BUILD + [f"parallel={layout}"]
    return launch_runs(2, plan, workdir)


def saved(workdir: Path, name: str) -> ShardedState:
    return ShardedState(latest_complete(checkpoint_root(workdir / name)))


@pytest.mark.parametrize("name", [n for n in MATRIX if n.endswith("bf16")])
def test_bf16_tracks_fp32(name: str, runs: dict) -> None:
    """The issue's measurement: bf16 with ZeRO-0 lagged fp32 by 0.6-1.4 % (DeepSpeed's
    zero-gradient AdamW step at build time); ZeRO-1 tracked it to ~1e-4. Every stage and
    layout must now stay within 2e-3 over 10 steps."""
    bf16, fp32 = runs["losses"][name], runs["losses"][name.replace("bf16", "fp32")]
    assert len(bf16) == 10
    assert bf16 == pytest.approx(fp32, rel=2e-3), (bf16, fp32)


@pytest.mark.parametrize("name", list(MATRIX))
def test_saved_state_is_the_optimizers_fp32_master_state(name: str, runs: dict, workdir: Path) -> None:
    assert runs["state_error"][name] == 0.0
    with saved(workdir, name) as state:
        for kind in ("param", "exp_avg", "exp_avg_sq"):
            assert whole_model(state, kind).abs().sum() > 0, kind  # the Adam-reset bug saved zeros
        weights = whole_model(state, "param")
    if name.endswith("bf16"):  # masters, not the rounded bf16 model weights
        rounded = weights.to(torch.bfloat16).float() != weights
        assert rounded.float().mean() > 0.5


@pytest.mark.parametrize("name", list(RESUMES))
def test_resuming_under_another_layout_continues_the_run(name: str, runs: dict, workdir: Path) -> None:
    second = RESUMES[name][1]
    resumed, straight = runs["losses"][name], runs["losses"][second][5:]
    # fp32: rounding of another reduction order only. bf16: the other layout's rounding
    # over the first five steps (measured up to 2.2e-3 in losses, 1.1 % in weights).
    # Resetting Adam's moments at step 5 (measured in one process, bf16): losses off by
    # 4.4 %, the final exp_avg_sq by 57 %, weights by 7.9 %.
    rel = 1e-5 if second.endswith("fp32") else 5e-3
    assert resumed == pytest.approx(straight, rel=rel), (resumed, straight)
    with saved(workdir, name.replace(" -> ", "-to-")) as after, saved(workdir, second) as reference:
        for kind, tolerance in (("exp_avg_sq", 0.15), ("param", 0.02)):
            ours, theirs = whole_model(after, kind), whole_model(reference, kind)
            assert torch.linalg.norm(ours - theirs) <= tolerance * torch.linalg.norm(theirs), kind


@pytest.mark.parametrize("name", list(BACKGROUND))
def test_two_ranks_save_in_the_background_what_they_save_in_step(name: str, runs: dict, workdir: Path) -> None:
    reference = BACKGROUND[name]
    assert runs["losses"][name] == runs["losses"][reference]
    checkpoints = complete_checkpoints(checkpoint_root(workdir / name))
    assert [path.name for path in checkpoints] == ["step-00000004", "step-00000008", "step-00000010"]
    ours, theirs = checkpoints[-1] / "shards", latest_complete(checkpoint_root(workdir / reference)) / "shards"
    assert sorted(f.name for f in ours.iterdir()) == sorted(f.name for f in theirs.iterdir())
    for file in theirs.iterdir():
        assert (ours / file.name).read_bytes() == file.read_bytes(), file.name


def whole_model(state: ShardedState, kind: str) -> torch.Tensor:
    return torch.cat([tensor.reshape(-1) for _, tensor in sorted(state.tensors(kind), key=lambda item: item[0])])


def test_a_save_adds_at_most_one_and_a_half_times_the_ranks_shard(runs: dict) -> None:
    per_rank = runs["save_memory"]["save-memory"]
    whole_state = sum(shard for _, shard in per_rank)
    for added, shard in per_rank:
        assert whole_state > 1.5 * shard + MEMORY_SLACK  # a full copy would break the bound
        assert added <= 1.5 * shard + MEMORY_SLACK, (added, shard)


@pytest.mark.parametrize("layout", ["zero3", "tp2"])
def test_each_rank_materializes_only_its_share_of_the_model(layout: str, runs: dict) -> None:
    for added, held, whole, largest in runs["save_memory"][f"build-memory-{layout}"]:
        assert held <= 0.51 * whole  # its half (norms and biases are whole on every tp rank)
        bound = held + largest + BUILD_SLACK  # drawing a parameter's initial value takes it whole
        assert whole > bound  # building the whole model would break the bound
        assert added <= bound, (added, held, whole)
