"""The naming rules users meet: dataset names, model names and labels."""

from __future__ import annotations

import re

from tessera.config import PIPELINE
from tessera.errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NAME_RULE = "must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"


def validate_dataset_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput("bad_dataset_name", f"dataset name {name!r} {_NAME_RULE}")
    return name


def validate_model_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput("bad_model_name", f"model name {name!r} {_NAME_RULE}")
    return name


def validate_label(label: str) -> str:
    limit = PIPELINE.limits.max_label_length
    if (
        not label
        or len(label) > limit
        or not label.isprintable()
        or any(ch.isspace() or ch in ",/\\" for ch in label)
    ):
        raise InvalidInput(
            "bad_label",
            f"label {label!r} must be 1-{limit} printable characters without spaces, "
            "commas or slashes",
        )
    return label
