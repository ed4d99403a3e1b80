"""Decoder-only GPT pretraining under DeepSpeed: model, objectives, data, training loop."""
from pretrain.parallel.process_groups import choose_accelerator_quietly

choose_accelerator_quietly()  # before any module of the package imports deepspeed
