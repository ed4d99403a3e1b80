"""Corpus curation, tokenizer training and tokenization into packed token shards."""
