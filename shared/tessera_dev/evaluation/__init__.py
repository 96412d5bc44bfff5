"""Evaluations: `tessera eval NAME` runs NAME.main(argv)."""
