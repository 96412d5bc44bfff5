"""The `tessera` client against the local runtime: drop sheets with their labels, train and
wait, predict, list models, roll the champion back, read a run's status, redrive a DLQ; API
errors shown as their code and message."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tessera_dev import cli, client
from tessera_dev.local.runtime import LocalRuntime
from tessera_dev.samples import Glyphs, render_sheet

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
LABELS = ("0", "1", "2")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[client.Target]:
    state = tmp_path_factory.mktemp("home") / "local.json"
    with LocalRuntime(bucket="tessera-client") as runtime:
        client.record_local(runtime.describe(), state)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(client, "LOCAL_STATE", state)
            yield client.local_target(state)
            assert runtime.wait_until_idle(timeout=60)


def _rows_sheet(digits: Glyphs, tmp_path: Path, name: str, per_label: int) -> Path:
    ink = np.concatenate([digits.ink[digits.labels == label][:per_label] for label in LABELS])
    path = tmp_path / name
    path.write_bytes(render_sheet(ink, cols=per_label))
    return path


def _wait_for_rows(target: client.Target, prefix: str, count: int) -> None:
    """Until the sheets' shards under `prefix` hold `count` rows (their `rows` metadata)."""
    s3 = target.client("s3")
    for _ in range(120):
        listed = s3.list_objects_v2(Bucket=target.bucket, Prefix=prefix).get("Contents", [])
        heads = [s3.head_object(Bucket=target.bucket, Key=item["Key"]) for item in listed]
        if sum(int(head["Metadata"].get("rows", "0")) for head in heads) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} rows under {prefix}")


def test_the_client_runs_the_pipeline_end_to_end(
    target: client.Target, digits: Glyphs, tmp_path: Path
) -> None:
    # GIVEN a sheet of three rows, dropped with its row labels
    sheet = _rows_sheet(digits, tmp_path, "rows.png", 30)
    key = client.drop(target, sheet, dataset="digits", row_labels=list(LABELS), grid="3x30")
    assert key == "incoming/train/digits/rows.png"
    _wait_for_rows(target, "datasets/digits/rows/", 90)  # one shard: the sheet's 90 rows
    # WHEN it trains and waits, twice (two versions: the default family, then a dense net)
    seen: list[str] = []
    first = client.train(target, datasets=["digits"], wait=True, progress=seen.append)
    second = client.train(target, datasets=["digits"], family="dense", wait=True)
    # THEN both runs succeeded, each fitted the family asked for, their status reads back, and
    # progress was reported
    assert first["status"] == second["status"] == "succeeded"
    assert (first["family"], second["family"]) == ("mlp", "dense")
    assert client.status(target, first["run_id"])["version"] == first["version"]
    assert any("succeeded" in line for line in seen)
    # AND the API predicts with the champion and lists both versions
    png = tmp_path / "one.png"
    png.write_bytes(render_sheet(digits.ink[digits.labels == "1"][40:41], cols=1))
    assert client.predict(target, png)["label"] in LABELS
    listed = {m["name"]: m for m in client.models(target)["models"]}
    versions = {v["version"] for v in listed["digits"]["versions"]}
    assert {first["version"], second["version"]} <= versions
    # WHEN the champion is rolled back to the first version
    pointer = client.set_champion(target, "digits", first["version"])
    # THEN the pointer says so, and a version that does not exist is refused
    assert pointer["version"] == first["version"]
    with pytest.raises(client.ClientError) as refused:
        client.set_champion(target, "digits", "20990101T000000Z-deadbeef")
    assert refused.value.code == "no_such_version"


def test_labels_metadata_cannot_carry_go_in_a_manifest(
    target: client.Target, digits: Glyphs, tmp_path: Path
) -> None:
    sheet = _rows_sheet(digits, tmp_path, "greek.png", 5)
    labels = ["α", "β", "γ"]  # noqa: RUF001
    key = client.drop(target, sheet, dataset="greek", row_labels=labels, grid="3x5")
    s3 = target.client("s3")
    manifest = json.loads(
        s3.get_object(Bucket=target.bucket, Key=key + ".labels.json")["Body"].read()
    )
    assert manifest == {"grid": "3x5", "row-labels": labels}
    _wait_for_rows(target, "datasets/greek/rows/", 15)


def test_a_dead_letter_queue_is_redriven(target: client.Target) -> None:
    # GIVEN a message parked in the vectorize DLQ (an S3 test event: harmless when handled)
    sqs = target.client("sqs")
    urls = target.queues["vectorize"]
    sqs.send_message(QueueUrl=urls["dlq"], MessageBody=json.dumps({"Event": "s3:TestEvent"}))
    # WHEN it is redriven
    moved = client.redrive(target, function="vectorize")
    # THEN it left the DLQ for its queue
    assert moved == {"vectorize": 1}
    attributes = sqs.get_queue_attributes(
        QueueUrl=urls["dlq"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"


def test_cli_errors_are_a_message_not_a_trace(
    target: client.Target, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG not really")
    # An API refusal: its code and message, exit 1
    assert cli.main(["predict", str(png)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("tessera: not_an_image: ") and "Traceback" not in error
    # A local mistake, the same way
    assert cli.main(["drop", str(tmp_path / "missing.png"), "--label", "7"]) == 1
    assert "no_such_file" in capsys.readouterr().err
    assert cli.main(["status", "no-such-run"]) == 1
    assert "no_such_run" in capsys.readouterr().err
