"""Synthetic datasets in the real input formats, for the demo, the tests and the benchmarks."""
