"""The comparison table: every system side by side on one dataset (see table/main.py)."""
