"""A version's model card: what it was trained on, how it was tested, how well it reads each
class and each held-out sheet, where it came from, and what the test cannot tell.

The run's part (data, split, code and data lineage) is described once per run; each candidate
adds its own evaluation, family and parameters. The card is stored as markdown beside the
report, and as JSON under `model_card` in metrics.json.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tessera.dataset import Dataset
from training.data import TrainingData
from training.holdout import BY_ROW, BY_SHEET, MNIST_TEST, Holdout, sheet_ids

# Where the container's code version comes from: it has no .git (the image copies the sources).
CODE_VERSION_ENV = "TESSERA_CODE_VERSION"
WORST_SHEETS = 5
# Held-out classes with fewer rows than this get an accuracy that is a rough estimate only.
FEW_ROWS = 10
_REPO = Path(__file__).resolve().parents[1]
_SHA = re.compile(r"^[0-9a-f]{40}$")


def _git(*args: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout if completed.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """`git rev-parse HEAD` (and whether the training code differs from it), else the
    TESSERA_CODE_VERSION the image was given, else "unknown"."""
    head = (_git("rev-parse", "HEAD") or "").strip()
    if _SHA.fullmatch(head):
        changes = _git("status", "--porcelain", "--untracked-files=no", "--", "training", "shared")
        return {"code_version": head, "source": "git", "uncommitted_changes": bool(changes)}
    value = os.environ.get(CODE_VERSION_ENV, "").strip()
    if value:
        return {"code_version": value, "source": CODE_VERSION_ENV, "uncommitted_changes": None}
    return {"code_version": "unknown", "source": "unknown", "uncommitted_changes": None}


def run_context(data: TrainingData, holdout: Holdout) -> dict[str, Any]:
    """The card's parts every candidate of a run shares: data, split, run lineage."""
    parts = [holdout.train, holdout.test]
    sheets = {sheet for part in parts for sheet in sheet_ids(part.sources)}
    rows = sum(len(part) for part in parts)
    classes = sorted({str(label) for part in parts for label in part.y.tolist()})
    code = code_version()
    return {
        "data": {
            "sources": list(data.sources),
            "datasets": [s.split(":", 1)[1] for s in data.sources if s.startswith("dataset:")],
            "rows": rows,
            "train_rows": len(holdout.train),
            "test_rows": len(holdout.test),
            "classes": classes,
            "class_count": len(classes),
            "sheets": len(sheets - {""}),
            "rows_without_sheet": sum(
                1 for part in parts for sheet in sheet_ids(part.sources) if not sheet
            ),
        },
        "split": holdout.as_dict(),
        "lineage": {
            "code_version": code["code_version"],
            "code_version_source": code["source"],
            "uncommitted_changes": code["uncommitted_changes"],
            "data_fingerprint": data.train.fingerprint,
            "mnist_test_fingerprint": data.test.fingerprint if data.test is not None else None,
        },
    }


def per_class(y: NDArray[np.str_], predicted: NDArray[np.str_]) -> list[dict[str, Any]]:
    return [
        _score({"label": label}, predicted[y == label] == label)
        for label in sorted(set(y.tolist()))
    ]


def per_sheet(test: Dataset, predicted: NDArray[np.str_]) -> list[dict[str, Any]]:
    """Accuracy on each held-out sheet (rows without a sheet are left out)."""
    sheets = np.array(sheet_ids(test.sources))
    correct = predicted == test.y
    return [
        _score({"sheet": sheet, "dataset": sheet.split("/", 1)[0]}, correct[sheets == sheet])
        for sheet in sorted(set(sheets.tolist()) - {""})
    ]


def _score(row: dict[str, Any], correct: NDArray[np.bool_]) -> dict[str, Any]:
    hits = int(correct.sum())
    return {**row, "rows": len(correct), "correct": hits, "accuracy": round(hits / len(correct), 5)}


def worst(sheets: list[dict[str, Any]], count: int = WORST_SHEETS) -> list[dict[str, Any]]:
    """The least accurate sheets, most rows first among equals."""
    return sorted(sheets, key=lambda row: (row["accuracy"], -row["rows"], row["sheet"]))[:count]


def model_card(
    context: dict[str, Any], metrics: dict[str, Any], test: Dataset, predicted: NDArray[np.str_]
) -> dict[str, Any]:
    """The whole card of one candidate: the run's context plus its own evaluation."""
    params = metrics["params"]
    sheets = per_sheet(test, predicted)
    evaluation = {
        "accuracy": metrics["test_accuracy"],
        "test_rows": len(test),
        "per_class": per_class(test.y, predicted),
        "per_sheet": sheets,
        "worst_sheets": worst(sheets),
    }
    base = (
        {"model": params["base_model"], "version": params.get("base_version")}
        if "base_model" in params
        else None
    )
    card = {
        "model": metrics["model"],
        "version": metrics["version"],
        "run_id": metrics["run_id"],
        "data": context["data"],
        "split": context["split"],
        "evaluation": evaluation,
        "lineage": {
            **context["lineage"],
            "test_fingerprint": metrics["evaluation"].get("test_fingerprint"),
            "base_model": base,
            "family": metrics["family"],
            "params": params,
        },
    }
    card["limits"] = limits(card, classes=metrics["classes"])
    return card


def limits(card: dict[str, Any], *, classes: list[str]) -> list[str]:
    """What the held-out accuracy cannot tell, in facts taken from the data."""
    data, split, evaluation = card["data"], card["split"], card["evaluation"]
    found: list[str] = []
    sheets = evaluation["per_sheet"]
    datasets = sorted({row["dataset"] for row in sheets})
    if split["method"] == BY_SHEET:
        found.append(
            f"Tested on {len(sheets)} held-out sheet(s) from {len(datasets)} dataset(s) "
            f"({evaluation['test_rows']} rows), none of them seen in training; digits written "
            "by other hands may read worse."
        )
    elif split["method"] == MNIST_TEST:
        found.append(
            f"Tested on MNIST's test split ({evaluation['test_rows']} rows, writers not in "
            "training); handwriting unlike MNIST's, such as tiles cut from scanned sheets, "
            "may read worse."
        )
    elif split["method"] == BY_ROW and data["sheets"]:
        found.append(
            f"Split by row: the {split['sheets_in_both']} held-out sheet(s) were also in "
            "training, so the held-out rows share their writers with the training rows and the "
            "accuracy is optimistic for other hands."
        )
    else:
        found.append(
            "Split by row: the rows carry no sheet or writer, so the held-out rows may share "
            "writers with the training rows."
        )
    found += [f"Warning: {warning}" for warning in split["warnings"]]
    if data["rows_without_sheet"] and data["sheets"]:
        found.append(
            f"{data['rows_without_sheet']} rows without a sheet (CSV, MNIST) were held out by row."
        )
    few = [row["label"] for row in evaluation["per_class"] if row["rows"] < FEW_ROWS]
    if few:
        found.append(
            f"Classes with fewer than {FEW_ROWS} held-out rows (their accuracy is a rough "
            f"estimate): {', '.join(few)}."
        )
    tested = {row["label"] for row in evaluation["per_class"]}
    untested = [label for label in classes if label not in tested]
    if untested:
        found.append(f"Classes never held out, so untested: {', '.join(untested)}.")
    if evaluation["worst_sheets"] and len(sheets) > 1:
        low = evaluation["worst_sheets"][0]
        found.append(
            f"Accuracy varies by sheet: from {low['accuracy']:.1%} ({low['sheet']}) to "
            f"{max(row['accuracy'] for row in sheets):.1%}."
        )
    found.append(f"Knows only the classes it was trained on: {', '.join(classes)}.")
    return found


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    if not rows:
        return ["(none)", ""]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_md_cell(row.get(column)) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _md_cell(value: Any) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def base_name(base: dict[str, Any] | None) -> str:
    return f"{base['model']} {base['version']}" if base else "none (trained from scratch)"


def card_markdown(card: dict[str, Any]) -> str:
    data, split, evaluation, lineage = (
        card["data"],
        card["split"],
        card["evaluation"],
        card["lineage"],
    )
    base = lineage["base_model"]
    lines = [
        f"# Model card: {card['model']} {card['version']}",
        "",
        "## Data",
        "",
        f"- Sources: {', '.join(data['sources'])}",
        f"- Rows: {data['rows']} ({data['train_rows']} training, {data['test_rows']} held out)",
        f"- Classes ({data['class_count']}): {', '.join(data['classes'])}",
        f"- Sheets: {data['sheets']}; rows without a sheet: {data['rows_without_sheet']}",
        "",
        "## How it was split",
        "",
        f"- Method: {split['method']} — {split['description']}",
        f"- Sheets: {split['train_sheets']} in training, {split['test_sheets']} held out, "
        f"{split['sheets_in_both']} in both; held-out fraction {split['test_fraction']}",
        *(f"- **Warning:** {warning}" for warning in split["warnings"]),
        "",
        f"## Held-out accuracy: {evaluation['accuracy']:.4f} on {evaluation['test_rows']} rows",
        "",
        "### Per class",
        "",
        *_md_table(evaluation["per_class"], ["label", "rows", "correct", "accuracy"]),
        "### Per sheet",
        "",
        *_md_table(evaluation["per_sheet"], ["sheet", "rows", "correct", "accuracy"]),
        f"### Worst sheets (up to {WORST_SHEETS})",
        "",
        *_md_table(evaluation["worst_sheets"], ["sheet", "rows", "correct", "accuracy"]),
        "## Lineage",
        "",
        f"- Code version: {lineage['code_version']} (from {lineage['code_version_source']}"
        + (", with uncommitted changes" if lineage["uncommitted_changes"] else "")
        + ")",
        f"- Data fingerprint: {lineage['data_fingerprint']}",
        f"- Held-out rows fingerprint: {lineage['test_fingerprint']}",
        f"- Base model: {base_name(base)}",
        f"- Family: {lineage['family']}",
        f"- Run: {card['run_id']}",
        "",
        "### Parameters",
        "",
        *_md_table(
            [{"name": k, "value": v} for k, v in lineage["params"].items()], ["name", "value"]
        ),
        "## Known limits",
        "",
        *(f"- {limit}" for limit in card["limits"]),
        "",
    ]
    return "\n".join(lines)
