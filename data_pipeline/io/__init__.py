"""Reading inputs and writing shards: formats, line and zstd reading, work-unit slices."""
