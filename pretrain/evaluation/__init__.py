"""Evaluation: perplexity, multiple choice by log-likelihood, ROUGE/BLEU on generations
(``python -m pretrain.evaluate``, or :func:`pretrain.evaluation.run.evaluate_model` in training)."""
