"""Benchmarks: `tessera bench NAME` runs NAME.main(argv) and prints its figures."""
