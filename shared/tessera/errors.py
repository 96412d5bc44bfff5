"""Errors with a machine-readable code. `InvalidInput` means "this input is unusable": it
quarantines an object or answers a 4xx, and is never retried; anything else is transient."""

from __future__ import annotations


class CodedError(Exception):
    """An error with a machine-readable code and a message a person can act on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidInput(CodedError):
    """Input that can never succeed: quarantined or answered with a 4xx, never retried."""
