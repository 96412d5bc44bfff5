"""The main job: the whole pipeline once, locally, on sheets made at run time.

Starts the local runtime, drops training sheets into the bucket over the S3 API, waits for
split and vectorize, trains, then predicts a held-back sheet through the HTTP API (one request
per cell) and through the batch-predict prefix, and prints one JSON summary line.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from tessera.config import PIPELINE
from tessera_dev.local.runtime import LocalRuntime
from tessera_dev.samples import Glyphs, mnist, render_sheet, sklearn_digits

COLS = 10
ROWS_PER_SHEET = 5


def progress(message: str) -> None:
    print(f"[tessera demo] {message}", file=sys.stderr, flush=True)


def _keys(runtime: LocalRuntime, prefix: str) -> list[str]:
    paginator = runtime.client("s3").get_paginator("list_objects_v2")
    return [
        item["Key"]
        for page in paginator.paginate(Bucket=runtime.bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]


def _count_tiles(runtime: LocalRuntime, prefix: str) -> int:
    return sum(1 for key in _keys(runtime, prefix) if key.endswith(".png"))


def _count_rows(runtime: LocalRuntime, prefix: str) -> int:
    """Rows, not shards: a sheet's shard says in its metadata how many rows it holds."""
    s3 = runtime.client("s3")
    return sum(
        int(s3.head_object(Bucket=runtime.bucket, Key=key)["Metadata"].get("rows", "1"))
        for key in _keys(runtime, prefix)
    )


def _glyphs(mnist_dir: Path | None, limit: int) -> Glyphs:
    if mnist_dir is None:
        return sklearn_digits()
    glyphs = mnist(mnist_dir, split="train")
    return Glyphs(ink=glyphs.ink[:limit], labels=glyphs.labels[:limit])


def training_sheets(glyphs: Glyphs, dataset: str) -> list[tuple[str, bytes, dict[str, str], int]]:
    """(key, png, metadata, cells) for every training sheet: one label per sheet under the key
    convention, plus one mixed sheet labelled row by row through metadata."""
    sheets: list[tuple[str, bytes, dict[str, str], int]] = []
    labels = sorted(set(glyphs.labels.tolist()))
    mixed_rows = []
    per_sheet = COLS * ROWS_PER_SHEET
    for label in labels:
        ink = glyphs.ink[glyphs.labels == label]
        mixed_rows.append(ink[:COLS])
        ink = ink[COLS:]
        full = len(ink) - len(ink) % COLS
        for number, start in enumerate(range(0, full, per_sheet)):
            chunk = ink[start : min(start + per_sheet, full)]
            rows = len(chunk) // COLS
            name = f"sheet-{number:03d}-{rows}x{COLS}.png"
            key = f"{PIPELINE.prefixes.incoming_train}{dataset}/{label}/{name}"
            sheets.append((key, render_sheet(chunk, cols=COLS), {}, len(chunk)))
    mixed = np.concatenate(mixed_rows)
    sheets.append(
        (
            f"{PIPELINE.prefixes.incoming_train}{dataset}/mixed.png",
            render_sheet(mixed, cols=COLS),
            {"grid": f"{len(labels)}x{COLS}", "row-labels": ",".join(labels)},
            len(mixed),
        )
    )
    return sheets


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def run_demo(
    *, mnist_dir: Path | None = None, limit: int = 6000, dataset: str = PIPELINE.default_dataset
) -> dict[str, Any]:
    glyphs = _glyphs(mnist_dir, limit)
    train_idx, holdout_idx = train_test_split(
        np.arange(len(glyphs.labels)), test_size=0.2, random_state=0, stratify=glyphs.labels
    )
    train = Glyphs(ink=glyphs.ink[train_idx], labels=glyphs.labels[train_idx])
    holdout = Glyphs(ink=glyphs.ink[holdout_idx], labels=glyphs.labels[holdout_idx])

    started = time.perf_counter()
    with LocalRuntime() as runtime:
        progress(f"local runtime up: {json.dumps(runtime.describe())}")
        s3 = runtime.client("s3")
        sheets = training_sheets(train, dataset)
        for key, png, metadata, _ in sheets:
            s3.put_object(
                Bucket=runtime.bucket, Key=key, Body=png, Metadata=metadata, ContentType="image/png"
            )
        expected = sum(cells for *_, cells in sheets)
        progress(
            f"dropped {len(sheets)} sheets ({expected} cells) "
            f"under {PIPELINE.prefixes.incoming_train}"
        )

        tiles_prefix = f"{PIPELINE.prefixes.tiles}{dataset}/"
        rows_prefix = f"{PIPELINE.prefixes.datasets}{dataset}/rows/"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            tiles, rows = _count_tiles(runtime, tiles_prefix), _count_rows(runtime, rows_prefix)
            progress(f"tiles {tiles}/{expected}  dataset rows {rows}/{expected}")
            if rows >= expected or (tiles >= expected and runtime.wait_until_idle(timeout=5)):
                break
            time.sleep(2)
        runtime.wait_until_idle(timeout=60)
        tiles, rows = _count_tiles(runtime, tiles_prefix), _count_rows(runtime, rows_prefix)
        progress(
            f"ingest done: {tiles} tiles, {rows} dataset rows, queues {runtime.queue_depths()}"
        )

        progress("training (python -m training.train, as the container runs it)")
        training = runtime.train([dataset])
        if training.get("status") != "succeeded":
            raise RuntimeError(f"training failed: {training.get('error')}")
        progress(
            f"model {training['version']}: test accuracy {training['test_accuracy']:.4f}, "
            f"promoted={training['promoted']}"
        )

        progress(f"predicting {len(holdout.labels)} held-back cells over HTTP POST /predict")
        predict_url = runtime.api_url + "/predict"

        def ask(index: int) -> str:
            png = render_sheet(holdout.ink[index : index + 1], cols=1)
            reply = _post_json(predict_url, {"image": base64.b64encode(png).decode()})
            return str(reply["predictions"][0]["label"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(ask, range(len(holdout.labels))))
        http_accuracy = float(np.mean(np.asarray(answers) == holdout.labels))

        rows_in_sheet = -(-len(holdout.labels) // COLS)
        batch_key = (
            f"{PIPELINE.prefixes.incoming_predict}{dataset}/holdout-{rows_in_sheet}x{COLS}.png"
        )
        s3.put_object(
            Bucket=runtime.bucket, Key=batch_key, Body=render_sheet(holdout.ink, cols=COLS)
        )
        runtime.wait_until_idle(timeout=120)
        result_key = PIPELINE.prefixes.predictions + batch_key + ".json"
        document = json.loads(s3.get_object(Bucket=runtime.bucket, Key=result_key)["Body"].read())
        batch_labels = [cell["label"] for cell in document["cells"]][: len(holdout.labels)]
        batch_accuracy = float(np.mean(np.asarray(batch_labels) == holdout.labels))
        progress(f"batch prediction written to s3://{runtime.bucket}/{result_key}")

        return {
            "sheets": len(sheets),
            "tiles": tiles,
            "dataset_rows": rows,
            "model_version": training["version"],
            "test_accuracy": round(float(training["test_accuracy"]), 4),
            "holdout_accuracy": round(http_accuracy, 4),
            "batch_holdout_accuracy": round(batch_accuracy, 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
