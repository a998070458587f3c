"""Benchmarks: certwatch's TLS offload proxy against HAProxy (see bench/README.md)."""
