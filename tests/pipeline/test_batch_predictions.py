"""Batch predictions: a sheet under incoming/predict/ becomes predictions/<key>.json and .csv,
through the same handler and event shape the deployed function gets from SQS."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from PIL import Image

from functions.batch_predict.handler import lambda_handler as batch_handler
from tessera.pipeline.split import split_object
from tessera.pipeline.vectorize import vectorize_object
from tessera.serving.cache import ModelCache
from tessera.sheets.overlay import overlay_key
from tessera.storage.s3 import S3ObjectStore
from tessera_dev.local.faults import Faults, InjectedFault
from tessera_dev.local.pump import lambda_context
from tessera_dev.samples import Glyphs, render_sheet
from tests.conftest import BUCKET, batch_of, rows_under, sqs_event_for, tile_batches_under
from tests.serving.conftest import MODEL, VERSION, Served

CONTEXT = lambda_context("batch_predict")


def test_a_sheet_becomes_a_grid_of_labels_in_json_and_csv(served: Served, digits: Glyphs) -> None:
    # GIVEN a 2x5 sheet of digits with one blank cell, dropped under incoming/predict/digits/
    ink = digits.ink[:10].copy()
    ink[7] = 0.0
    sheet = render_sheet(ink, cols=5)
    key = "incoming/predict/digits/holdout-2x5.png"
    served.store.put(key, sheet, content_type="image/png")

    # WHEN the batch-predict function receives its S3 notification through SQS
    result = batch_handler(batch_of(sqs_event_for(BUCKET, key)), CONTEXT)

    # THEN the grid of labels and confidences lands beside the key under predictions/
    assert result == {"batchItemFailures": []}
    document = json.loads(served.store.get(f"predictions/{key}.json").body)
    assert (document["model"], document["version"]) == (MODEL, VERSION)
    assert (document["rows"], document["cols"], len(document["cells"])) == (2, 5, 10)
    # and each cell is predicted from the very row Split + Vectorize make of it for training
    training_key = "incoming/train/digits/0/holdout-2x5.png"
    served.store.put(training_key, sheet, content_type="image/png")
    assert split_object(served.store, training_key).status == "split"
    model = ModelCache(registry=served.registry, ttl_seconds=30).get()
    expected: list[str | None] = [None] * 10
    for batch in tile_batches_under(served.store, "tiles/digits/"):
        assert vectorize_object(served.store, batch).status == "vectorized"
    for row in rows_under(served.store, "datasets/digits/rows/"):
        r, c = (int(part[1:]) for part in row.source_key.rsplit("/", 1)[1][:-4].split("-"))
        x = row.pixels.astype(np.float32)[np.newaxis] / np.float32(255.0)
        expected[r * 5 + c] = model.predict(x)[0]["label"]
    labels = [cell["label"] for cell in document["cells"]]
    assert labels == expected
    assert labels[7] is None and document["cells"][7]["empty"] is True
    assert document["grid"][1][2] is None and document["grid"][0] == labels[:5]
    assert 0 < document["confidence"][0][0] <= 1
    rows = list(
        csv.DictReader(io.StringIO(served.store.get(f"predictions/{key}.csv").body.decode()))
    )
    assert [row["label"] for row in rows] == [label or "" for label in labels]
    assert rows[3]["row"] == "0" and rows[3]["col"] == "3"


def test_a_sheet_for_an_unknown_model_is_quarantined_with_its_reason(
    served: Served, digits: Glyphs
) -> None:
    key = "incoming/predict/letters/sheet-1x1.png"
    served.store.put(key, render_sheet(digits.ink[:1], cols=1))
    assert batch_handler(batch_of(sqs_event_for(BUCKET, key)), CONTEXT) == {"batchItemFailures": []}
    reason = json.loads(served.store.get(f"quarantine/{key}.reason.json").body)
    assert reason["code"] == "model_not_found" and "letters" in reason["message"]
    assert served.store.head(f"predictions/{key}.json") is None


def test_an_upside_down_sheet_is_predicted_as_given_and_said_to_be_upside_down(
    served: Served, digits: Glyphs
) -> None:
    # GIVEN the same 3x10 sheet of digits dropped once as written and once turned over
    sheet = render_sheet(digits.ink[:30], cols=10)
    turned = Image.open(io.BytesIO(sheet)).rotate(180)
    buffer = io.BytesIO()
    turned.save(buffer, format="PNG")
    served.store.put("incoming/predict/digits/upright-3x10.png", sheet)
    served.store.put("incoming/predict/digits/turned-3x10.png", buffer.getvalue())

    # WHEN both are predicted
    for name in ("upright", "turned"):
        event = batch_of(sqs_event_for(BUCKET, f"incoming/predict/digits/{name}-3x10.png"))
        assert batch_handler(event, CONTEXT) == {"batchItemFailures": []}

    # THEN only the turned one carries an upside_down warning, and it is still predicted
    upright = json.loads(
        served.store.get("predictions/incoming/predict/digits/upright-3x10.png.json").body
    )
    flipped = json.loads(
        served.store.get("predictions/incoming/predict/digits/turned-3x10.png.json").body
    )
    assert "warnings" not in upright
    assert [w["code"] for w in flipped["warnings"]] == ["upside_down"]
    assert len(flipped["cells"]) == 30 and all(c["label"] is not None for c in flipped["cells"])


@pytest.mark.parametrize("crash", ["after the work", "between the JSON and the CSV"])
def test_a_crash_after_writing_predictions_reruns_to_the_same_files_once(
    served: Served, digits: Glyphs, crash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a sheet to predict, and a function that crashes once its message is received
    key = "incoming/predict/digits/crashing-2x5.png"
    served.store.put(key, render_sheet(digits.ink[:10], cols=5), content_type="image/png")
    event = batch_of(sqs_event_for(BUCKET, key))
    if crash == "after the work":
        crashing = Faults(crash_after=1.0).wrap(
            "batch_predict", batch_handler, sqs=None, queue_url=""
        )
        with pytest.raises(InjectedFault):
            crashing(event, CONTEXT)
    else:
        real_put = S3ObjectStore.put

        def put(self: S3ObjectStore, target: str, body: bytes, **kwargs: Any) -> str:
            if target.endswith(".csv"):
                raise ConnectionError("the function died here")
            return real_put(self, target, body, **kwargs)

        monkeypatch.setattr(S3ObjectStore, "put", put)
        with pytest.raises(BatchProcessingError):  # the invocation fails: the message comes back
            batch_handler(event, CONTEXT)
        monkeypatch.undo()
    first = outputs(served, key)

    # WHEN the message comes back (SQS redelivers what was not deleted) and is handled again
    assert batch_handler(event, CONTEXT) == {"batchItemFailures": []}
    again = outputs(served, key)

    # THEN the files are the same, at the same keys, one copy each
    assert set(again) == {f"predictions/{key}.json", f"predictions/{key}.csv", overlay(key)}
    for name, body in first.items():
        assert again[name] == body, name


def overlay(key: str) -> str:
    return overlay_key(f"predictions/{key}.json")


def outputs(served: Served, key: str) -> dict[str, bytes]:
    return {
        item.key: served.store.get(item.key).body
        for item in served.store.list(f"predictions/{key.rsplit('.', 1)[0]}")
    }
