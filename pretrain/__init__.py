"""Decoder-only GPT pretraining under DeepSpeed: model, objectives, data, training loop."""
