"""The training job's one error type: a run that cannot produce a model."""

from __future__ import annotations

from tessera.errors import CodedError


class TrainingError(CodedError):
    """The job cannot produce a model: a machine-readable code and a message naming the problem."""
