"""File formats that curation/tokenization writes and training reads: token shards, the
tokenizer files and their special-token metadata, JSON lines files. pretrain imports them;
nothing here imports pretrain."""
