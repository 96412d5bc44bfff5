"""The local runtime end to end: the AWS API in, tiles and rows appear, training runs as a
process, predictions come back over HTTP."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera.storage.s3 import S3ObjectStore
from tessera_dev.local.runtime import LocalRuntime
from tessera_dev.samples import Glyphs, render_sheet
from tests.conftest import digits_sheet, rows_under, tiles_under
from tests.sheets.free_pages import font_digits, free_page

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
LABELS = ("0", "1", "2")
# Per label: 80 cells on a label-folder sheet, 10 on the mixed sheet, the rest held back.
# Fewer training rows make the test about the model's luck rather than the pipeline.
PER_SHEET = 80
MIXED = slice(80, 90)
HELD_BACK = slice(100, 110)


def http(
    url: str, body: Any = None, *, raw: bytes | None = None, content_type: str = "application/json"
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def count(runtime: LocalRuntime, prefix: str) -> int:
    response = runtime.client("s3").list_objects_v2(Bucket=runtime.bucket, Prefix=prefix)
    return int(response.get("KeyCount", 0))


def store_of(runtime: LocalRuntime) -> S3ObjectStore:
    return S3ObjectStore(bucket=runtime.bucket, client=runtime.client("s3"))


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    with LocalRuntime(bucket="tessera-e2e") as started:
        yield started


@pytest.fixture(scope="module")
def ingested(runtime: LocalRuntime, digits: Glyphs) -> dict[str, int]:
    s3 = runtime.client("s3")
    for label in LABELS:  # the key convention, as a console user would drop them
        key = f"incoming/train/digits/{label}/sheet-8x10.png"
        s3.put_object(Bucket=runtime.bucket, Key=key, Body=digits_sheet(digits, label, PER_SHEET))
    # metadata, as `aws s3 cp --metadata` users would
    mixed = np.concatenate([digits.ink[digits.labels == label][MIXED] for label in LABELS])
    s3.put_object(
        Bucket=runtime.bucket,
        Key="incoming/train/digits/mixed.png",
        Body=render_sheet(mixed, cols=10),
        Metadata={"grid": "3x10", "row-labels": ",".join(LABELS)},
    )
    s3.put_object(
        Bucket=runtime.bucket, Key="incoming/train/digits/0/junk-2x2.png", Body=b"\x89PNG junk"
    )
    assert runtime.wait_until_idle(timeout=120)
    return {
        "tiles": len(tiles_under(store_of(runtime), "tiles/digits/")),
        "rows": len(rows_under(store_of(runtime), "datasets/digits/rows/")),
    }


def test_sheets_dropped_over_the_s3_api_become_tiles_and_rows(ingested: dict[str, int]) -> None:
    assert ingested == {"tiles": 270, "rows": 270}


def test_a_bad_upload_is_quarantined_and_nothing_is_dead_lettered(
    runtime: LocalRuntime, ingested: dict[str, int]
) -> None:
    s3 = runtime.client("s3")
    reason = json.loads(
        s3.get_object(
            Bucket=runtime.bucket, Key="quarantine/incoming/train/digits/0/junk-2x2.png.reason.json"
        )["Body"].read()
    )
    assert reason["code"] in ("corrupt_image", "not_an_image")
    assert all(depth == 0 for depth in runtime.queue_depths().values())


def finished_run(runtime: LocalRuntime, status_key: str) -> dict[str, Any]:
    s3 = runtime.client("s3")
    deadline = time.monotonic() + 300
    result: dict[str, Any] = {"status": "running"}
    while result["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        if count(runtime, status_key):
            body = s3.get_object(Bucket=runtime.bucket, Key=status_key)["Body"]
            result = json.loads(body.read())
    return result


def test_train_then_predict_over_http(
    runtime: LocalRuntime, ingested: dict[str, int], digits: Glyphs
) -> None:
    # WHEN training is started over the API (a local process of the container's entry point)
    status, started = http(runtime.api_url + "/train", {"dataset": "digits"})
    assert (status, started["family"]) == (202, "mlp")
    result = finished_run(runtime, started["status_key"])
    assert result["status"] == "succeeded", result
    assert result["promoted"] is True
    # THEN unseen digits are classified over HTTP by the promoted version
    answers = []
    truth = []
    for label in LABELS:
        for ink in digits.ink[digits.labels == label][HELD_BACK]:
            png = render_sheet(ink[np.newaxis], cols=1)
            status, body = http(
                runtime.api_url + "/predict", {"image": base64.b64encode(png).decode()}
            )
            assert status == 200 and body["version"] == result["version"]
            answers.append(body["predictions"][0]["label"])
            truth.append(label)
    assert np.mean(np.asarray(answers) == np.asarray(truth)) >= 0.9
    # AND a raw PNG body works as well as JSON
    png = render_sheet(digits.ink[digits.labels == "1"][110:111], cols=1)
    status, body = http(runtime.api_url + "/predict", raw=png, content_type="image/png")
    assert status == 200 and body["predictions"][0]["label"] in LABELS


def test_a_sheet_under_the_predict_prefix_gets_a_grid_of_predictions(
    runtime: LocalRuntime, ingested: dict[str, int], digits: Glyphs
) -> None:
    if (
        runtime.client("s3").list_objects_v2(
            Bucket=runtime.bucket, Prefix="models/digits/champion.json"
        )["KeyCount"]
        == 0
    ):
        assert runtime.train(["digits"])["status"] == "succeeded"
    s3 = runtime.client("s3")
    ink = np.concatenate([digits.ink[digits.labels == label][120:125] for label in LABELS])
    key = "incoming/predict/digits/page-3x5.png"
    s3.put_object(Bucket=runtime.bucket, Key=key, Body=render_sheet(ink, cols=5))
    deadline = time.monotonic() + 60
    while count(runtime, f"predictions/{key}.json") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    document = json.loads(
        s3.get_object(Bucket=runtime.bucket, Key=f"predictions/{key}.json")["Body"].read()
    )
    assert (document["rows"], document["cols"]) == (3, 5)
    predicted = [cell["label"] for cell in document["cells"]]
    assert np.mean(np.asarray(predicted) == np.repeat(LABELS, 5)) >= 0.8
    assert count(runtime, f"predictions/{key}.csv") == 1


def test_bad_requests_over_http_are_4xx_json(runtime: LocalRuntime) -> None:
    status, body = http(runtime.api_url + "/predict", raw=b"{oops")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = http(runtime.api_url + "/nowhere", {})
    assert status == 404


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_the_real_aws_cli_works_against_the_local_endpoint(
    runtime: LocalRuntime, ingested: dict[str, int], tmp_path: Any, digits: Glyphs
) -> None:
    sheet = tmp_path / "sheet-1x10.png"
    sheet.write_bytes(digits_sheet(digits, "2", 10, offset=130))
    env = {**os.environ, **runtime.env()}
    env.pop("AWS_ENDPOINT_URL")  # the CLI is told the endpoint the way a user would tell it
    before = len(tiles_under(store_of(runtime), "tiles/digits/"))
    subprocess.run(
        [
            "aws",
            "--endpoint-url",
            runtime.aws_endpoint,
            "s3",
            "cp",
            str(sheet),
            f"s3://{runtime.bucket}/incoming/train/digits/2/sheet-1x10.png",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert runtime.wait_until_idle(timeout=60)
    assert len(tiles_under(store_of(runtime), "tiles/digits/")) == before + 10


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"null", 400, "bad_request"),
        (b'"digits"', 400, "bad_request"),
        (b"12", 400, "bad_request"),
        (b"[" * 100_000 + b"]" * 100_000, 413, "body_too_large"),
        (b"[" * 5_000 + b"]" * 5_000, 400, "invalid_json"),
        (b'{"dataset": "../../x"}', 400, "bad_request"),
        (b'{"datasets": "digits"}', 400, "bad_request"),
        (b'{"dataset": "digits", "epochs": 3}', 400, "bad_request"),
        (b'{"dataset": "digits", "family": "resnet"}', 400, "bad_request"),
        (b'{"dataset": "digits", "family": "cnn", "search_workers": 2}', 400, "bad_request"),
        (b'{"dataset": "nothing-here"}', 404, "dataset_not_found"),
    ],
)
def test_a_training_request_is_checked_before_anything_starts(
    runtime: LocalRuntime, raw: bytes, status: int, code: str
) -> None:
    # GIVEN a hostile or mistaken body for POST /train
    # WHEN it is sent
    answered, reply = http(runtime.api_url + "/train", raw=raw)
    # THEN it is refused with the JSON error shape, no Python internals, and no run starts
    assert (answered, reply["error"]["code"]) == (status, code)
    assert "NoneType" not in reply["error"]["message"]
    assert "execution" not in reply


REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "DEPLOY.md")


def documented_drops() -> list[str]:
    """Every `aws ... s3 cp <local file> s3://.../incoming/...` command in README.md and
    DEPLOY.md, continuation lines joined: what a user types to drop a sheet."""
    commands = []
    for document in DOCUMENTED:
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", document.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                source = line.split(" s3 cp ", 1)[1] if " s3 cp " in line else ""
                if (
                    line.startswith("aws ")
                    and "/incoming/" in line
                    and not source.startswith(("s3://", '"s3://'))
                ):
                    commands.append(line)
    return commands


def _sheet(digits: Glyphs, rows: int, cols: int, labels: list[str] | None = None) -> bytes:
    ink = [
        digits.ink[digits.labels == (labels[r] if labels else str((r * cols + c) % 10))][c + 40]
        for r in range(rows)
        for c in range(cols)
    ]
    return render_sheet(np.stack(ink), cols=cols)


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_every_documented_sheet_drop_works_with_the_real_aws_cli(
    runtime: LocalRuntime, ingested: dict[str, int], tmp_path: Path, digits: Glyphs
) -> None:
    # GIVEN the files the documented commands name, and the commands themselves
    commands = documented_drops()
    assert len(commands) >= 6
    files = {
        "sheet-10x10.png": _sheet(digits, 10, 10, ["7"] * 10),
        "page-5x10.png": _sheet(digits, 5, 10),
        "holdout-2x5.png": _sheet(digits, 2, 5),
        "sheet.png": _sheet(digits, 10, 10, [str(d) for d in range(10)]),
        "sevens.png": _sheet(digits, 5, 8, ["7"] * 5),
        "letters.png": _sheet(digits, 2, 5),
        # Plain paper, three hand-placed lines of symbols, no grid.
        "rows.png": free_page(*font_digits(15), [5, 5, 5], seed=4).png(),
        # The manifest DEPLOY.md shows, Greek letters and all.
        "letters.labels.json": json.dumps({"grid": "2x5", "row-labels": ["α", "β"]}).encode(),  # noqa: RUF001
    }
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    env = {
        **os.environ,
        **runtime.env(),
        "BUCKET": runtime.bucket,
        "AWS": runtime.aws_endpoint,
    }
    # WHEN each runs as typed (the README's local endpoint and bucket are this runtime's)
    destinations = []
    for command in commands:
        typed = command.replace("http://127.0.0.1:40123", runtime.aws_endpoint).replace(
            "s3://tessera-local/", f"s3://{runtime.bucket}/"
        )
        done = subprocess.run(
            ["bash", "-c", typed], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        # THEN the CLI accepts it
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        found = re.search(r"s3://[^/]+/(\S+?)\"?(\s|$)", typed.split(" s3 cp ", 1)[1])
        assert found is not None
        destinations.append(found.group(1))
    assert runtime.wait_until_idle(timeout=120)
    # AND every sheet was read as documented: split into a manifest, or predicted
    s3 = runtime.client("s3")
    manifests = {}
    for item in s3.list_objects_v2(Bucket=runtime.bucket, Prefix="datasets/").get("Contents", []):
        if "/sheets/" in item["Key"] and item["Key"].endswith(".json"):
            body = s3.get_object(Bucket=runtime.bucket, Key=item["Key"])["Body"].read()
            manifests[json.loads(body)["source_key"]] = item["Key"]
    for key in destinations:
        if key.endswith(".labels.json"):
            continue
        if key.startswith("incoming/train/"):
            assert key in manifests, f"{key} was not split"
        else:
            # Predicted, or (before any model is trained) refused for want of one, never for
            # how it was dropped.
            result = s3.list_objects_v2(Bucket=runtime.bucket, Prefix=f"predictions/{key}.json")
            if result.get("KeyCount") != 1:
                reason_key = f"quarantine/{key}.reason.json"
                reason = json.loads(
                    s3.get_object(Bucket=runtime.bucket, Key=reason_key)["Body"].read()
                )
                assert reason["code"] == "model_not_found", f"{key}: {reason}"
    # AND the labels from the manifest, which metadata could not carry, reached the rows
    assert len(rows_under(store_of(runtime), "datasets/greek/rows/")) == 10


def test_a_poison_message_ends_in_its_dlq_and_the_pump_goes_on(
    runtime: LocalRuntime, ingested: dict[str, int], digits: Glyphs
) -> None:
    # GIVEN a message that makes the split handler raise every time, then a good sheet
    sqs = runtime.client("sqs")
    (split,) = [queue for queue in runtime.queues if queue.spec.function == "split"]
    poison = "this is not an S3 event notification"
    sqs.send_message(QueueUrl=split.url, MessageBody=poison)
    s3 = runtime.client("s3")
    key = "incoming/train/digits/2/after-poison-1x10.png"
    s3.put_object(Bucket=runtime.bucket, Key=key, Body=digits_sheet(digits, "2", 10, offset=150))

    def dead_lettered() -> list[str]:
        found = sqs.receive_message(QueueUrl=split.dlq_url, VisibilityTimeout=0)
        return [message["Body"] for message in found.get("Messages", [])]

    # WHEN the pump has received the poison max_receive_count times
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not dead_lettered():
        time.sleep(1)
    # THEN the poison waits in the DLQ, alone, and the good sheet was split meanwhile
    assert dead_lettered() == [poison]
    assert runtime.wait_until_idle(timeout=60)
    manifests = s3.list_objects_v2(Bucket=runtime.bucket, Prefix="datasets/digits/sheets/")
    sources = {
        json.loads(s3.get_object(Bucket=runtime.bucket, Key=item["Key"])["Body"].read())[
            "source_key"
        ]
        for item in manifests.get("Contents", [])
        if item["Key"].endswith(".json")  # each manifest has its overlay PNG beside it
    }
    assert key in sources
    assert all(pump.is_alive() for pump in runtime.pumps)
    sqs.purge_queue(QueueUrl=split.dlq_url)


def test_a_flood_of_corrections_over_http_is_all_stored_and_audited(
    runtime: LocalRuntime, ingested: dict[str, int]
) -> None:
    """1,000 corrections from 16 clients at once through the local API, as the console posts
    them: each answered 201 (a 429 is retried, as the page does), each one stored, none lost.
    Each tile is relabelled with its own label, so later trainings see the same data."""
    from concurrent.futures import ThreadPoolExecutor

    from tessera.corrections import current_corrections, tile_history

    store = store_of(runtime)
    labels = {row.source_key: row.label for row in rows_under(store, "datasets/digits/rows/")}
    tiles = sorted(labels)

    def post(n: int) -> int:
        tile = tiles[n % len(tiles)]
        body = {"dataset": "digits", "tile": tile, "label": labels[tile]}
        for attempt in range(5):
            status, _answer = http(f"{runtime.api_url}/corrections", body)
            if status != 429:
                return status
            time.sleep(0.2 * 2**attempt)
        return status

    before = sum(1 for _ in store.list("datasets/digits/corrections/"))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(post, range(1000)))
    print(f"1,000 corrections over HTTP in {time.monotonic() - started:.1f} s")
    assert statuses == [201] * 1000
    stored = sum(1 for _ in store.list("datasets/digits/corrections/"))
    assert stored - before == 1000
    assert sum(len(tile_history(store, "digits", tile)) for tile in tiles) == stored
    layer = current_corrections(store, "digits")
    assert set(layer) == set(tiles) and all(layer[t].label == labels[t] for t in tiles)


def test_a_training_request_picks_the_family_it_fits(
    runtime: LocalRuntime, ingested: dict[str, int]
) -> None:
    # (last in the module: the model it trains may become the champion)
    status, started = http(runtime.api_url + "/train", {"dataset": "digits", "family": "dense"})
    assert (status, started["family"]) == (202, "dense")
    result = finished_run(runtime, started["status_key"])
    assert (result["status"], result["family"]) == ("succeeded", "dense"), result
    metrics = json.loads(
        runtime.client("s3")
        .get_object(Bucket=runtime.bucket, Key=f"models/digits/{result['version']}/metrics.json")[
            "Body"
        ]
        .read()
    )
    assert metrics["family"] == "dense" and metrics["params"]["device"] == "CPU"
