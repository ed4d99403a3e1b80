"""Formatters (normalize, pii) and document filters (gopher_repetition, gopher_quality, c4,
language, quality); chain.py puts them in the order the pipeline runs them. Each filter's config
dataclass lives beside the filter; chain.py's ``FiltersConfig`` gathers them."""
