"""File formats that curation/tokenization writes and training reads: token shards and the
special-token metadata. pretrain imports them; nothing here imports pretrain."""
