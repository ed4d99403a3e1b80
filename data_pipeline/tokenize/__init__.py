"""``python -m data_pipeline.tokenize``: curated text to fixed-size packed token shards, as
work units on the curation executors (local processes, Slurm job arrays or Ray tasks).

  config.py   the options (configs/tokenize.yaml builds on TokenizeConfig)
  output_dir.py  where every file lives under output_dir
  encode.py   stage 1, per input unit: documents -> a token run per split
  chat.py     stage 1 of format=chat: conversations -> samples with a loss mask (docs/sft.md)
  pack.py     stage 2, per output shard: its token range copied out of the runs
  summary.py  what a run did, printed and kept in summary.json
  cli.py      the command: plan check, the two stages, the split indexes
"""
