"""Caching layer: the bytes-bounded block cache and the pure read-ahead policy."""
