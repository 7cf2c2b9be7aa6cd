"""What every benchmark suite shares, written once: cleanup on any exit (`cleanup`), the
servers (`servers`: Azurite, the Azure Files emulator, the latency proxy), dsmount daemons
(`daemon`), CPU and RSS meters and page-cache drops (`meters`), and batches of timed calls
with their figures (`batch`)."""
