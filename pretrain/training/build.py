"""A training run built once, in order, from a config resolved once: ``resolve_config`` settles
what the config leaves open (the imported model, the micro-batch) and checks the layout before
any process group exists; ``build_run`` then builds the data, the process grid, the model, the
optimizer, the DeepSpeed engine, the step and the run's log, each from what was built before
it, and hands them to the ``Trainer`` as one ``Run``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import deepspeed
import torch

from data_pipeline.formats.special_tokens import SpecialTokens
from data_pipeline.formats.token_shards import ShardError, find_shards
from data_pipeline.formats.tokenizer_files import copy_tokenizer_files
from pretrain.checkpoint.background_save import BackgroundSaver
from pretrain.checkpoint.directory import read_metadata, resolve_resume
from pretrain.checkpoint.resume_check import check_resume, record_changes
from pretrain.checkpoint.sharded import bytes_per_parameter
from pretrain.config import DataConfig, Precision, TrainConfig, as_plain_dict
from pretrain.data.loader import BatchPlan, TrainingStream, ValidationSet, open_sources
from pretrain.data.megatron import is_megatron_prefix, missing_eos_warnings
from pretrain.data.sources import data_identity, data_sources, tokenizer_dir
from pretrain.hf.init_from import load_initial_weights, start_message, with_grown_vocabulary, with_imported_model
from pretrain.hf.weights import ReadStats
from pretrain.model.config import ModelConfig
from pretrain.model.gpt import DENSE, GPT, LayerFactory
from pretrain.model.lora import adapter_parameter_count, attach_adapters, base_identity
from pretrain.model.stats import count_parameters
from pretrain.objectives import Objective, build_objective
from pretrain.parallel import rng
from pretrain.parallel.context import context_parallel
from pretrain.parallel.deepspeed_config import batch_plan, deepspeed_config, resolve_precision
from pretrain.parallel.layout import (
    ParallelLayout,
    build_grid,
    register_fused_parameters,
    sharded_construction,
    validate_layout,
)
from pretrain.parallel.pipeline import build_pipeline
from pretrain.parallel.process_groups import ProcessInfo
from pretrain.parallel.tensor import TensorParallelLayers
from pretrain.training.batches import BatchMaker, StepBatches
from pretrain.training.eval_tasks import EvalTasks
from pretrain.training.loop import Cadence
from pretrain.training.metrics import MetricsLogger
from pretrain.training.optim import GuardedStep, NonFiniteLosses, SkippedSteps, build_optimizer, build_scheduler
from pretrain.training.run_defaults import fit_micro_batch, silent_gap_warnings
from pretrain.training.run_dir import check_run_dir
from pretrain.training.sample_log import SampleLog
from pretrain.training.step import DenseStep, PipelinedStep, StepLoss, TrainStep


@dataclass(frozen=True)
class ResolvedConfig:
    """A config settled once per launch: ``model`` from ``init_from``, the micro-batch filled in,
    the layout checked for ``layout.world_size`` processes."""

    cfg: TrainConfig
    layout: ParallelLayout
    micro_batch_note: Optional[str]  # what was filled in, for the run's log


def resolve_config(cfg: TrainConfig, world_size: int) -> ResolvedConfig:
    """Raises one clear error for a config that cannot run on ``world_size`` processes."""
    cfg, note = fit_micro_batch(with_imported_model(cfg), world_size)
    return ResolvedConfig(cfg, validate_layout(cfg, world_size), note)


@dataclass
class TrainingData:
    paths: list[str]
    stream: TrainingStream
    validation: ValidationSet
    has_validation: bool


@dataclass
class Run:
    """What the ``Trainer`` needs, built."""

    cfg: TrainConfig
    process: ProcessInfo
    layout: ParallelLayout
    grid: Any  # DeepSpeed's PipelineParallelGrid
    dp_rank: int  # this rank's data-parallel replica (its cp ranks read the same samples)
    plan: BatchPlan
    precision: Precision
    model_cfg: ModelConfig
    special: SpecialTokens
    data_identity: dict[str, Any]  # what the data is (tokenizer, split index), for resume
    stream: TrainingStream
    validation: ValidationSet
    make_batch: BatchMaker
    step_batches: StepBatches
    eval_tasks: Optional[EvalTasks]
    engine: Any  # DeepSpeedEngine or PipelineEngine
    optimizer: GuardedStep
    stepper: TrainStep
    logger: MetricsLogger
    skips: SkippedSteps
    background_saver: Optional[BackgroundSaver]
    sample_log: Optional[SampleLog]
    num_parameters: int  # of the whole model, whatever this rank holds of it
    trained_parameters: int
    imported: Optional[ReadStats]  # what init_from gave this rank
    lora_base: Optional[dict[str, Any]]
    start: Optional[Path]  # the checkpoint the run resumes from


def seed_dropout(seed: int, grid: Any, step: int) -> None:
    """Ranks of one tensor-parallel group see the same replicated activations, so they
    share a dropout stream; data-parallel replicas and pipeline stages draw their own,
    and so does each tensor-parallel rank for its heads (``pretrain.parallel.rng``)."""
    base = seed + 7919 * grid.get_data_parallel_rank() + grid.get_stage_id() + 1_000_003 * step
    torch.manual_seed(base)
    rng.seed(base, grid.get_slice_parallel_rank())


def model_config(cfg: TrainConfig, special: SpecialTokens) -> ModelConfig:
    """``model.*`` with the vocabulary filled in from the tokenizer (and grown for ids that
    tokenize appended to an imported model's tokenizer)."""
    model = cfg.model if cfg.model.vocab_size is not None else replace(cfg.model, vocab_size=special.vocab_size)
    model = with_grown_vocabulary(cfg.init_from, model, special)
    if model.vocab_size < special.vocab_size:
        raise ValueError(f"model.vocab_size={model.vocab_size} is smaller than the tokenizer's {special.vocab_size}")
    if cfg.train.seq_len > model.max_seq_len:
        raise ValueError(f"train.seq_len={cfg.train.seq_len} exceeds model.max_seq_len={model.max_seq_len}")
    return model


def open_training_data(
    data: DataConfig, paths: list[str], weights: list[float], objective: Objective, special: SpecialTokens, seed: int
) -> TrainingData:
    window = objective.window_length()
    tokenizer_hash = special.tokenizer_hash or None
    loss_mask = objective.name == "sft"  # chat shards: windows carry their loss masks
    train_sources = open_sources(paths, data.train_split, window, tokenizer_hash, loss_mask)
    for path, source in zip(paths, train_sources):
        if len(source) == 0:
            raise ShardError(
                f"{path}: no '{data.train_split}' shard holds one sample of {window} tokens "
                f"({sum(s.num_tokens for s in source.shards)} tokens in all); lower train.seq_len or add data"
            )
    # A Megatron pair has no validation split: it only trains.
    valid_paths = [p for p in paths if not is_megatron_prefix(p) and find_shards(p, data.valid_split)]
    validation = ValidationSet(open_sources(valid_paths, data.valid_split, window, tokenizer_hash, loss_mask))
    return TrainingData(
        paths=paths,
        stream=TrainingStream(train_sources, weights, seed),
        validation=validation,
        has_validation=bool(valid_paths),
    )


def build_model(
    cfg: TrainConfig, model_cfg: ModelConfig, layout: ParallelLayout, grid: Any, objective: Objective, loss: StepLoss
) -> torch.nn.Module:
    """The model (or this rank's pipeline stages), on the meta device or ZeRO-3 partitioned
    (see ``sharded_construction``), with LoRA's adapters attached."""
    tp_group = grid.get_slice_parallel_group() if layout.tp > 1 else None
    if layout.pp == 1:
        model = GPT(model_cfg, loss.layers, seed=cfg.train.seed)
        model.activation_checkpointing = cfg.train.activation_checkpointing
    else:
        model = build_pipeline(
            model_cfg,
            loss.layers,
            seed=cfg.train.seed,
            mode=objective.attention_mode,
            uses_doc_ids=objective.document_masking,
            grid=grid,
            loss_fn=loss.of_pipeline,
            partition_method=cfg.parallel.partition_method,
            checkpoint_interval=cfg.parallel.checkpoint_interval if cfg.train.activation_checkpointing else 0,
        )
    if cfg.lora.enabled:
        attach_adapters(model, cfg.lora, cfg.train.seed, tp_group)
    return model


def build_run(resolved: ResolvedConfig, process: ProcessInfo) -> Run:
    cfg, layout = resolved.cfg, resolved.layout
    if layout.world_size != process.world_size:
        raise ValueError(
            f"the config was resolved for {layout.world_size} processes, but {process.world_size} were launched"
        )
    run_dir = Path(cfg.run_dir)
    lora_base = base_identity(cfg.init_from, cfg.train.seed) if cfg.lora.enabled else None
    start = resolve_resume(cfg.resume, run_dir)  # before anything touches run_dir
    paths, weights = data_sources(cfg.data)
    tokenizer = tokenizer_dir(cfg.data, paths)
    special = SpecialTokens.load(tokenizer)
    model_cfg = model_config(cfg, special)
    identity = data_identity(paths, weights, cfg.data.train_split)
    config_changes = check_resume(start, cfg, model_cfg, special.tokenizer_hash, identity, force=cfg.resume == "force")
    objective = build_objective(cfg.objective, special, cfg.train.seq_len, cfg.train.seed)
    data = open_training_data(cfg.data, paths, weights, objective, special, cfg.train.seed)

    grid = build_grid(layout)
    context = context_parallel(grid, layout.cp)
    # The grid's data axis is dp × cp; the cp ranks of a replica read the same samples.
    dp_rank = grid.get_data_parallel_rank() // layout.cp
    seed_dropout(cfg.train.seed, grid, step=0)
    plan = batch_plan(cfg.train, dp_size=layout.dp)
    make_batch = BatchMaker(objective, process.device, context)
    step_batches = StepBatches(data.stream, make_batch, plan, dp_rank=dp_rank)
    precision = resolve_precision(cfg.train.precision, process.device)
    tp_group = grid.get_slice_parallel_group() if layout.tp > 1 else None
    layers = TensorParallelLayers(tp_group, cfg.parallel.sequence_parallel) if tp_group is not None else DENSE
    if context is not None:
        layers = layers if tp_group is not None else LayerFactory()
        layers.context = context
    nonfinite = NonFiniteLosses()  # what the step's losses tell the optimizer's guard
    loss = StepLoss(layers, nonfinite, context)
    eval_tasks = None
    if cfg.train.eval_tasks:
        eval_tasks = EvalTasks(
            cfg.train.eval_tasks,
            tokenizer,
            seq_len=cfg.train.seq_len,
            layout=layout,
            zero_stage=cfg.parallel.zero_stage,
            data=cfg.data,
        )

    # DeepSpeed counts its data-parallel ranks as dp × cp (each cp rank a micro-batch).
    ds_config = deepspeed_config(cfg, replace(plan, dp_size=layout.gradient_peers), precision)
    with sharded_construction(ds_config, grid, cfg.parallel.zero_stage):
        model = build_model(cfg, model_cfg, layout, grid, objective, loss)
    imported = load_initial_weights(cfg, model, resuming=start is not None)
    if cfg.parallel.zero_stage == 3:
        register_fused_parameters(model)
    with torch.device("meta"):  # the whole model's size, whatever this rank holds of it
        whole = GPT(model_cfg)
        num_parameters = count_parameters(whole)
        trained_parameters = adapter_parameter_count(whole, cfg.lora) if cfg.lora.enabled else num_parameters
    optimizer = build_optimizer(model, cfg.optim, process.device, nonfinite)

    checkpoint_bytes = bytes_per_parameter(optimizer) * trained_parameters
    check_run_dir(run_dir, checkpoint_bytes if Cadence.of(cfg.train).writes_checkpoints else 0, cfg.train.keep_last)
    start_step = read_metadata(start)["step"] if start is not None else 0
    logger = MetricsLogger(run_dir, process.is_main, cfg.logging.wandb, as_plain_dict(cfg), start_step=start_step)
    if process.is_main:
        # The run keeps a copy, so that evaluation, generation and export find the
        # tokenizer next to the checkpoints.
        copy_tokenizer_files(tokenizer, run_dir / "tokenizer")
        record_changes(run_dir, start_step, config_changes)
    per_round = plan.micro_batch * layout.dp
    notes = [resolved.micro_batch_note]
    notes += silent_gap_warnings(cfg, len(data.validation), data.has_validation, per_round)
    notes += [f"warning: resume=force: continuing with a changed {change}" for change in config_changes]
    notes += missing_eos_warnings(data.paths, data.stream.sources, special.eos_id)
    for note in filter(None, notes):
        logger.message(note)

    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=build_scheduler(optimizer, cfg.optim, cfg.train.max_steps),
        config=ds_config,
        mpu=None if layout.pp > 1 else grid,
    )
    optimizer.start()
    if cfg.train.compile:
        engine.compile()
    stepper: TrainStep
    if layout.pp > 1:
        stepper = PipelinedStep(engine)
    else:
        stepper = DenseStep(
            engine,
            loss,
            precision=precision,
            zero_stage=cfg.parallel.zero_stage,
            tp_group=tp_group,
            dp_group=grid.get_data_parallel_group(),
            dp_size=layout.gradient_peers,
            device=process.device,
        )
    sample_log = None
    if cfg.train.sample_log:
        sample_log = SampleLog(
            run_dir,
            dp_rank=dp_rank,
            dp_size=layout.dp,
            writer=grid.get_slice_parallel_rank() == 0
            and grid.get_stage_id() == 0
            and (context is None or context.rank == 0),
            is_main=process.is_main,
            resume_step=start_step,
        )
    if cfg.init_from:
        logger.message(start_message(cfg, model_cfg, start, imported))
    return Run(
        cfg=cfg,
        process=process,
        layout=layout,
        grid=grid,
        dp_rank=dp_rank,
        plan=plan,
        precision=precision,
        model_cfg=model_cfg,
        special=special,
        data_identity=identity,
        stream=data.stream,
        validation=data.validation,
        make_batch=make_batch,
        step_batches=step_batches,
        eval_tasks=eval_tasks,
        engine=engine,
        optimizer=optimizer,
        stepper=stepper,
        logger=logger,
        skips=SkippedSteps(cfg.train.nonfinite_policy, logger.message),
        background_saver=BackgroundSaver() if cfg.train.async_save else None,
        sample_log=sample_log,
        num_parameters=num_parameters,
        trained_parameters=trained_parameters,
        imported=imported,
        lora_base=lora_base,
        start=start,
    )
