"""Keeping the store healthy over time: integrity checks and expiry of abandoned uploads."""
