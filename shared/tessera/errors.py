"""Errors that mean "this input is unusable": they quarantine an object or answer a 4xx,
and are never retried. Anything else is treated as transient and retried."""

from __future__ import annotations


class InvalidInput(Exception):
    """Input that can never succeed, with a machine-readable code and a human message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
