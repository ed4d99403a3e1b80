"""Checkpoints: the directory on disk, each rank's sharded pieces, the optimizer's master
state, fp16's loss scale, background saves, consolidation and what a resume may change."""
