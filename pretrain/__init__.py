"""Decoder-only GPT pretraining under DeepSpeed: model, objectives, data, training loop."""

from pretrain.parallel.process_groups import choose_accelerator_quietly, default_cuda_allocator

choose_accelerator_quietly()  # before any module of the package imports deepspeed
default_cuda_allocator()  # before any command of the package touches CUDA
