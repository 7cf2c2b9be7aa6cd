"""Single-purpose benchmark probes, each a `main(argv)` run by `python -m scripts.bench NAME`."""
