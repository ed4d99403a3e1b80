"""The training loop: DeepSpeed engine, data, objective, metrics, checkpoints."""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, TextIO

import deepspeed
import numpy as np
from deepspeed.runtime.base_optimizer import ZeROOptimizer
import torch
import torch.distributed as dist

from data_pipeline.formats.tokenizer_files import copy_tokenizer_files
from pretrain.background_save import BackgroundSaver
from pretrain.checkpoint import checkpoint_root, complete_checkpoints, read_metadata, resolve_resume, restore_rng, save_checkpoint
from pretrain.config import Precision, TrainConfig, as_plain_dict
from pretrain.curves import plot_training_curves
from pretrain.data.loader import TrainingStream, ValidationSet, open_sources
from pretrain.data.megatron import is_megatron_prefix, missing_eos_warnings
from data_pipeline.formats.token_shards import ShardError, find_shards
from pretrain.deepspeed_config import batch_plan, deepspeed_config, resolve_precision
from pretrain.distributed import ProcessInfo
from pretrain.evaluation.run import check_tasks, evaluate_model
from pretrain.evaluation.tasks import with_window_length
from pretrain.hf.init_from import load_initial_weights, start_message, with_grown_vocabulary, with_imported_model
from pretrain.inference.tokenizer import TextTokenizer
from pretrain.loss import sample_mean_loss
from pretrain.metrics import MetricsLogger, memory_gb, peak_tflops
from pretrain.model import DENSE, GPT
from pretrain.model_stats import count_parameters, training_flops_per_token
from pretrain.objectives import Batch, build_objective
from pretrain.optim import build_optimizer, build_scheduler
from pretrain.parallel.layout import build_grid, sharded_construction, validate_layout
from pretrain.parallel.pipeline import build_pipeline, stage_inputs
from pretrain.parallel.sharded_checkpoint import bytes_per_parameter, load_training_state, prepare_training_state
from pretrain.parallel.tensor import TensorParallelLayers
from pretrain.run_defaults import fit_micro_batch, silent_gap_warnings
from pretrain.run_record import check_resume, record_changes
from data_pipeline.formats.special_tokens import META_FILENAME, SpecialTokens


@dataclass
class StepResult:
    loss: float  # this rank's mean loss; nan/inf when the step was not finite
    skipped: bool
    grad_norm: Optional[float]
    seconds: float


def data_sources(cfg: TrainConfig) -> tuple[list[str], list[float]]:
    if cfg.data.path and cfg.data.sources:
        raise ValueError("give either data.path or data.sources, not both")
    if cfg.data.path:
        paths, weights = [cfg.data.path], [1.0]
    elif cfg.data.sources:
        paths, weights = [s.path for s in cfg.data.sources], [s.weight for s in cfg.data.sources]
    else:
        raise ValueError("no training data: set data.path=<dir of token shards> (the output of data_pipeline.tokenize)")
    for path in paths:
        if not Path(path).is_dir() and not is_megatron_prefix(path):
            raise FileNotFoundError(
                f"data.path={path}: no such directory of token shards (the output of data_pipeline.tokenize), "
                "nor the prefix of a Megatron .bin/.idx pair"
            )
    return paths, weights


def tokenizer_dir(cfg: TrainConfig, source_paths: list[str]) -> Path:
    directory = Path(cfg.data.tokenizer) if cfg.data.tokenizer else Path(source_paths[0])
    if not (directory / META_FILENAME).exists():
        raise FileNotFoundError(
            f"{directory / META_FILENAME}: tokenizer metadata not found; set data.tokenizer=<tokenizer dir> "
            "(the output of data_pipeline.train_tokenizer)"
        )
    return directory


def copy_tokenizer(source: Path, run_dir: Path) -> None:
    """The run keeps a copy, so that evaluation, generation and export find the tokenizer
    next to the checkpoints."""
    copy_tokenizer_files(source, run_dir / "tokenizer")


def check_run_dir(run_dir: Path, bytes_per_checkpoint: int, keep_last: int) -> None:
    """Fail now, not after hours, when checkpoints could not be written: the newest
    ``keep_last`` are kept, and the next one is written before the oldest goes, so the run
    needs room for ``keep_last + 1`` (less what its checkpoints already take)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-probe-"):  # one per rank: no races
            pass
    except OSError as err:
        raise PermissionError(f"run_dir={run_dir} is not writable ({err.strerror}); choose another run_dir") from None
    existing = sum(f.stat().st_size for c in complete_checkpoints(checkpoint_root(run_dir)) for f in c.rglob("*") if f.is_file())
    needed = (max(keep_last, 1) + 1) * bytes_per_checkpoint - existing
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise OSError(
            f"run_dir={run_dir}: {free / 2**30:.2f} GiB free, but train.keep_last={keep_last} checkpoints and the one "
            f"being written need about {needed / 2**30:.2f} GiB more; free space or choose another run_dir"
        )


class Trainer:
    def __init__(self, cfg: TrainConfig, process: ProcessInfo) -> None:
        cfg, micro_batch_note = fit_micro_batch(with_imported_model(cfg), process.world_size)
        self.cfg = cfg
        self.process = process
        self.run_dir = Path(cfg.run_dir)
        self.layout = validate_layout(cfg, process.world_size)
        start = resolve_resume(cfg.resume, self.run_dir)  # before anything touches run_dir
        paths, weights = data_sources(cfg)
        tokenizer = tokenizer_dir(cfg, paths)
        self.special = SpecialTokens.load(tokenizer)
        model_cfg = cfg.model if cfg.model.vocab_size is not None else replace(cfg.model, vocab_size=self.special.vocab_size)
        model_cfg = with_grown_vocabulary(cfg, model_cfg, self.special)
        config_changes = check_resume(start, cfg, model_cfg, self.special.tokenizer_hash, force=cfg.resume == "force")
        if model_cfg.vocab_size < self.special.vocab_size:
            raise ValueError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's {self.special.vocab_size}")
        if cfg.train.seq_len > model_cfg.max_seq_len:
            raise ValueError(f"train.seq_len={cfg.train.seq_len} exceeds model.max_seq_len={model_cfg.max_seq_len}")
        self.model_cfg = model_cfg
        self.objective = build_objective(cfg.objective, self.special, cfg.train.seq_len, cfg.train.seed)
        window = self.objective.window_length()
        tokenizer_hash = self.special.tokenizer_hash or None
        train_sources = open_sources(paths, cfg.data.train_split, window, tokenizer_hash)
        for path, source in zip(paths, train_sources):
            if len(source) == 0:
                raise ShardError(
                    f"{path}: no '{cfg.data.train_split}' shard holds one sample of {window} tokens "
                    f"({sum(s.num_tokens for s in source.shards)} tokens in all); lower train.seq_len or add data"
                )
        self.stream = TrainingStream(train_sources, weights, cfg.train.seed)
        # A Megatron pair has no validation split: it only trains.
        valid_paths = [p for p in paths if not is_megatron_prefix(p) and find_shards(p, cfg.data.valid_split)]
        self.validation = ValidationSet(open_sources(valid_paths, cfg.data.valid_split, window, tokenizer_hash))

        self.grid = build_grid(self.layout)
        self.dp_rank = self.grid.get_data_parallel_rank()
        self._seed_dropout(step=0)
        self.plan = batch_plan(cfg, dp_size=self.layout.dp)
        self.precision = resolve_precision(cfg.train.precision, process.device)
        tp_group, sequence_parallel = self.grid.get_slice_parallel_group(), cfg.parallel.sequence_parallel
        self.layers = TensorParallelLayers(tp_group, sequence_parallel) if self.layout.tp > 1 else DENSE
        self.task_tokenizer = self._task_tokenizer(tokenizer)
        ds_config = deepspeed_config(cfg, self.plan, self.precision)
        with sharded_construction(ds_config, self.grid, cfg.parallel.zero_stage):
            model = self._build_model()
        self.imported = load_initial_weights(cfg, model, resuming=start is not None)
        with torch.device("meta"):  # the whole model's size, whatever this rank holds of it
            self.num_parameters = count_parameters(GPT(model_cfg))
        self.optimizer = build_optimizer(model, cfg.optim, process.device, cfg.train.nonfinite_policy)
        check_run_dir(self.run_dir, bytes_per_parameter(self.optimizer) * self.num_parameters, cfg.train.keep_last)
        self.background_saver = BackgroundSaver() if cfg.train.async_save else None
        start_step = read_metadata(start)["step"] if start is not None else 0
        self.logger = MetricsLogger(
            self.run_dir, process.is_main, cfg.logging.wandb, as_plain_dict(cfg), start_step=start_step
        )
        if process.is_main:
            copy_tokenizer(tokenizer, self.run_dir)
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
        # Several optimizer.step() calls may make up one step (ZeRO sub-groups): they are
        # told apart by the step count.
        self.optimizer.step_counter = lambda: self.step
        self.optimizer.start()
        if cfg.train.compile:
            self.engine.compile()
        self.flops_per_token = training_flops_per_token(model_cfg, cfg.train.seq_len)
        self.peak_tflops = peak_tflops(process.device, cfg.train.peak_tflops)
        self.step = 0
        self.consumed_samples = 0
        self.skipped_steps = 0
        self.resumed_from: Optional[Path] = None
        self.sample_log = self._open_sample_log(start_step)
        if cfg.init_from:
            self.logger.message(start_message(cfg, model_cfg, start, self.imported))
        if start is not None:
            self._resume(start)

    def _task_tokenizer(self, tokenizer: Path) -> Optional[TextTokenizer]:
        """The tokenizer ``train.eval_tasks`` need; they run on the whole model in one process."""
        if not self.cfg.train.eval_tasks:
            return None
        if self.pipelined or self.layout.tp > 1 or self.cfg.parallel.zero_stage == 3:
            raise ValueError(
                "train.eval_tasks need the whole model on one rank: not with parallel.pp > 1, parallel.tp > 1 or "
                "parallel.zero_stage=3; evaluate the checkpoints with `python -m pretrain.evaluate` instead"
            )
        check_tasks(self.cfg.train.eval_tasks)
        return TextTokenizer.load(tokenizer)

    def _run_eval_tasks(self) -> dict[str, float]:
        """On the main rank only; the others wait and learn whether it failed, so an error
        there stops every rank instead of leaving them waiting in the next collective."""
        metrics: dict[str, float] = {}
        failure: Optional[BaseException] = None
        if self.process.is_main:
            try:
                tasks = with_window_length(self.cfg.train.eval_tasks, self.cfg.train.seq_len)
                metrics = evaluate_model(self.engine.module, self.task_tokenizer, tasks)
            except Exception as err:  # reported below, on every rank
                failure = err
        failed = torch.tensor([float(failure is not None)], device=self.process.device)
        dist.all_reduce(failed)
        if failed.item():
            raise RuntimeError(f"train.eval_tasks failed at step {self.step} on rank 0") from failure
        return metrics

    @property
    def pipelined(self) -> bool:
        return self.layout.pp > 1

    def _build_model(self) -> torch.nn.Module:
        cfg = self.cfg
        if not self.pipelined:
            model = GPT(self.model_cfg, self.layers, seed=cfg.train.seed)
            model.activation_checkpointing = cfg.train.activation_checkpointing
            return model
        return build_pipeline(
            self.model_cfg,
            self.layers,
            seed=cfg.train.seed,
            mode=self.objective.attention_mode,
            uses_doc_ids=self.objective.document_masking,
            grid=self.grid,
            loss_fn=lambda logits, targets: self._loss(logits, *targets),
            partition_method=cfg.parallel.partition_method,
            checkpoint_interval=cfg.parallel.checkpoint_interval if cfg.train.activation_checkpointing else 0,
        )

    def _open_sample_log(self, resume_step: int) -> Optional[TextIO]:
        """One file per data-parallel rank (its tensor-parallel and pipeline peers see the
        same samples). Records past the step training resumes from are dropped, so the logs
        always describe exactly the steps the model holds."""
        if not self.cfg.train.sample_log:
            return None
        directory = self.run_dir / "samples"
        directory.mkdir(parents=True, exist_ok=True)
        mine = directory / f"dp-rank-{self.dp_rank:05d}.jsonl"
        writer = self.grid.get_slice_parallel_rank() == 0 and self.grid.get_stage_id() == 0
        for log in directory.glob("dp-rank-*.jsonl"):
            # Our own file by its writer; files of ranks a resharded run no longer has, by rank 0.
            if (writer and log == mine) or (self.process.is_main and int(log.stem.split("-")[-1]) >= self.layout.dp):
                _truncate_sample_log(log, resume_step)
        return open(mine, "a", buffering=1) if writer else None

    def _seed_dropout(self, step: int) -> None:
        """Ranks of one tensor-parallel group see the same replicated activations, so they
        share a dropout stream; data-parallel replicas and pipeline stages draw their own."""
        torch.manual_seed(self.cfg.train.seed + 7919 * self.dp_rank + self.grid.get_stage_id() + 1_000_003 * step)

    def _layout_record(self) -> dict[str, int]:
        return {"tp": self.layout.tp, "pp": self.layout.pp, "dp": self.layout.dp, "zero_stage": self.cfg.parallel.zero_stage}

    def _resume(self, path: Path) -> None:
        metadata = read_metadata(path)
        self.step, self.consumed_samples = metadata["step"], metadata["consumed_samples"]
        self.skipped_steps = metadata.get("skipped_steps", 0)
        # Whatever the layout that wrote it: every rank takes its part of the saved state,
        # and the counters and schedule position follow from the step.
        load_training_state(path, self.engine, self.optimizer, self.grid, self.step)
        self.engine.global_steps = self.step
        self.engine.global_samples = self.consumed_samples
        scheduler = self.engine.lr_scheduler
        scheduler.last_epoch = self.step - 1
        with warnings.catch_warnings():  # "scheduler before optimizer": we only replay its position
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()
        if metadata.get("layout") == self._layout_record():
            restore_rng(path)
        else:
            # The saved RNG states belong to the old ranks: start fresh streams for this step.
            self._seed_dropout(self.step)
            self.logger.message(f"{path} was saved with layout {metadata.get('layout')}; resharded to {self._layout_record()}")
        self.resumed_from = path

    # -- one optimizer step -------------------------------------------------------------
    def _batch(self, windows: np.ndarray, positions: np.ndarray) -> Batch:
        batch = self.objective(torch.from_numpy(windows), torch.from_numpy(positions))
        device = self.process.device
        attention = batch.attention
        attention.prefix_len = None if attention.prefix_len is None else attention.prefix_len.to(device)
        attention.doc_ids = None if attention.doc_ids is None else attention.doc_ids.to(device)
        return Batch(batch.input_ids.to(device), batch.labels.to(device), batch.loss_mask.to(device), attention)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        loss = sample_mean_loss(self.layers.token_losses(logits, labels), loss_mask)
        if torch.is_grad_enabled():  # training; the pipeline's evaluation comes through here too
            self.optimizer.note_loss(loss)
        return loss

    def _pipeline_loss(self, batches: list[Batch], train: bool) -> float:
        items = iter(
            (stage_inputs(b.input_ids, b.attention.prefix_len, b.attention.doc_ids), (b.labels, b.loss_mask))
            for b in batches
        )
        if train:
            return float(self.engine.train_batch(data_iter=items))
        return float(self.engine.eval_batch(data_iter=items, num_micro_batches=len(batches)))

    def train_step(self, with_grad_norm: bool = True) -> StepResult:
        """One optimizer step. The loss it returns is this rank's (the mean over ranks costs
        a collective, so it is taken once per log line, in ``_record``)."""
        started = time.perf_counter()
        micro_positions = [self.plan.positions(self.consumed_samples, m, self.dp_rank) for m in range(self.plan.grad_accum)]
        samples = [self.stream.sample(p) for p in micro_positions]
        batches = [self._batch(sample.windows, sample.positions) for sample in samples]
        if self.sample_log is not None:
            pairs = [[int(s), int(w)] for sample in samples for s, w in zip(sample.sources, sample.window_ids)]
            self.sample_log.write(json.dumps({"step": self.step + 1, "samples": pairs}) + "\n")
        grad_norm = None
        if self.pipelined:
            local_loss = self._pipeline_loss(batches, train=True)
        else:
            loss_sum = 0.0
            for micro_step, batch in enumerate(batches):
                loss = self._loss(self.engine(batch.input_ids, batch.attention), batch.labels, batch.loss_mask)
                loss_sum += float(loss.detach())
                self.engine.backward(loss * self._unapplied_loss_scale())
                if micro_step == len(batches) - 1 and with_grad_norm:
                    grad_norm = self._unsharded_grad_norm()
                self.engine.step()
            local_loss = loss_sum / self.plan.grad_accum
        self.optimizer.settle(self.step)
        self.step += 1
        self.consumed_samples += self.plan.global_batch
        skipped = self.optimizer.last_step_skipped
        if skipped:
            self.skipped_steps += 1
            self.logger.message(f"step {self.step}: non-finite loss; the update was skipped (train.nonfinite_policy=skip)")
        if grad_norm is None and with_grad_norm:  # DeepSpeed computed it on the sharded gradients
            norm = self.engine.get_global_grad_norm()
            grad_norm = None if norm is None else float(norm)
        return StepResult(loss=local_loss, skipped=skipped, grad_norm=grad_norm, seconds=time.perf_counter() - started)

    def _unapplied_loss_scale(self) -> float:
        """fp16 without ZeRO: DeepSpeed 0.19's ``engine.backward`` applies the loss scale only
        for ZeRO optimizers, yet its ZeRO-0 fp16 wrapper (``FP16_UnfusedOptimizer``) divides
        the gradients by it at the step: unscaled, fp16 gradients underflow, clipping never
        acts and AdamW's eps swamps the update (5.21 vs fp32's 5.16 after one step)."""
        scaling = getattr(self.engine.optimizer, "loss_scale_config", None)
        if scaling is None or self.precision is not Precision.fp16 or isinstance(self.engine.optimizer, ZeROOptimizer):
            return 1.0  # DeepSpeed scales it itself
        return float(scaling.cur_scale)

    def _unsharded_grad_norm(self) -> Optional[float]:
        """Without ZeRO DeepSpeed does not report the norm, but every rank holds the whole
        averaged gradient of its parameters after the last backward of the step: sum the
        squares of the tensor-parallel shards over the group, count replicated ones once."""
        if self.cfg.parallel.zero_stage != 0:
            return None
        params = [p for p in self.engine.module.parameters() if p.grad is not None]
        if not params:
            return None
        def sum_of_squares(group: list[torch.nn.Parameter]) -> torch.Tensor:
            return torch.stack([p.grad.float().square().sum() for p in group] or [torch.zeros((), device=self.process.device)]).sum()

        sharded = sum_of_squares([p for p in params if getattr(p, "tp_split_dim", None) is not None])
        if self.layout.tp > 1:
            dist.all_reduce(sharded, group=self.grid.get_slice_parallel_group())
        replicated = sum_of_squares([p for p in params if getattr(p, "tp_split_dim", None) is None])
        return float((sharded + replicated).sqrt()) / self._unapplied_loss_scale()

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self) -> Optional[dict[str, float]]:
        """Validation loss and perplexity (when there is a validation split) and the results
        of ``train.eval_tasks``; None when there is nothing to evaluate."""
        metrics = self._validation_loss()
        if self.task_tokenizer is not None:
            metrics.update(self._run_eval_tasks())
        return metrics or None

    @torch.no_grad()
    def _validation_loss(self) -> dict[str, float]:
        per_round = self.plan.micro_batch * self.plan.dp_size
        rounds = min(self.cfg.train.eval_batches, len(self.validation) // per_round)
        if rounds == 0:
            return {}
        micro = self.plan.micro_batch
        starts = [index * per_round + self.dp_rank * micro for index in range(rounds)]
        batches = [self._batch(self.validation.windows(p), p) for p in (np.arange(s, s + micro) for s in starts)]
        if self.pipelined:
            val_loss = self._pipeline_loss(batches, train=False)
        else:
            self.engine.eval()
            total = torch.zeros(1, dtype=torch.float64, device=self.process.device)
            for batch in batches:
                logits = self.engine(batch.input_ids, batch.attention)
                total += sample_mean_loss(self.layers.token_losses(logits, batch.labels), batch.loss_mask).double()
            self.engine.train()
            dist.all_reduce(total, group=self.grid.get_data_parallel_group())
            val_loss = float(total) / (rounds * self.plan.dp_size)
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0))}

    # -- the loop ------------------------------------------------------------------------
    def _checkpoint_metadata(self) -> dict:
        return {
            "consumed_samples": self.consumed_samples,
            "skipped_steps": self.skipped_steps,
            "world_size": self.process.world_size,
            "layout": self._layout_record(),
            "config": as_plain_dict(self.cfg),
            "model": as_plain_dict(self.model_cfg),
            "tokenizer": as_plain_dict(self.special),
        }

    def save(self) -> Path:
        """Checkpoint this step; with ``train.async_save`` the files are still being written
        when it returns (``wait_for_save`` waits for them)."""
        background = self.background_saver is not None

        def prepare_state(path: Path) -> Callable[[], None]:
            return prepare_training_state(path, self.engine, self.optimizer, self.grid, copy=background)

        metadata = self._checkpoint_metadata()
        return save_checkpoint(self.run_dir, self.step, metadata, self.cfg.train.keep_last, prepare_state, self.background_saver)

    def wait_for_save(self) -> None:
        """Block until the checkpoint being written in the background, if any, is complete."""
        if self.background_saver is not None:
            self.background_saver.wait()

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
            f"tp {self.layout.tp} × pp {self.layout.pp} × dp {self.layout.dp} = {self.process.world_size} processes, "
            f"ZeRO {self.cfg.parallel.zero_stage}; precision {self.precision.value}"
        )
        records: list[dict] = []
        last_saved = self.step
        window = _LogWindow()
        try:
            while self.step < train.max_steps:
                upcoming = self.step + 1
                # Every run ends with an evaluation, however its length compares with eval_every.
                evaluates = (bool(train.eval_every) and upcoming % train.eval_every == 0) or upcoming == train.max_steps
                logs = upcoming % train.log_every == 0 or evaluates or upcoming == train.max_steps
                result = self.train_step(with_grad_norm=logs)
                self.logger.advance(result.loss)
                window.add(result)
                evaluation = self.evaluate() if evaluates else None
                if logs:
                    record = {**self._record(window), **(evaluation or {})}
                    records.append(record)
                    self.logger.log(record)
                    window = _LogWindow()
                if train.save_every and self.step % train.save_every == 0:
                    self.save()
                    last_saved = self.step
            if last_saved != self.step:
                self.save()
            self.wait_for_save()
            if self.process.is_main and records:
                self.logger.message(f"curves: {plot_training_curves(self.run_dir)}")
        finally:
            self.logger.close()
            if self.sample_log is not None:
                self.sample_log.close()
        return records

    def _record(self, window: "_LogWindow") -> dict:
        """Collective (the mean loss over data-parallel ranks)."""
        tokens_per_s = window.steps * self.plan.global_batch * self.cfg.train.seq_len / max(window.seconds, 1e-9)
        tflops = self.flops_per_token * tokens_per_s / self.process.world_size / 1e12
        local = np.mean(window.losses) if window.losses else float("nan")
        loss = torch.tensor([local], dtype=torch.float64, device=self.process.device)
        dist.all_reduce(loss, group=self.grid.get_data_parallel_group())
        return {
            "step": self.step,
            "loss": float(loss) / self.plan.dp_size,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": window.grad_norm,
            "tokens_per_s": tokens_per_s,
            "tflops_per_device": tflops,
            "mfu": None if self.peak_tflops is None else tflops / self.peak_tflops,
            "memory_gb": memory_gb(self.process.device),
            "consumed_samples": self.consumed_samples,
            "skipped_steps": self.skipped_steps,
        }


def _truncate_sample_log(path: Path, last_step: int) -> None:
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


class _LogWindow:
    """The steps since the last log line: their training time (evaluation and checkpoints
    excluded), this rank's finite losses and the last gradient norm."""

    def __init__(self) -> None:
        self.steps = 0
        self.seconds = 0.0
        self.losses: list[float] = []
        self.grad_norm: Optional[float] = None

    def add(self, result: StepResult) -> None:
        self.steps += 1
        self.seconds += result.seconds
        if not result.skipped:
            self.losses.append(result.loss)
            self.grad_norm = result.grad_norm
