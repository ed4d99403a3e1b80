"""What generation, evaluation and export share: the tokenizer of a run, loading a trained
model for inference, and the Hydra wiring of their commands."""
