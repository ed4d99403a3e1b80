"""The model: a decoder-only transformer, its config, initialisation, loss, attention
kernels, fused projections and LoRA adapters."""
