"""dsmount's benchmarks: one harness, suites per area, goals in one module, results as JSON
rendered into docs/benchmarks.md. Measurements, not tests: run them as root (FUSE mounts,
drop_caches), alone on the machine, from the repository root:

    python -m scripts.bench [TABLE OPTIONS]      # the comparison table (table/main.py)
    python -m scripts.bench SUITE [OPTIONS]      # warm, streams, writes, transfer, adapters,
                                                 # soak (suites/)
    python -m scripts.bench render               # docs/benchmarks.md from docs/bench-results/

Layout:
- harness/: cleanup on any exit, the servers (Azurite, the Files emulator, the latency
  proxy), dsmount daemons, CPU/RSS meters and page-cache drops (from /proc), timed batches.
- table/: every system side by side on one dataset: reads, small files, listing, versions
  and packed epochs, writes, and the cost rows (CPU per file and per GiB, the disk-cache
  epoch beside local disk, the loader epoch, FUSE requests by kind).
- suites/: single-purpose probes (warm and metrics, many streams, one write, transfers, SDK
  adapters, the fault soak).
- targets.py: every goal; report.py: the markdown of a run, and docs/benchmarks.md.
"""
