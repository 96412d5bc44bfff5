"""What a dropped sheet says about itself: its dataset, grid and labels.

Two ways to say it, so both `aws s3 cp --metadata` users and people dragging files into the S3
console are served:
- S3 user metadata: `grid=10x10`, `row-labels=0 1 ... 9` (spaces or commas) or
  `labels=<one per cell>` or `label=7`, `square=true|false`, `layout=auto|grid|free`; what
  metadata cannot carry (non-ASCII labels, over 2 KB) in a labels manifest
  `<sheet key>.labels.json` beside it.
- The key: `incoming/train/<dataset>/<label>/<name>.png` labels every cell, and a grid ending
  the file name (`sheet-10x10.png`) needs no metadata.
A sheet that names no grid has it found on the page (ruled lines or gaps between symbols), and
a page with no grid is read as symbols: `row-labels` then label its lines of symbols, `labels`
its symbols in reading order.
Metadata wins over the key when both say something.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from itertools import accumulate

from tessera.config import PIPELINE
from tessera.errors import InvalidInput
from tessera.names import validate_dataset_name, validate_label

METADATA_KEYS = frozenset({"grid", "row-labels", "labels", "label", "square", "layout"})
# How a page is read: "auto" finds a grid, else symbols; "grid" never reads symbols; "free"
# reads symbols (lines of hand-placed symbols) without looking for a grid.
LAYOUTS = ("auto", "grid", "free")
_GRID = re.compile(r"^\s*(\d{1,4})\s*[xX]\s*(\d{1,4})\s*$")
# Only the documented form names a grid: "-RxC" ending the file name (sheet-10x10.png). A size
# elsewhere in a name (scan_1024x768.png, photo-3000x2000-edit.jpg) is not a grid.
_GRID_IN_NAME = re.compile(r"(?:^|-)(\d{1,4})x(\d{1,4})$")
_LABEL_SEPARATORS = re.compile(r"\s*,\s*|\s+")
LABELS_MANIFEST_SUFFIX = ".labels.json"
MAX_LABELS_MANIFEST_BYTES = 1024 * 1024
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


@dataclass(frozen=True, kw_only=True)
class SheetSpec:
    """A training sheet's spec. `rows`/`cols` are None when the sheet does not name its grid:
    the split step finds it, then `with_grid` checks the labels against what was found."""

    dataset: str
    sheet_id: str
    rows: int | None
    cols: int | None
    labels: tuple[str, ...]
    square: bool = False
    label_layout: str = "cells"  # "cells": one per cell, "rows": one per row, "all": one
    layout: str = "auto"
    # For a page read as symbols: where each line starts in reading order (lines are ragged).
    line_starts: tuple[int, ...] | None = None

    def label_at(self, row: int, col: int) -> str:
        if self.label_layout == "all":
            return self.labels[0]
        if self.label_layout == "rows":
            return self.labels[row]
        if self.line_starts is not None:
            return self.labels[self.line_starts[row] + col]
        assert self.cols is not None
        return self.labels[row * self.cols + col]

    def with_lines(self, counts: list[int]) -> SheetSpec:
        """This spec for a page read as symbols, `counts[i]` symbols in line i: `row-labels`
        label lines, `labels` the symbols in reading order, and the counts must match."""
        total = sum(counts)
        if self.label_layout == "rows" and len(self.labels) != len(counts):
            raise InvalidInput(
                "label_count_mismatch",
                f"{len(self.labels)} row labels for the {len(counts)} lines of symbols found "
                f"on the sheet (symbols per line: {counts})",
            )
        if self.label_layout == "cells" and len(self.labels) != total:
            raise InvalidInput(
                "label_count_mismatch",
                f"{len(self.labels)} labels for the {total} symbols found on the sheet "
                f"in {len(counts)} lines (symbols per line: {counts})",
            )
        starts = (0, *accumulate(counts[:-1])) if counts else ()
        return replace(self, rows=len(counts), cols=max(counts, default=0), line_starts=starts)

    def with_grid(self, rows: int, cols: int) -> SheetSpec:
        """This spec with the grid the page was found to have; labels must still fit it."""
        if self.label_layout == "rows" and len(self.labels) != rows:
            raise InvalidInput(
                "label_count_mismatch",
                f"{len(self.labels)} row labels for the {rows}x{cols} grid found on the sheet",
            )
        if self.label_layout == "cells" and len(self.labels) != rows * cols:
            raise InvalidInput(
                "label_count_mismatch",
                f"{len(self.labels)} labels for the {rows}x{cols} grid found on the sheet",
            )
        return _expanded(replace(self, rows=rows, cols=cols))


def layout_from(metadata: dict[str, str]) -> str:
    layout = metadata.get("layout", "auto").strip().lower()
    if layout not in LAYOUTS:
        raise InvalidInput(
            "bad_metadata", f"layout={metadata['layout']!r} is not one of {list(LAYOUTS)}"
        )
    return layout


def _expanded(spec: SheetSpec) -> SheetSpec:
    """With the grid known, one label per cell: what every reader of `labels` expects."""
    if spec.rows is None or spec.cols is None or spec.label_layout == "cells":
        return spec
    cells = tuple(spec.label_at(r, c) for r in range(spec.rows) for c in range(spec.cols))
    return replace(spec, labels=cells, label_layout="cells")


def sheet_id_for(key: str, etag: str) -> str:
    """Deterministic per (object, content): reprocessing the same upload rewrites the same tiles."""
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    safe_stem = re.sub(r"[^A-Za-z0-9_-]", "_", stem)[:40] or "sheet"
    digest = hashlib.sha256(f"{key}\n{etag.strip(chr(34))}".encode()).hexdigest()[:12]
    return f"{safe_stem}-{digest}"


def parse_grid(value: str) -> tuple[int, int]:
    match = _GRID.fullmatch(value)
    if not match:
        raise InvalidInput("bad_metadata", f"grid={value!r} is not ROWSxCOLS, e.g. 10x10")
    return int(match.group(1)), int(match.group(2))


def optional_grid_for(filename: str, metadata: dict[str, str]) -> tuple[int, int] | None:
    """The grid from metadata `grid=RxC`, else from a file name like `sheet-10x10.png`; None
    when the sheet names no grid (Split then finds it on the page)."""
    if "grid" in metadata:
        rows, cols = parse_grid(metadata["grid"])
    else:
        found = _GRID_IN_NAME.search(filename.rsplit(".", 1)[0].lower())
        if not found:
            return None
        rows, cols = int(found.group(1)), int(found.group(2))
    if rows < 1 or cols < 1:
        raise InvalidInput("bad_metadata", f"grid {rows}x{cols} needs at least one cell")
    return rows, cols


def square_from(metadata: dict[str, str]) -> bool:
    flag = metadata.get("square", "false").strip().lower()
    if flag not in _TRUE | _FALSE:
        raise InvalidInput("bad_metadata", f"square={metadata['square']!r} is not true/false")
    return flag in _TRUE


def check_metadata_keys(metadata: dict[str, str], known: frozenset[str]) -> dict[str, str]:
    """Lower-cased metadata; unknown keys are refused rather than silently ignored."""
    lowered = {name.lower(): value for name, value in metadata.items()}
    unknown = sorted(set(lowered) - known)
    if unknown:
        raise InvalidInput(
            "bad_metadata", f"unknown metadata {unknown}; known keys are {sorted(known)}"
        )
    return lowered


def _split_labels(value: str) -> list[str]:
    """Labels separated by commas or by spaces: `0,1,2` from boto3 or a JSON --metadata, and
    `0 1 2` from the AWS CLI's shorthand, which splits its own argument on commas."""
    return [validate_label(part) for part in _LABEL_SEPARATORS.split(value.strip())]


def labels_manifest_key(sheet_key: str) -> str:
    """Where a sheet's labels manifest lives: beside it, `<sheet key>.labels.json`."""
    return sheet_key + LABELS_MANIFEST_SUFFIX


def parse_labels_manifest(data: bytes) -> dict[str, str]:
    """A labels manifest -> the same fields metadata carries, for what metadata cannot hold:
    labels that are not ASCII (S3 metadata is), or more than its 2 KB.

        {"grid": "2x5", "row-labels": ["ア", "イ"]}      {"labels": "a b c d"}      {"label": "中"}
    """
    if len(data) > MAX_LABELS_MANIFEST_BYTES:
        raise InvalidInput(
            "bad_manifest", f"the labels manifest is over {MAX_LABELS_MANIFEST_BYTES} bytes"
        )
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidInput("bad_manifest", "the labels manifest is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise InvalidInput("bad_manifest", "the labels manifest must be a JSON object")
    fields: dict[str, str] = {}
    for name, value in document.items():
        name = str(name).lower()
        if name not in METADATA_KEYS:
            raise InvalidInput(
                "bad_manifest", f"unknown field {name!r}; known fields are {sorted(METADATA_KEYS)}"
            )
        if name in ("labels", "row-labels") and isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise InvalidInput("bad_manifest", f"{name!r} must list strings")
            # Each is checked alone first: a label holding a comma must not become two.
            fields[name] = ",".join(validate_label(item) for item in value)
        elif isinstance(value, bool) and name == "square":
            fields[name] = "true" if value else "false"
        elif isinstance(value, str):
            fields[name] = value
        else:
            raise InvalidInput("bad_manifest", f"{name!r} must be a string or a list of labels")
    return fields


def sheet_spec_from(
    key: str, etag: str, metadata: dict[str, str], manifest: dict[str, str] | None = None
) -> SheetSpec:
    """Read a training sheet's spec from its key under incoming/train/, its user metadata and
    its labels manifest (`parse_labels_manifest`), when it has one."""
    prefix = PIPELINE.prefixes.incoming_train
    if not key.startswith(prefix):
        raise InvalidInput("bad_key", f"{key!r} is not under {prefix}")
    parts = key[len(prefix) :].split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidInput(
            "bad_key",
            f"expected {prefix}<dataset>/<file> or {prefix}<dataset>/<label>/<file>, got {key!r}",
        )
    dataset = validate_dataset_name(parts[0])
    key_label = validate_label(parts[1]) if len(parts) == 3 else None
    filename = parts[-1]

    metadata = check_metadata_keys(metadata, METADATA_KEYS)
    if manifest:
        twice = sorted(set(metadata) & set(manifest))
        if twice:
            raise InvalidInput(
                "bad_metadata", f"{twice} given in both the metadata and the labels manifest"
            )
        metadata = {**metadata, **manifest}

    page_layout = layout_from(metadata)
    if page_layout == "free" and "grid" in metadata:
        raise InvalidInput("bad_metadata", "layout=free reads symbols: give no grid with it")
    # A free-form page reads symbols: a grid in its file name does not apply.
    grid = None if page_layout == "free" else optional_grid_for(filename, metadata)
    rows, cols = grid if grid is not None else (None, None)

    label_sources = [name for name in ("labels", "row-labels", "label") if name in metadata]
    if len(label_sources) > 1:
        raise InvalidInput("bad_metadata", f"give only one of {label_sources}")
    layout = "cells"
    if "labels" in metadata:
        labels = _split_labels(metadata["labels"])
        if rows is not None and cols is not None and len(labels) != rows * cols:
            raise InvalidInput(
                "label_count_mismatch",
                f"{len(labels)} labels for a {rows}x{cols} grid of {rows * cols} cells",
            )
    elif "row-labels" in metadata:
        labels = _split_labels(metadata["row-labels"])
        layout = "rows"
        if rows is not None and len(labels) != rows:
            raise InvalidInput("label_count_mismatch", f"{len(labels)} row labels for {rows} rows")
    elif "label" in metadata:
        labels = [validate_label(metadata["label"].strip())]
        layout = "all"
    elif key_label is not None:
        labels = [key_label]
        layout = "all"
    else:
        raise InvalidInput(
            "missing_labels",
            "no labels: set metadata row-labels, labels or label, put the sheet under "
            f"{prefix}<dataset>/<label>/, or upload {filename}{LABELS_MANIFEST_SUFFIX} beside it "
            "(the sheet is split when it arrives)",
        )

    spec = SheetSpec(
        dataset=dataset,
        sheet_id=sheet_id_for(key, etag),
        rows=rows,
        cols=cols,
        labels=tuple(labels),
        square=square_from(metadata),
        label_layout=layout,
        layout=page_layout,
    )
    return _expanded(spec)
