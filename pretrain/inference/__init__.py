"""What generation, evaluation and export share: the tokenizer of a run and loading a trained
model for inference."""
