"""Batch predictions need a served champion: the serving tests' fixtures, shared here."""

from tests.serving.conftest import fresh_handler, model_bytes, served, trained

__all__ = ["fresh_handler", "model_bytes", "served", "trained"]
