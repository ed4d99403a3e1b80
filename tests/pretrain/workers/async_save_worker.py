"""Trains with ``train.async_save`` while every shard file stops after its first bytes, as
if the disk hung: tests/pretrain/checkpoint/test_async_save.py kills it in the middle of the write.
Usage: python tests/pretrain/workers/async_save_worker.py OVERRIDE..."""

from __future__ import annotations

import sys
import time
from typing import BinaryIO

from torch import Tensor

import pretrain.checkpoint.sharded as sharded_checkpoint
from pretrain.config import load_train_config
from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer


def hanging_write(out: BinaryIO, tensor: Tensor) -> None:
    out.write(b"\0" * 8)
    out.flush()
    time.sleep(3600)


if __name__ == "__main__":
    sharded_checkpoint._write_tensor = hanging_write
    Trainer(load_train_config(sys.argv[1:]), init_distributed()).fit()
