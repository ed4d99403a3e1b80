"""Token shards, sample order, blending and batching for training."""
