"""Every parallel layout trains exactly like one process, checkpoints reshard across layouts,
and bad layouts fail before anything starts. Two torchrun launches (2 and 4 processes, gloo
on CPU) run all the layouts; the single-process references run in this process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pretrain.checkpoint.consolidate import load_trained_model
from pretrain.config import TrainConfig, load_train_config
from pretrain.export import ExportConfig, export
from pretrain.parallel.layout import validate_layout
from pretrain.parallel.process_groups import ProcessInfo, init_distributed
from pretrain.training.trainer import Trainer

SGD = ["optim=sgd", "optim.lr=0.1", "train.max_steps=10"]
# Gradient clipping on every step (the norm starts near 1.2): the norm over tensor-parallel
# shards and pipeline stages must be the whole model's.
CLIPPED = [*SGD, "optim.grad_clip=0.5"]
# Adam divides each update by the gradient's running scale, so it magnifies the rounding
# differences of another reduction order (../shared/NOTES-deepspeed-cpu.md, gotcha 6); a
# gentle start keeps five steps comparable at 1e-4.
ADAMW = ["optim=adamw", "optim.lr=1e-3", "optim.eps=1e-6", "optim.warmup_steps=5", "train.max_steps=5"]
# Save at step 3 and resume to 6 under another layout. SGD with momentum carries optimizer
# state across (the momentum buffers) without Adam's magnification of rounding, so the
# comparison stays tight; test_train.py checks that Adam's moments cross exactly.
RESHARD = ["optim=sgd", "optim.lr=0.1", "optim.momentum=0.9", "optim.schedule=constant"]

TWO_PROCESSES = {
    "zero1": ["parallel=zero1", *SGD],
    "zero2": ["parallel=zero2", *SGD],
    "zero3": ["parallel=zero3", *SGD],
    "tp2": ["parallel=tp2", *SGD],
    "tp2-adamw": ["parallel=tp2", *ADAMW],
    "pp2": ["parallel=pp2", *SGD],
    "pp2-adamw": ["parallel=pp2", *ADAMW],
    "zero3-adamw": ["parallel=zero3", *ADAMW],
    "tp2-clip": ["parallel=tp2", *CLIPPED],
    "pp2-clip": ["parallel=pp2", *CLIPPED],
    "tp2-mlm": ["parallel=tp2", "objective=mlm", *SGD],
    "pp2-mlm": ["parallel=pp2", "objective=mlm", *SGD],
    "tp2-span": ["parallel=tp2", "objective=span", *SGD],
    "pp2-span": ["parallel=pp2", "objective=span", *SGD],
}
# Fine-tuning on chat shards (loss mask, conversations kept apart) from a run's checkpoint.
SFT_RUNS = {"zero3-sft": ["parallel=zero3"], "pp2-sft": ["parallel=pp2"], "tp2-sft": ["parallel=tp2"]}
FOUR_PROCESSES = {
    "pp2xtp2": ["parallel=3d", "parallel.zero_stage=0", *SGD],
    "pp2xtp2-adamw": ["parallel=3d", *ADAMW],
    "dp2xpp2": ["parallel=pp2", "parallel.zero_stage=1", *SGD],
    "dp2xpp2-adamw": ["parallel=pp2", "parallel.zero_stage=1", *ADAMW],
    "3d-clip": ["parallel=3d", *CLIPPED],
    "save-3d": ["parallel=3d", *RESHARD, "train.max_steps=3"],
    "resume-3d": ["parallel=3d", *RESHARD, "train.max_steps=6"],
}
# Model options that change the layers tensor and pipeline parallelism split.
VARIANT = [
    "model.tie_embeddings=false",
    "model.bias=true",
    "model.position=learned",
    "model.activation=gelu",
    "model.norm=layernorm",
]
# Options, each against the single-process run it must reproduce.
OPTIONS = {
    "tp2-zero0-clip": (["parallel=tp2", "parallel.zero_stage=0", *CLIPPED], "clm-clip"),
    "tp2-zero2": (["parallel=tp2", "parallel.zero_stage=2", *SGD], "clm-sgd"),
    "tp2-zero3": (["parallel=tp2", "parallel.zero_stage=3", *SGD], "clm-sgd"),
    "pp2-uniform": (["parallel=pp2", "parallel.partition_method=uniform", *SGD], "clm-sgd"),
    "pp2-blocks": (["parallel=pp2", "parallel.partition_method=blocks", *SGD], "clm-sgd"),
    "pp2-recompute": (
        ["parallel=pp2", "train.activation_checkpointing=true", "parallel.checkpoint_interval=1", *SGD],
        "clm-sgd",
    ),
    "pp2-recompute-2": (
        ["parallel=pp2", "train.activation_checkpointing=true", "parallel.checkpoint_interval=2", *SGD],
        "clm-sgd",
    ),
    "pp2-docmask": (["parallel=pp2", "objective.document_masking=true", *SGD], "docmask-sgd"),
    "tp2-variant": (["parallel=tp2", *VARIANT, *SGD], "variant-sgd"),
    # Sequence parallelism (its dropout: tests/pretrain/parallel/test_tensor_parallel_comm.py); clipped
    # on every step, so the gradient norm must count the sequence-parallel norm weights once.
    "tp2-sp-clip": (["parallel=tp2", "parallel.sequence_parallel=true", *CLIPPED], "clm-clip"),
    "tp2-sp-variant": (["parallel=tp2", "parallel.sequence_parallel=true", *VARIANT, *SGD], "variant-sgd"),
    "pp2-variant": (["parallel=pp2", *VARIANT, *SGD], "variant-sgd"),
}
# tp2 with attention dropout (each rank's own stream) stopped at step 2 and resumed: the
# checkpoint carries that stream too, so the resumed steps draw the masks of an uninterrupted run.
ATTENTION_DROPOUT = [
    "parallel=tp2",
    "optim=sgd",
    "optim.lr=0.1",
    "model.attn_dropout=0.3",
    "model.residual_dropout=0.3",
]
DROPOUT_RESUME = {
    "tp2-dropout": ("tp2-dropout", [*ATTENTION_DROPOUT, "train.max_steps=4"]),
    "tp2-dropout-save": ("tp2-dropout-resumed", [*ATTENTION_DROPOUT, "train.max_steps=2", "train.save_every=2"]),
    "tp2-dropout-resume": ("tp2-dropout-resumed", [*ATTENTION_DROPOUT, "train.max_steps=4", "train.save_every=2"]),
}
REFERENCES = {
    "clm-sgd": SGD,
    "clm-adamw": ADAMW,
    "clm-clip": CLIPPED,
    "mlm-sgd": ["objective=mlm", *SGD],
    "span-sgd": ["objective=span", *SGD],
    "reshard": [*RESHARD, "train.max_steps=6"],
    "docmask-sgd": ["objective.document_masking=true", *SGD],
    "variant-sgd": [*VARIANT, *SGD],
}


@pytest.fixture(scope="module")
def process() -> ProcessInfo:
    return init_distributed()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parallel")


@pytest.fixture(scope="module")
def references(
    token_corpus: Path, chat_corpus: Path, workdir: Path, process: ProcessInfo, common
) -> dict[str, list[float]]:
    losses = {}
    for name, overrides in REFERENCES.items():
        cfg = load_train_config(common(token_corpus, workdir / f"single-{name}") + overrides)
        records = Trainer(cfg, process).fit()
        losses[name] = [record["loss"] for record in records]
        losses[f"{name} grad_norm"] = [record["grad_norm"] for record in records]
    cfg = load_train_config(sft(chat_corpus, workdir, "single-sft", common))
    losses["sft-sgd"] = [record["loss"] for record in Trainer(cfg, process).fit()]
    # The first leg of the single → 3d resharding run.
    cfg = load_train_config(common(token_corpus, workdir / "single-to-3d") + RESHARD + ["train.max_steps=3"])
    Trainer(cfg, process).fit()
    return losses


def sft(chat_corpus: Path, workdir: Path, name: str, common) -> list[str]:
    """objective=sft on the chat shards, starting from the weights of the single-process clm run."""
    return [*common(chat_corpus, workdir / name), "objective=sft", f"init_from={workdir / 'single-clm-sgd'}", *SGD]


@pytest.fixture(scope="module")
def two_process_launch(
    token_corpus: Path, chat_corpus: Path, workdir: Path, references: dict, common, launch_runs
) -> dict:
    runs = {name: common(token_corpus, workdir / name) + overrides for name, overrides in TWO_PROCESSES.items()}
    runs.update({name: common(token_corpus, workdir / name) + overrides for name, (overrides, _) in OPTIONS.items()})
    runs.update(
        {
            name: common(token_corpus, workdir / run_dir) + overrides
            for name, (run_dir, overrides) in DROPOUT_RESUME.items()
        }
    )
    runs.update({name: sft(chat_corpus, workdir, name, common) + overrides for name, overrides in SFT_RUNS.items()})
    return launch_runs(2, runs, workdir)


@pytest.fixture(scope="module")
def two_process_runs(two_process_launch: dict) -> dict[str, list[float]]:
    return two_process_launch["losses"]


@pytest.fixture(scope="module")
def four_process_runs(
    token_corpus: Path, text_shards: Path, text_tokenizer: Path, workdir: Path, references: dict, common, launch_runs
) -> dict[str, list[float]]:
    runs = {name: common(token_corpus, workdir / name) + overrides for name, overrides in FOUR_PROCESSES.items()}
    runs["resume-3d"] = common(token_corpus, workdir / "single-to-3d") + FOUR_PROCESSES["resume-3d"]
    runs["save-3d"] = common(token_corpus, workdir / "3d-to-single") + FOUR_PROCESSES["save-3d"]
    # On real text with a real tokenizer, for the export test.
    runs["text-3d"] = [
        *common(text_shards, workdir / "text-3d"),
        f"data.tokenizer={text_tokenizer}",
        "parallel=3d",
        *SGD[:-1],
        "train.max_steps=3",
    ]
    return launch_runs(4, runs, workdir)["losses"]


def assert_parity(actual: list[float], expected: list[float], rel: float) -> None:
    assert len(actual) == len(expected)
    assert actual == pytest.approx(expected, rel=rel), (actual, expected)


@pytest.mark.parametrize("name", [n for n in TWO_PROCESSES])
def test_two_process_layouts_match_one_process(name: str, two_process_runs: dict, references: dict) -> None:
    objective = next((o for o in ("mlm", "span") if name.endswith(o)), "clm")
    adamw = name.endswith("adamw")
    optimizer = next((o for o in ("adamw", "clip") if name.endswith(o)), "sgd")
    expected = references[f"{objective}-{optimizer}"]
    assert_parity(two_process_runs[name], expected, rel=1e-4 if adamw else 1e-5)


@pytest.mark.parametrize("name", list(SFT_RUNS))
def test_fine_tuning_under_each_layout_matches_one_process(name: str, two_process_runs: dict, references: dict) -> None:
    assert_parity(two_process_runs[name], references["sft-sgd"], rel=1e-5)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_options_match_one_process(name: str, two_process_runs: dict, references: dict) -> None:
    assert_parity(two_process_runs[name], references[OPTIONS[name][1]], rel=1e-5)


def test_tp2_with_attention_dropout_resumes_exactly(two_process_runs: dict) -> None:
    assert two_process_runs["tp2-dropout-save"] == two_process_runs["tp2-dropout"][:2]
    assert two_process_runs["tp2-dropout-resume"] == two_process_runs["tp2-dropout"][2:]


def test_grad_norm_is_the_whole_models_under_tp_without_zero(two_process_launch: dict, references: dict) -> None:
    logged = two_process_launch["grad_norms"]["tp2-zero0-clip"]
    assert None not in logged
    assert logged == pytest.approx(references["clm-clip grad_norm"], rel=1e-5)


def test_partition_methods_split_the_stages_their_own_way(two_process_launch: dict) -> None:
    parts = two_process_launch["stage_parts"]
    # 7 layers: embedding, 4 blocks, final norm, tied output projection.
    assert parts["pp2-uniform"] == [0, 4, 7]  # layers counted alike: the embedding and 3 blocks first
    assert parts["pp2-blocks"] == [0, 3, 7]  # two blocks per stage
    assert parts["pp2"] == [0, 3, 7]  # by parameter count (here it balances the blocks too)


def test_activation_checkpointing_recomputes_blocks_by_checkpoint_interval(two_process_launch: dict) -> None:
    forwards = two_process_launch["block_forwards"]  # rank 0: the first stage, embedding and blocks 0-1
    assert forwards["pp2-recompute"] == 2 * forwards["pp2"]  # every block run again in the backward pass
    # Spans of two layers: (embedding, block 0) is not checkpointed (only blocks are), (block 1) is.
    assert forwards["pp2-recompute-2"] == 1.5 * forwards["pp2"]


@pytest.mark.parametrize("name", ["pp2xtp2", "pp2xtp2-adamw", "dp2xpp2", "dp2xpp2-adamw", "3d-clip"])
def test_four_process_layouts_match_one_process(name: str, four_process_runs: dict, references: dict) -> None:
    adamw = name.endswith("adamw")
    optimizer = next((o for o in ("adamw", "clip") if name.endswith(o)), "sgd")
    assert_parity(four_process_runs[name], references[f"clm-{optimizer}"], rel=1e-4 if adamw else 1e-5)


def test_single_process_checkpoint_resumes_under_3d(four_process_runs: dict, references: dict) -> None:
    assert_parity(four_process_runs["resume-3d"], references["reshard"][3:], rel=1e-5)


def test_3d_checkpoint_resumes_in_one_process(
    token_corpus: Path, workdir: Path, four_process_runs: dict, references: dict, process: ProcessInfo, common
) -> None:
    assert_parity(four_process_runs["save-3d"], references["reshard"][:3], rel=1e-5)
    cfg = load_train_config(common(token_corpus, workdir / "3d-to-single") + RESHARD + ["train.max_steps=6"])
    resumed = [record["loss"] for record in Trainer(cfg, process).fit()]
    assert_parity(resumed, references["reshard"][3:], rel=1e-5)


def test_3d_checkpoint_consolidates_to_the_single_process_model(
    workdir: Path, four_process_runs: dict, references: dict
) -> None:
    parallel, _, _ = load_trained_model(workdir / "pp2xtp2")
    single, _, _ = load_trained_model(workdir / "single-clm-sgd")
    tokens = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(parallel(tokens), single(tokens), rtol=1e-4, atol=1e-5)


def test_3d_checkpoint_exports_a_model_transformers_reproduces(
    workdir: Path, four_process_runs: dict, assert_matches_transformers, tmp_path: Path
) -> None:
    export(ExportConfig(checkpoint=str(workdir / "text-3d"), output_dir=str(tmp_path / "export")))
    assert_matches_transformers(workdir / "text-3d", tmp_path / "export")


@pytest.mark.parametrize(
    "overrides, world_size, message",
    [
        (["parallel=pp2", "parallel.zero_stage=3"], 2, "parallel.zero_stage=1"),
        (["parallel=tp2", "model.n_heads=3", "model.d_model=48", "model.n_kv_heads=null"], 2, "model.n_heads=3"),
        (["parallel=tp2"], 3, "world size 3"),
        (["parallel=pp2", "model.n_layers=1"], 2, "model.n_layers=1"),
        (["parallel=pp2", "parallel.zero_stage=0", "optim.grad_clip=1.0"], 2, "parallel.zero_stage=1"),
        (["train.global_batch_size=6", "train.micro_batch_size=4"], 1, "train.global_batch_size=6"),
        (["parallel.sequence_parallel=true"], 1, "parallel.tp > 1"),
        (["parallel=tp2", "parallel.sequence_parallel=true", "train.seq_len=33"], 2, "train.seq_len=33"),
        (["parallel=3d", "parallel.sequence_parallel=true"], 4, "parallel.pp=2"),
    ],
)
def test_bad_layouts_fail_before_anything_starts(overrides: list[str], world_size: int, message: str) -> None:
    cfg: TrainConfig = load_train_config(overrides)
    with pytest.raises(ValueError, match=message):
        validate_layout(cfg, world_size)
