"""Text generation: KV cache, greedy, beam search and sampling (``python -m pretrain.generate``)."""
