"""The curation command: config, the stages (filter -> dedup -> write) and the report."""
