"""The training configuration: typed dataclasses that are also Hydra's schema.

``configs/train.yaml`` composes the config groups (model, objective, parallel, optim, data,
experiment) on top of :class:`TrainConfig`. Because the schema is typed and closed, a
misspelt key or a value of the wrong type in an override is an error naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import II, DictConfig, OmegaConf

from pretrain.choices import Choice
from pretrain.evaluation.tasks import TaskConfig
from pretrain.model.config import ModelConfig
from pretrain.model.lora import LoraConfig
from pretrain.objectives import ObjectiveConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class OptimizerName(Choice):
    adamw = "adamw"
    sgd = "sgd"


class Schedule(Choice):
    cosine = "cosine"  # linear warmup, cosine decay to min_lr_ratio · lr
    constant = "constant"  # linear warmup, then flat
    wsd = "wsd"  # warmup, stable, then linear decay over the last decay_fraction of training


class Precision(Choice):
    auto = "auto"  # bf16 on a GPU that has it, else fp32
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class NonFinitePolicy(Choice):
    skip = "skip"  # report, drop the step's update, go on
    stop = "stop"  # report and stop the run


class WandbMode(Choice):
    disabled = "disabled"
    offline = "offline"
    online = "online"


class PartitionMethod(Choice):
    parameters = "parameters"  # balance the stages' parameter counts
    uniform = "uniform"  # the same number of layers per stage
    blocks = "blocks"  # balance the transformer blocks only


@dataclass
class ParallelConfig:
    name: str = "single"
    # Tensor-parallel degree: attention heads and MLP width split across this many ranks.
    tp: int = 1
    # With tp > 1: split the activations between the tensor-parallel layers over the
    # sequence too (norms, dropout and residuals on 1/tp of the tokens; docs/performance.md).
    sequence_parallel: bool = False
    # Pipeline stages; data parallelism takes the rest: dp = world size / (tp · pp · cp).
    pp: int = 1
    # Context-parallel degree: every sequence split over this many ranks, each holding two of
    # its 2·cp chunks (causal load balancing); attention all-gathers keys and values
    # (pretrain/parallel/context.py, docs/performance.md). For sequences whose activations
    # do not fit one device; cp ranks are data-parallel peers for the gradients and ZeRO.
    cp: int = 1
    # 0: plain data parallel; 1: shard optimizer state; 2: + gradients; 3: + parameters.
    zero_stage: int = 0
    # Pipeline only: how layers are split into stages, and how many layers each activation
    # checkpoint spans when train.activation_checkpointing is on.
    partition_method: PartitionMethod = PartitionMethod.parameters
    checkpoint_interval: int = 1
    # ZeRO 1-3 communication (docs/performance.md): reduce gradients while the backward pass
    # still runs, copy them into one contiguous buffer as they are made (less fragmentation),
    # and the sizes, in elements, of the gradient-reduction and parameter all-gather buckets
    # (bigger: fewer, larger collectives; overlap_comm holds a few buckets' worth extra).
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    reduce_bucket_size: int = 200_000_000
    allgather_bucket_size: int = 200_000_000


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.adamw
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    schedule: Schedule = Schedule.cosine
    decay_fraction: float = 0.2  # wsd only
    weight_decay: float = 0.1
    # Norm weights, biases and embeddings are not decayed unless this is true.
    decay_embeddings_and_norms: bool = False
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    grad_clip: float = 1.0  # 0 switches clipping off


@dataclass
class DataSource:
    path: str = "???"
    weight: float = 1.0


@dataclass
class DataConfig:
    # A directory of token shards (the output of data_pipeline.tokenize), or the prefix of a
    # Megatron-LM .bin/.idx pair (set data.tokenizer too; README "Training") ...
    path: Optional[str] = None
    # ... or several, blended by weight; give either path or sources.
    sources: list[DataSource] = field(default_factory=list)
    train_split: str = "train"
    valid_split: str = "val"
    # The tokenizer directory (tokenizer_meta.json); default: the one the tokenize step
    # copied next to the shards.
    tokenizer: Optional[str] = None


@dataclass
class TrainLoopConfig:
    max_steps: int = 1000
    # Tokens per training sample; default: the model's max_seq_len.
    seq_len: int = II("model.max_seq_len")
    # Samples per forward pass on one rank; default (null): the largest of 8, 4, 2, 1 that
    # fits global_batch_size on the data-parallel ranks (the start-up line says which).
    micro_batch_size: Optional[int] = None
    # Samples per optimizer step across all data-parallel ranks; gradient accumulation
    # makes up the difference from micro_batch_size · data-parallel size.
    global_batch_size: int = 8
    seed: int = 1234
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 20
    # Tasks of pretrain.evaluate run at every evaluation too (perplexity, multiple choice,
    # generation; see docs/evaluation.md), e.g.
    #   'train.eval_tasks=[{type: multiple_choice, path: tasks/mc.jsonl, limit: 200}]'
    eval_tasks: list[TaskConfig] = field(default_factory=list)
    save_every: int = 500
    # Save a checkpoint when training ends. With save_every=0 too the run writes no checkpoint
    # and skips the free-disk check (throughput measurements, benchmarks/gpu.sh).
    save_at_end: bool = True
    keep_last: int = 3
    # Write checkpoints in the background: each rank copies its shard of the training state
    # to host memory (one shard's worth more host memory) and the next steps run while a
    # thread writes it. Off when host memory is tight.
    async_save: bool = False
    # Record which samples each step trained on, as (source, window) pairs, in
    # <run_dir>/samples/dp-rank-NNNNN.jsonl: for auditing data order across restarts (a
    # resumed run first drops the records of steps after its checkpoint).
    sample_log: bool = False
    precision: Precision = Precision.auto
    activation_checkpointing: bool = False
    compile: bool = False
    nonfinite_policy: NonFinitePolicy = NonFinitePolicy.stop
    # Peak dense TFLOP/s for MFU; None looks the accelerator up in a table.
    peak_tflops: Optional[float] = None


@dataclass
class WandbConfig:
    mode: WandbMode = WandbMode.disabled
    project: str = "pretrain"
    name: Optional[str] = None


@dataclass
class LoggingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress_bar: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Low-rank adapters on a frozen model (pretrain/model/lora.py, docs/lora.md); rank 0: off.
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Print the predicted memory and speed of this layout and exit (docs/plan.md).
    plan: bool = False
    # Refuse to start when the predicted memory per device exceeds the device (docs/plan.md).
    memory_check: bool = True
    run_dir: str = "runs/default"
    # auto: continue from the newest complete checkpoint in run_dir if there is one, refusing
    # one trained with settings that change the run's meaning (README, "Checkpoints and
    # resume"); force: the same, accepting such changes (recorded in
    # <run_dir>/config_changes.jsonl); never: start fresh; or a path to one checkpoint directory.
    resume: str = "auto"
    # A Hugging Face checkpoint directory to start from (config.json + safetensors); the
    # model config comes from it. Ignored when the run resumes from its own checkpoints.
    init_from: Optional[str] = None


def register_configs() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def check_known_keys(node: DictConfig, schema: type, prefix: str = "") -> None:
    """Hydra's ``+key=value`` can add keys even to a typed config; refuse any the schema lacks."""
    fields = {f.name: f.type for f in dataclasses.fields(schema)}
    for key in node.keys():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ValueError(f"unknown setting {prefix}{key}: not in {schema.__name__} ({schema.__module__}){hint}")
        child_type = OmegaConf.get_type(node, key)
        if dataclasses.is_dataclass(child_type):
            check_known_keys(node[key], child_type, f"{prefix}{key}.")


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """The composed Hydra config as plain dataclasses (enums resolved, interpolations done)."""
    check_known_keys(cfg, TrainConfig)
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, TrainConfig)
    return config


def load_train_config(overrides: Sequence[str] = ()) -> TrainConfig:
    """Compose ``configs/train.yaml`` with command-line style overrides, outside ``hydra.main``
    (tests, notebooks, other tools)."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="train", overrides=list(overrides))
    return to_train_config(cfg)


def as_plain_dict(config: Any) -> dict:
    """A JSON-friendly dict of a config dataclass (for checkpoints and metrics)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True, enum_to_str=True)
