"""Formatters (normalize, pii) and document filters (gopher_repetition, gopher_quality, c4,
language, quality); chain.py puts them in the order the pipeline runs them. Each filter's config
dataclass lives in curate/config.py, or beside the filter (pii.py, quality.py) when nothing of
the curate command is needed to define it."""
