"""A run's evaluation and its human-readable report: how the held-out rows were split, the
model card, metrics, confusion matrix, curves, misclassified examples and the search table, as
PNGs and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display in the container
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from tessera.config import TILE_SIZE
from tessera.registry import REPORT_STYLE
from training.card import WORST_SHEETS, base_name

MISCLASSIFIED_SHOWN = 36


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]
    labels: list[str]
    misclassified: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "per_class": self.per_class,
            "confusion_matrix": {
                "labels": self.labels,
                "rows_true_columns_predicted": self.confusion,
            },
            "misclassified_count": len(self.misclassified),
        }


def evaluate(
    classes: list[str], probabilities: NDArray[np.float32], y: NDArray[np.str_]
) -> Evaluation:
    predicted = np.asarray(classes)[probabilities.argmax(axis=1)]
    # Test labels the model never saw still count (as errors), so they get a row too.
    labels = sorted(set(classes) | set(y.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    per_class = [
        {
            "label": label,
            "precision": round(float(p), 5),
            "recall": round(float(r), 5),
            "f1": round(float(f), 5),
            "support": int(s),
        }
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    ]
    matrix = confusion_matrix(y, predicted, labels=labels)
    return Evaluation(
        accuracy=float((predicted == y).mean()),
        per_class=per_class,
        confusion=matrix.tolist(),
        labels=labels,
        misclassified=np.flatnonzero(predicted != y).tolist(),
    )


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def confusion_png(evaluation: Evaluation) -> bytes:
    size = max(4.0, 0.45 * len(evaluation.labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    matrix = np.asarray(evaluation.confusion)
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(evaluation.labels))
    axes.set_xticks(ticks, evaluation.labels)
    axes.set_yticks(ticks, evaluation.labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        if value:
            colour = "white" if value > threshold else "black"
            axes.text(col, row, str(value), ha="center", va="center", fontsize=7, color=colour)
    axes.set_title(f"confusion matrix (accuracy {evaluation.accuracy:.4f})")
    return _png(figure)


def curves_png(history: dict[str, list[float]], *, best_epoch: int, unit: str) -> bytes:
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 3.8))
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for prefix, name in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric, [])
            if values:
                axes.plot(range(1, len(values) + 1), values, label=name)
        if best_epoch:
            axes.axvline(
                best_epoch, color="grey", linestyle="--", label=f"kept ({unit} {best_epoch})"
            )
        axes.set_xlabel(unit)
        axes.set_ylabel(metric)
        axes.legend()
        axes.grid(alpha=0.3)
    return _png(figure)


def misclassified_png(
    x: NDArray[np.float32],
    y: NDArray[np.str_],
    predicted: NDArray[np.str_],
    indices: list[int],
) -> bytes:
    shown = indices[:MISCLASSIFIED_SHOWN]
    cols = 9
    rows = max(1, -(-len(shown) // cols))
    figure, grid = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.3), squeeze=False)
    for axes in grid.ravel():
        axes.axis("off")
    for axes, index in zip(grid.ravel(), shown, strict=False):
        axes.imshow(x[index].reshape(TILE_SIZE, TILE_SIZE), cmap="gray", vmin=0, vmax=1)
        axes.set_title(f"{y[index]}→{predicted[index]}", fontsize=8, color="crimson")
    if not shown:
        grid[0][0].text(0, 0.5, "no misclassified examples", fontsize=10)
    return _png(figure)


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def model_card_html(card: dict[str, Any]) -> list[str]:
    """The model card's sections (training/card.py builds it; model_card.md holds the same)."""
    data, split, evaluation, lineage = (card[k] for k in ("data", "split", "evaluation", "lineage"))
    scored = ["sheet", "rows", "correct", "accuracy"]
    return [
        "<h2>Model card</h2>",
        "<h3>Data</h3>",
        _table(
            [
                {"field": "sources", "value": ", ".join(data["sources"])},
                *(
                    {"field": name, "value": data[name]}
                    for name in ("rows", "train_rows", "test_rows", "class_count", "sheets")
                ),
                {"field": "rows without a sheet", "value": data["rows_without_sheet"]},
                {"field": "classes", "value": ", ".join(data["classes"])},
            ]
        ),
        "<h3>How it was split</h3>",
        f"<p><b>{html.escape(split['method'])}</b>: {html.escape(split['description'])}</p>",
        _table([{k: v for k, v in split.items() if k not in ("description", "warnings")}]),
        "<h3>Per-class accuracy on the held-out rows</h3>",
        _table(evaluation["per_class"], ["label", "rows", "correct", "accuracy"]),
        "<h3>Per-sheet accuracy on the held-out rows</h3>",
        _table(evaluation["per_sheet"], scored),
        f"<h3>Worst sheets (up to {WORST_SHEETS})</h3>",
        _table(evaluation["worst_sheets"], scored),
        "<h3>Lineage</h3>",
        _table(
            [
                {"field": "code version", "value": lineage["code_version"]},
                {"field": "code version from", "value": lineage["code_version_source"]},
                {"field": "uncommitted changes", "value": lineage["uncommitted_changes"]},
                {"field": "data fingerprint", "value": lineage["data_fingerprint"]},
                {"field": "held-out rows fingerprint", "value": lineage["test_fingerprint"]},
                {"field": "base model", "value": base_name(lineage["base_model"])},
                {"field": "family", "value": lineage["family"]},
            ]
        ),
        "<h3>Known limits</h3>",
        "<ul>" + "".join(f"<li>{html.escape(limit)}</li>" for limit in card["limits"]) + "</ul>",
    ]


def report_html(metrics: dict[str, Any], images: dict[str, bytes]) -> str:
    """One self-contained page (images inlined), readable without the bucket beside it."""
    evaluation = metrics["evaluation_details"]
    labels = evaluation["confusion_matrix"]["labels"]
    matrix = evaluation["confusion_matrix"]["rows_true_columns_predicted"]
    confusion_rows = [
        {"true \\ predicted": label, **{p: count for p, count in zip(labels, row, strict=True)}}
        for label, row in zip(labels, matrix, strict=True)
    ]
    search = metrics.get("search")
    split = metrics.get("split") or {}
    shown = {**metrics, "split": split.get("description")}
    summary = [
        {"field": name, "value": shown.get(name)}
        for name in (
            "model",
            "version",
            "family",
            "test_accuracy",
            "train_rows",
            "test_rows",
            "split",
            "best_epoch",
            "epochs_run",
            "train_seconds",
            "promoted",
            "champion_before",
            "champion_accuracy_on_this_evaluation",
        )
    ]
    parity = metrics["parity"]
    sections = [
        f"<h1>{html.escape(metrics['model'])} {html.escape(metrics['version'])}</h1>",
        *(
            f'<p class="warning"><b>Warning:</b> {html.escape(warning)}</p>'
            for warning in split.get("warnings", [])
        ),
        _table(summary),
        "<h2>Hyper-parameters</h2>",
        _table([{"name": k, "value": v} for k, v in metrics["params"].items()]),
        "<h2>ONNX parity</h2>",
        _table([parity]),
        "<h2>Per-class precision and recall</h2>",
        _table(evaluation["per_class"]),
        "<h2>Confusion matrix</h2>",
        _table(confusion_rows),
        _image(images["confusion.png"], "confusion matrix"),
        "<h2>Curves</h2>",
        _image(images["curves.png"], "loss and accuracy curves"),
        "<h2>Misclassified test examples (true→predicted)</h2>",
        _image(images["misclassified.png"], "misclassified examples"),
    ]
    if metrics.get("model_card"):
        sections += model_card_html(metrics["model_card"])
    if search:
        sections += [
            f"<h2>Search: {html.escape(search['strategy'])}, {search['fits']} fits on "
            f"{search['rows']} rows in {search['seconds']} s</h2>",
            _table(search["table"]),
        ]
    style = REPORT_STYLE
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(metrics['model'])}"
        f" {html.escape(metrics['version'])}</title><style>{style}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>"
    )
