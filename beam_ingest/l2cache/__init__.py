"""CAVE's L2 cache: per-layer-2-node features of each chunk (docs/l2cache.md)."""
