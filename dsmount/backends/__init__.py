"""Storage backends: one small async interface (base.py), one implementation per kind of store."""
