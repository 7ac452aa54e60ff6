"""Storage: content-addressed blob stores and the metadata database (the source of truth)."""
