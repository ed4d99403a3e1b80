"""``Trainer(cfg, process).fit()``: trains a run that ``training/build.py`` builds (data, model,
DeepSpeed engine, step, log) from the config. The step lives in ``training/step.py``, the loop
and its hooks in ``training/loop.py`` and ``training/hooks.py``."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.distributed as dist

from pretrain.checkpoint.directory import read_metadata, restore_rng, save_checkpoint
from pretrain.checkpoint.loss_scale import loss_scale_state, restore_loss_scale
from pretrain.checkpoint.master_state import applied_updates
from pretrain.checkpoint.sharded import load_training_state, prepare_training_state
from pretrain.config import TrainConfig, as_plain_dict
from pretrain.model.lora import check_same_base
from pretrain.model.stats import training_flops_per_token
from pretrain.parallel.process_groups import ProcessInfo
from pretrain.training.build import ResolvedConfig, build_run, resolve_config, seed_dropout
from pretrain.training.hooks import CheckpointHook, EvaluationHook, LoggingHook, LogWindow
from pretrain.training.loop import Cadence, StepResult, run_loop
from pretrain.training.metrics import memory_gb, peak_tflops


class Trainer:
    """Training state (step, consumed samples) over a built run; ``fit`` runs the loop.

    ``cfg`` is resolved here unless the entry point resolved it already (it does, to check
    the layout and plan the memory before any process group exists)."""

    def __init__(self, cfg: Union[TrainConfig, ResolvedConfig], process: ProcessInfo) -> None:
        resolved = cfg if isinstance(cfg, ResolvedConfig) else resolve_config(cfg, process.world_size)
        run = build_run(resolved, process)
        self.run = run
        # The parts the loop uses (and tests reach for) by name.
        self.cfg, self.process, self.layout, self.grid = run.cfg, run.process, run.layout, run.grid
        self.plan, self.precision, self.model_cfg, self.special = run.plan, run.precision, run.model_cfg, run.special
        self.stream, self.validation, self.make_batch = run.stream, run.validation, run.make_batch
        self.step_batches, self.eval_tasks, self.stepper = run.step_batches, run.eval_tasks, run.stepper
        self.engine, self.optimizer, self.logger, self.skips = run.engine, run.optimizer, run.logger, run.skips
        self.background_saver, self.sample_log = run.background_saver, run.sample_log
        self.num_parameters, self.trained_parameters = run.num_parameters, run.trained_parameters
        self.imported, self.lora_base = run.imported, run.lora_base
        self.run_dir = Path(self.cfg.run_dir)
        self.dp_rank, self.data_identity = run.dp_rank, run.data_identity
        self.flops_per_token = training_flops_per_token(self.model_cfg, self.cfg.train.seq_len)
        self.peak_tflops = peak_tflops(process.device, self.cfg.train.peak_tflops)
        self.step = 0
        self.consumed_samples = 0
        self.resumed_from: Optional[Path] = None
        if run.start is not None:
            self._resume(run.start)

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
        self.skips.count = metadata["skipped_steps"]
        # Whatever the layout that wrote it: every rank takes its part of the saved state,
        # and the counters and schedule position follow from the step.
        # Adam's bias correction counts applied updates, not steps.
        load_training_state(path, self.engine, self.optimizer, self.grid, metadata["applied_updates"])
        restore_loss_scale(self.engine.optimizer, metadata["loss_scale"])
        self.engine.global_steps = self.step
        self.engine.global_samples = self.consumed_samples
        # DeepSpeed neither steps the schedule nor counts the step as taken when fp16's loss
        # scale overflows (Megatron does the same): the schedule stands that many steps back.
        self.engine.skipped_steps = metadata["loss_scale_overflows"]
        scheduler = self.engine.lr_scheduler
        scheduler.last_epoch = self.step - self.engine.skipped_steps - 1
        with warnings.catch_warnings():  # "scheduler before optimizer": we only replay its position
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()
        if metadata["layout"] == self._layout_record():
            restore_rng(path)
        else:
            # The saved RNG states belong to the old ranks: start fresh streams for this step.
            seed_dropout(self.cfg.train.seed, self.grid, self.step)
            self.logger.message(
                f"{path} was saved with layout {metadata['layout']}; resharded to {self._layout_record()}"
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
        lr = self.optimizer.param_groups[0]["lr"]  # the scheduler moves it on inside the step
        output = self.stepper.train(batches, with_grad_norm=with_grad_norm)
        skipped = self.optimizer.settle(self.step)
        self.step += 1
        self.consumed_samples += self.plan.global_batch
        self.skips.add(self.step, skipped)
        return StepResult(
            loss=output.loss,
            skipped=skipped,
            grad_norm=output.grad_norm,
            lr=lr,
            seconds=time.perf_counter() - started,
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
            "data": self.data_identity,
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
            f"tp {self.layout.tp} × pp {self.layout.pp} × dp {self.layout.dp}"
            f"{f' × cp {self.layout.cp}' if self.layout.cp > 1 else ''} = {self.process.world_size} processes, "
            f"ZeRO {self.cfg.parallel.zero_stage}; precision {self.precision.value}"
        )
        if self.cfg.lora.enabled:
            lora = self.cfg.lora
            self.logger.message(
                f"LoRA rank {lora.rank} on {', '.join(map(str, lora.targets))}: "
                f"{self.trained_parameters / 1e6:.3f}M trained "
                f"parameters ({100 * self.trained_parameters / self.num_parameters:.2f}%), the rest frozen"
            )
        cadence = Cadence.of(train)
        logging = LoggingHook(self.logger, self._record, curves_of=self.run_dir if self.process.is_main else None)
        hooks = [
            EvaluationHook(self.evaluate),
            logging,
            CheckpointHook(self.save, self.wait_for_save, cadence, last_saved=self.step),
        ]
        try:
            run_loop(self.train_step, hooks, cadence, start_step=self.step)
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
            "lr": window.lr,
            "grad_norm": grad_norm,
            "step_s": window.seconds / window.steps,
            "tokens_per_s": tokens_per_s,
            "tflops_per_device": tflops,
            "mfu": None if self.peak_tflops is None else tflops / self.peak_tflops,
            "memory_gb": memory_gb(self.process.device),
            "consumed_samples": self.consumed_samples,
            "skipped_steps": self.skipped_steps,
            "loss_scale_overflows": self.engine.skipped_steps,
        }
