"""Training a tokenizer and using it: the SentencePiece trainer and its sample (train.py,
sample.py), the Hugging Face files it exports (hf_export.py), Hugging Face tokenizers as a
pipeline tokenizer (hf_tokenizer.py, hf_added_tokens.py). The files on disk are
data_pipeline/formats/tokenizer_files.py."""
