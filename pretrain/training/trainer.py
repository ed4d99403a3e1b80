"""``Trainer(cfg, process).fit()``: builds a run (data, model, DeepSpeed engine, step,
hooks) from the config and trains it. The step lives in ``training/step.py``, the loop and
its hooks in ``training/loop.py`` and ``training/hooks.py``."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Optional

import deepspeed
import numpy as np
import torch
import torch.distributed as dist

from data_pipeline.formats.special_tokens import SpecialTokens
from data_pipeline.formats.token_shards import ShardError, find_shards
from data_pipeline.formats.tokenizer_files import copy_tokenizer_files
from pretrain.checkpoint.background_save import BackgroundSaver
from pretrain.checkpoint.directory import read_metadata, resolve_resume, restore_rng, save_checkpoint
from pretrain.checkpoint.loss_scale import loss_scale_state, restore_loss_scale
from pretrain.checkpoint.master_state import applied_updates
from pretrain.checkpoint.resume_check import check_resume, record_changes
from pretrain.checkpoint.sharded import bytes_per_parameter, load_training_state, prepare_training_state
from pretrain.config import TrainConfig, as_plain_dict
from pretrain.data.loader import TrainingStream, ValidationSet, open_sources
from pretrain.data.megatron import is_megatron_prefix, missing_eos_warnings
from pretrain.data.sources import data_sources, tokenizer_dir
from pretrain.hf.init_from import load_initial_weights, start_message, with_grown_vocabulary, with_imported_model
from pretrain.model.gpt import DENSE, GPT, LayerFactory
from pretrain.model.lora import adapter_parameter_count, attach_adapters, base_identity, check_same_base
from pretrain.model.stats import count_parameters, training_flops_per_token
from pretrain.objectives import build_objective
from pretrain.parallel import rng
from pretrain.parallel.context import context_parallel
from pretrain.parallel.deepspeed_config import batch_plan, deepspeed_config, resolve_precision
from pretrain.parallel.layout import build_grid, register_fused_parameters, sharded_construction, validate_layout
from pretrain.parallel.pipeline import build_pipeline
from pretrain.parallel.process_groups import ProcessInfo
from pretrain.parallel.tensor import TensorParallelLayers
from pretrain.training.batches import BatchMaker, StepBatches
from pretrain.training.eval_tasks import EvalTasks
from pretrain.training.hooks import CheckpointHook, EvaluationHook, LoggingHook, LogWindow
from pretrain.training.loop import Schedule, StepResult, run_loop
from pretrain.training.metrics import MetricsLogger, memory_gb, peak_tflops
from pretrain.training.optim import SkippedSteps, build_optimizer, build_scheduler
from pretrain.training.run_defaults import fit_micro_batch, silent_gap_warnings
from pretrain.training.run_dir import check_run_dir
from pretrain.training.sample_log import SampleLog
from pretrain.training.step import DenseStep, PipelinedStep, StepLoss, TrainStep


class Trainer:
    def __init__(self, cfg: TrainConfig, process: ProcessInfo) -> None:
        cfg, micro_batch_note = fit_micro_batch(with_imported_model(cfg), process.world_size)
        self.cfg = cfg
        self.process = process
        self.run_dir = Path(cfg.run_dir)
        self.layout = validate_layout(cfg, process.world_size)
        self.lora_base = base_identity(cfg.init_from, cfg.train.seed) if cfg.lora.enabled else None
        start = resolve_resume(cfg.resume, self.run_dir)  # before anything touches run_dir
        paths, weights = data_sources(cfg.data)
        tokenizer = tokenizer_dir(cfg.data, paths)
        self.special = SpecialTokens.load(tokenizer)
        model_cfg = (
            cfg.model if cfg.model.vocab_size is not None else replace(cfg.model, vocab_size=self.special.vocab_size)
        )
        model_cfg = with_grown_vocabulary(cfg, model_cfg, self.special)
        config_changes = check_resume(start, cfg, model_cfg, self.special.tokenizer_hash, force=cfg.resume == "force")
        if model_cfg.vocab_size < self.special.vocab_size:
            raise ValueError(
                f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's {self.special.vocab_size}"
            )
        if cfg.train.seq_len > model_cfg.max_seq_len:
            raise ValueError(f"train.seq_len={cfg.train.seq_len} exceeds model.max_seq_len={model_cfg.max_seq_len}")
        self.model_cfg = model_cfg
        self.objective = build_objective(cfg.objective, self.special, cfg.train.seq_len, cfg.train.seed)
        window = self.objective.window_length()
        tokenizer_hash = self.special.tokenizer_hash or None
        loss_mask = self.objective.name == "sft"  # chat shards: windows carry their loss masks
        train_sources = open_sources(paths, cfg.data.train_split, window, tokenizer_hash, loss_mask)
        for path, source in zip(paths, train_sources):
            if len(source) == 0:
                raise ShardError(
                    f"{path}: no '{cfg.data.train_split}' shard holds one sample of {window} tokens "
                    f"({sum(s.num_tokens for s in source.shards)} tokens in all); lower train.seq_len or add data"
                )
        self.stream = TrainingStream(train_sources, weights, cfg.train.seed)
        # A Megatron pair has no validation split: it only trains.
        valid_paths = [p for p in paths if not is_megatron_prefix(p) and find_shards(p, cfg.data.valid_split)]
        self.validation = ValidationSet(
            open_sources(valid_paths, cfg.data.valid_split, window, tokenizer_hash, loss_mask)
        )

        self.grid = build_grid(self.layout)
        self.context = context_parallel(self.grid, self.layout.cp)
        # The grid's data axis is dp × cp; the cp ranks of a replica read the same samples.
        self.dp_rank = self.grid.get_data_parallel_rank() // self.layout.cp
        self._seed_dropout(step=0)
        self.plan = batch_plan(cfg, dp_size=self.layout.dp)
        self.make_batch = BatchMaker(self.objective, process.device, self.context)
        self.step_batches = StepBatches(self.stream, self.make_batch, self.plan, dp_rank=self.dp_rank)
        self.precision = resolve_precision(cfg.train.precision, process.device)
        tp_group, sequence_parallel = self.grid.get_slice_parallel_group(), cfg.parallel.sequence_parallel
        self.layers = TensorParallelLayers(tp_group, sequence_parallel) if self.layout.tp > 1 else DENSE
        if self.context is not None:
            self.layers = self.layers if self.layout.tp > 1 else LayerFactory()
            self.layers.context = self.context
        self.loss = StepLoss(self.layers, self.context)
        self.eval_tasks = (
            EvalTasks(
                cfg.train.eval_tasks,
                tokenizer,
                seq_len=cfg.train.seq_len,
                layout=self.layout,
                zero_stage=cfg.parallel.zero_stage,
                data=cfg.data,
            )
            if cfg.train.eval_tasks
            else None
        )
        # DeepSpeed counts its data-parallel ranks as dp × cp (each cp rank a micro-batch).
        ds_config = deepspeed_config(cfg, replace(self.plan, dp_size=self.layout.gradient_peers), self.precision)
        with sharded_construction(ds_config, self.grid, cfg.parallel.zero_stage):
            model = self._build_model()
        self.imported = load_initial_weights(cfg, model, resuming=start is not None)
        if cfg.parallel.zero_stage == 3:
            register_fused_parameters(model)
        with torch.device("meta"):  # the whole model's size, whatever this rank holds of it
            whole = GPT(model_cfg)
            self.num_parameters = count_parameters(whole)
            self.trained_parameters = (
                adapter_parameter_count(whole, cfg.lora) if cfg.lora.enabled else self.num_parameters
            )
        self.optimizer = build_optimizer(model, cfg.optim, process.device)
        self.loss.guard = self.optimizer
        checkpoint_bytes = bytes_per_parameter(self.optimizer) * self.trained_parameters
        check_run_dir(
            self.run_dir, checkpoint_bytes if Schedule.of(cfg.train).writes_checkpoints else 0, cfg.train.keep_last
        )
        self.background_saver = BackgroundSaver() if cfg.train.async_save else None
        start_step = read_metadata(start)["step"] if start is not None else 0
        self.logger = MetricsLogger(
            self.run_dir, process.is_main, cfg.logging.wandb, as_plain_dict(cfg), start_step=start_step
        )
        if process.is_main:
            # The run keeps a copy, so that evaluation, generation and export find the
            # tokenizer next to the checkpoints.
            copy_tokenizer_files(tokenizer, self.run_dir / "tokenizer")
            record_changes(self.run_dir, start_step, config_changes)
        per_round = self.plan.micro_batch * self.layout.dp
        notes = [micro_batch_note, *silent_gap_warnings(cfg, len(self.validation), bool(valid_paths), per_round)]
        notes += [f"warning: resume=force: continuing with a changed {change}" for change in config_changes]
        notes += missing_eos_warnings(paths, self.stream.sources, self.special.eos_id)
        for note in filter(None, notes):
            self.logger.message(note)
        scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.max_steps)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model,
            optimizer=self.optimizer,
            lr_scheduler=scheduler,
            config=ds_config,
            mpu=None if self.pipelined else self.grid,
        )
        self.optimizer.start()
        if cfg.train.compile:
            self.engine.compile()
        self.stepper = self._build_step()
        self.flops_per_token = training_flops_per_token(model_cfg, cfg.train.seq_len)
        self.peak_tflops = peak_tflops(process.device, cfg.train.peak_tflops)
        self.step = 0
        self.consumed_samples = 0
        self.skips = SkippedSteps(cfg.train.nonfinite_policy, self.logger.message)
        self.resumed_from: Optional[Path] = None
        self.sample_log = self._open_sample_log(start_step)
        if cfg.init_from:
            self.logger.message(start_message(cfg, model_cfg, start, self.imported))
        if start is not None:
            self._resume(start)

    @property
    def pipelined(self) -> bool:
        return self.layout.pp > 1

    def _build_model(self) -> torch.nn.Module:
        cfg = self.cfg
        if not self.pipelined:
            model = GPT(self.model_cfg, self.layers, seed=cfg.train.seed)
            model.activation_checkpointing = cfg.train.activation_checkpointing
        else:
            model = self._build_pipeline()
        if cfg.lora.enabled:
            attach_adapters(
                model, cfg.lora, cfg.train.seed, self.grid.get_slice_parallel_group() if self.layout.tp > 1 else None
            )
        return model

    def _build_pipeline(self) -> torch.nn.Module:
        cfg = self.cfg
        return build_pipeline(
            self.model_cfg,
            self.layers,
            seed=cfg.train.seed,
            mode=self.objective.attention_mode,
            uses_doc_ids=self.objective.document_masking,
            grid=self.grid,
            loss_fn=self.loss.of_pipeline,
            partition_method=cfg.parallel.partition_method,
            checkpoint_interval=cfg.parallel.checkpoint_interval if cfg.train.activation_checkpointing else 0,
        )

    def _build_step(self) -> TrainStep:
        if self.pipelined:
            return PipelinedStep(self.engine)
        return DenseStep(
            self.engine,
            self.loss,
            precision=self.precision,
            zero_stage=self.cfg.parallel.zero_stage,
            tp_group=self.grid.get_slice_parallel_group() if self.layout.tp > 1 else None,
            dp_group=self.grid.get_data_parallel_group(),
            dp_size=self.layout.gradient_peers,
            device=self.process.device,
        )

    def _open_sample_log(self, resume_step: int) -> Optional[SampleLog]:
        if not self.cfg.train.sample_log:
            return None
        return SampleLog(
            self.run_dir,
            dp_rank=self.dp_rank,
            dp_size=self.layout.dp,
            writer=self.grid.get_slice_parallel_rank() == 0
            and self.grid.get_stage_id() == 0
            and (self.context is None or self.context.rank == 0),
            is_main=self.process.is_main,
            resume_step=resume_step,
        )

    def _seed_dropout(self, step: int) -> None:
        """Ranks of one tensor-parallel group see the same replicated activations, so they
        share a dropout stream; data-parallel replicas and pipeline stages draw their own,
        and so does each tensor-parallel rank for its heads (``pretrain.parallel.rng``)."""
        base = self.cfg.train.seed + 7919 * self.dp_rank + self.grid.get_stage_id() + 1_000_003 * step
        torch.manual_seed(base)
        rng.seed(base, self.grid.get_slice_parallel_rank())

    def _layout_record(self) -> dict[str, int]:
        return {
            "tp": self.layout.tp,
            "pp": self.layout.pp,
            "dp": self.layout.dp,
            "cp": self.layout.cp,
            "zero_stage": self.cfg.parallel.zero_stage,
        }

    def _resume(self, path: Path) -> None:
        metadata = read_metadata(path)
        if self.lora_base is not None:
            check_same_base(metadata.get("lora_base"), self.lora_base, path)
        self.step, self.consumed_samples = metadata["step"], metadata["consumed_samples"]
        self.skips.count = metadata.get("skipped_steps", 0)
        # Whatever the layout that wrote it: every rank takes its part of the saved state,
        # and the counters and schedule position follow from the step.
        # Adam's bias correction counts applied updates; older checkpoints did not record them
        updates = metadata.get("applied_updates")
        load_training_state(path, self.engine, self.optimizer, self.grid, self.step if updates is None else updates)
        restore_loss_scale(self.engine.optimizer, metadata.get("loss_scale"))
        self.engine.global_steps = self.step
        self.engine.global_samples = self.consumed_samples
        # DeepSpeed neither steps the schedule nor counts the step as taken when fp16's loss
        # scale overflows (Megatron does the same): the schedule stands that many steps back.
        self.engine.skipped_steps = metadata.get("loss_scale_overflows", 0)
        scheduler = self.engine.lr_scheduler
        scheduler.last_epoch = self.step - self.engine.skipped_steps - 1
        with warnings.catch_warnings():  # "scheduler before optimizer": we only replay its position
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()
        if {"cp": 1, **metadata.get("layout", {})} == self._layout_record():  # cp unrecorded: 1
            restore_rng(path)
        else:
            # The saved RNG states belong to the old ranks: start fresh streams for this step.
            self._seed_dropout(self.step)
            self.logger.message(
                f"{path} was saved with layout {metadata.get('layout')}; resharded to {self._layout_record()}"
            )
        self.resumed_from = path

    # -- one optimizer step -------------------------------------------------------------
    def train_step(self, with_grad_norm: bool = True) -> StepResult:
        """One optimizer step, without reading anything back from the device (but the
        gradient norm, when asked for). The loss it returns is this rank's (the mean over
        ranks costs a collective, so it is taken once per log line, in ``_record``)."""
        started = time.perf_counter()
        samples, batches = self.step_batches(
            self.consumed_samples, prefetch_next=self.step + 1 < self.cfg.train.max_steps
        )
        if self.sample_log is not None:
            self.sample_log.write(self.step + 1, samples)
        # Several optimizer.step() calls may make up one step (ZeRO sub-groups): the guard
        # tells them apart by the step number it is given here.
        self.optimizer.begin(self.step)
        output = self.stepper.train(batches, with_grad_norm=with_grad_norm)
        skipped = self.optimizer.settle(self.step)
        self.step += 1
        self.consumed_samples += self.plan.global_batch
        self.skips.add(self.step, skipped)
        return StepResult(
            loss=output.loss, skipped=skipped, grad_norm=output.grad_norm, seconds=time.perf_counter() - started
        )

    @property
    def skipped_steps(self) -> int:
        """Steps whose update the non-finite guard dropped: reads the pending decisions back
        from the device, reports them, and stops the run under ``nonfinite_policy=stop``."""
        return self.skips.read()

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self) -> Optional[dict[str, float]]:
        """Validation loss and perplexity (when there is a validation split) and the results
        of ``train.eval_tasks``; None when there is nothing to evaluate."""
        metrics = self._validation_loss()
        if self.eval_tasks is not None:
            metrics.update(self.eval_tasks.run(self.engine.module, is_main=self.process.is_main, step=self.step))
        return metrics or None

    @torch.no_grad()
    def _validation_loss(self) -> dict[str, float]:
        per_round = self.plan.micro_batch * self.plan.dp_size
        rounds = min(self.cfg.train.eval_batches, len(self.validation) // per_round)
        if rounds == 0:
            return {}
        micro = self.plan.micro_batch
        starts = [index * per_round + self.dp_rank * micro for index in range(rounds)]
        batches = [self.make_batch(self.validation.windows(p), p) for p in (np.arange(s, s + micro) for s in starts)]
        val_loss = self.stepper.validation_loss(batches)
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0))}

    # -- checkpoints ---------------------------------------------------------------------
    def _checkpoint_metadata(self) -> dict:
        return {
            "consumed_samples": self.consumed_samples,
            "skipped_steps": self.skipped_steps,
            "loss_scale": loss_scale_state(self.engine.optimizer),
            "applied_updates": applied_updates(self.optimizer),
            "loss_scale_overflows": self.engine.skipped_steps,
            "world_size": self.process.world_size,
            "layout": self._layout_record(),
            "config": as_plain_dict(self.cfg),
            "model": as_plain_dict(self.model_cfg),
            "tokenizer": as_plain_dict(self.special),
            **({} if self.lora_base is None else {"lora_base": self.lora_base}),
        }

    def save(self) -> Path:
        """Checkpoint this step; with ``train.async_save`` the files are still being written
        when it returns (``wait_for_save`` waits for them)."""
        host_buffers = self.background_saver.host_buffers if self.background_saver is not None else None

        def prepare_state(path: Path):  # type: ignore[no-untyped-def]
            return prepare_training_state(path, self.engine, self.optimizer, self.grid, host_buffers)

        metadata = self._checkpoint_metadata()
        return save_checkpoint(
            self.run_dir, self.step, metadata, self.cfg.train.keep_last, prepare_state, self.background_saver
        )

    def wait_for_save(self) -> None:
        """Block until the checkpoint being written in the background, if any, is complete."""
        if self.background_saver is not None:
            self.background_saver.wait()

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Train to ``train.max_steps``; return the logged records."""
        train = self.cfg.train
        if self.cfg.logging.progress_bar:
            self.logger.start_progress(total=train.max_steps, initial=self.step)
        if self.resumed_from is not None:
            self.logger.message(f"resumed from {self.resumed_from} at step {self.step}")
        self.logger.message(
            f"model {self.model_cfg.name}: {self.num_parameters / 1e6:.2f}M parameters; global batch "
            f"{self.plan.global_batch} × {train.seq_len} tokens ({self.plan.micro_batch} per micro-batch × "
            f"{self.plan.grad_accum} accumulation × {self.plan.dp_size} data-parallel ranks); layout "
            f"tp {self.layout.tp} × pp {self.layout.pp} × dp {self.layout.dp} × cp {self.layout.cp} = "
            f"{self.process.world_size} processes, "
            f"ZeRO {self.cfg.parallel.zero_stage}; precision {self.precision.value}"
        )
        if self.cfg.lora.enabled:
            lora = self.cfg.lora
            self.logger.message(
                f"LoRA rank {lora.rank} on {', '.join(map(str, lora.targets))}: {self.trained_parameters / 1e6:.3f}M trained "
                f"parameters ({100 * self.trained_parameters / self.num_parameters:.2f}%), the rest frozen"
            )
        schedule = Schedule.of(train)
        logging = LoggingHook(self.logger, self._record, curves_of=self.run_dir if self.process.is_main else None)
        hooks = [
            EvaluationHook(self.evaluate),
            logging,
            CheckpointHook(self.save, self.wait_for_save, schedule, last_saved=self.step),
        ]
        try:
            run_loop(self.train_step, hooks, schedule, start_step=self.step)
        finally:
            self.step_batches.close()
            self.logger.close()
            if self.sample_log is not None:
                self.sample_log.close()
        return logging.records

    def _record(self, window: LogWindow) -> dict:
        """Collective (the mean loss over data-parallel and context-parallel ranks)."""
        local, grad_norm = window.read()  # first: it adds the wait for the device to the window's time
        tokens_per_s = window.steps * self.plan.global_batch * self.cfg.train.seq_len / max(window.seconds, 1e-9)
        tflops = self.flops_per_token * tokens_per_s / self.process.world_size / 1e12
        loss = local.reshape(1).clone()
        dist.all_reduce(loss, group=self.grid.get_data_parallel_group())
        return {
            "step": self.step,
            "loss": float(loss) / self.layout.gradient_peers,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "tokens_per_s": tokens_per_s,
            "tflops_per_device": tflops,
            "mfu": None if self.peak_tflops is None else tflops / self.peak_tflops,
            "memory_gb": memory_gb(self.process.device),
            "consumed_samples": self.consumed_samples,
            "skipped_steps": self.skipped_steps,
            "loss_scale_overflows": self.engine.skipped_steps,
        }
