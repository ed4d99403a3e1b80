"""Tensor and pipeline parallelism layered onto the one model definition."""
