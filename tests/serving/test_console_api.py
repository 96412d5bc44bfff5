"""The console's routes through the real handler, in API Gateway's event shape, on moto: sheets,
tiles and overlays, the review queue, corrections (stored as a layer, audited, undoable), the
champion rolled back; every client mistake a 4xx in the JSON error shape."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from functions.console.handler import lambda_handler
from tessera.pipeline.split import split_object
from tessera.pipeline.vectorize import vectorize_object
from tessera.registry import ModelRegistry
from tessera.serving import console
from tessera.storage import ObjectInfo, StoredObject
from tessera.storage.memory import InMemoryObjectStore
from tessera.storage.s3 import S3ObjectStore
from tessera_dev.local.api import proxy_event
from tessera_dev.local.pump import lambda_context
from tessera_dev.samples import Glyphs
from tests.conftest import digits_sheet, tile_batches_under, tiles_under

V1, V2, BROKEN = (
    "20260101T000000Z-aaaaaa01",
    "20260102T000000Z-bbbbbb02",
    "20260103T000000Z-cccccc03",
)


def call(
    method: str, path: str, body: Any = None, *, claims: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, Any]]:
    event = proxy_event(
        method=method,
        target=path,
        headers={"content-type": "application/json"} if body is not None else {},
        body=b""
        if body is None
        else (body if isinstance(body, bytes) else json.dumps(body).encode()),
        source_ip="127.0.0.1",
    )
    if claims:
        event["requestContext"]["authorizer"] = {"claims": claims}
    response = lambda_handler(event, lambda_context("console"))
    headers = dict(response.get("headers") or {})
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[name] = ",".join(values)
    response["headers"] = headers
    raw = response["body"]
    if response.get("isBase64Encoded"):
        return response["statusCode"], base64.b64decode(raw), response
    return response["statusCode"], json.loads(raw) if raw.startswith(("{", "[")) else raw, response


@pytest.fixture
def sheet(store: S3ObjectStore, digits: Glyphs) -> dict[str, Any]:
    """One 2x5 sheet of 3s, split and vectorized as the pipeline does it."""
    store.put("incoming/train/digits/3/sheet-2x5.png", digits_sheet(digits, "3", 10, cols=5))
    assert split_object(store, "incoming/train/digits/3/sheet-2x5.png").status == "split"
    (batch,) = tile_batches_under(store, "tiles/digits/")
    assert vectorize_object(store, batch).status == "vectorized"
    tiles = tiles_under(store, "tiles/digits/")
    return {"id": tiles[0].split("/")[2], "tiles": tiles}


def with_models(store: S3ObjectStore, tiles: list[str]) -> ModelRegistry:
    registry = ModelRegistry(store, "digits")
    for version, passed in ((V1, True), (V2, True), (BROKEN, False)):
        registry.put_artifact(version, "model.onnx", b"onnx", "application/octet-stream")
        metrics = {"test_accuracy": 0.9, "family": "mlp", "parity": {"passed": passed}}
        registry.put_artifact(
            version, "metrics.json", json.dumps(metrics).encode(), "application/json"
        )
    registry.promote(V2, accuracy=0.9, evaluation={})
    review = {
        "method": "confident learning",
        "label_issues": [
            {"tile": t, "label": "3", "suggested": "8", "score": 0.9} for t in tiles[:3]
        ],
        "least_confident": [{"tile": tiles[3], "label": "3", "suggested": "3", "score": 0.4}],
    }
    registry.put_artifact(V2, "review.json", json.dumps(review).encode(), "application/json")
    return registry


def test_the_page_and_its_files_are_served_with_a_strict_content_policy() -> None:
    status, html, response = call("GET", "/")
    assert status == 200 and "<canvas" in html
    assert "script-src 'self'" in response["headers"]["Content-Security-Policy"]
    assert call("GET", "/console/app.js")[0] == 200
    assert call("GET", "/console/..%2Fhandler.py")[0] == 404
    assert call("GET", "/console/handler.py")[0] == 404


def test_sheets_list_their_status_and_open_to_their_tiles_and_overlay(
    store: S3ObjectStore, sheet: dict[str, Any]
) -> None:
    status, listed, _ = call("GET", "/sheets?dataset=digits")
    assert status == 200
    (only,) = listed["sheets"]
    assert (only["sheet_id"], only["status"], only["cells"], only["inked"]) == (
        sheet["id"],
        "split",
        10,
        10,
    )
    status, png, response = call("GET", f"/view?key={only['overlay']}")
    assert (
        status == 200
        and png[:4] == b"\x89PNG"
        and response["headers"]["Content-Type"] == "image/png"
    )
    status, opened, _ = call("GET", f"/sheets/{sheet['id']}?dataset=digits")
    assert status == 200 and [t["label"] for t in opened["tiles"]] == ["3"] * 10
    assert call("GET", f"/view?key={sheet['tiles'][0]}")[0] == 200


def blank_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (200, 100), 255).save(out, format="PNG")
    return out.getvalue()


def test_sheets_come_in_pages_that_together_list_every_sheet_once(
    store: S3ObjectStore, digits: Glyphs
) -> None:
    # GIVEN five split sheets and two quarantined uploads in digits, and one sheet in digits2
    for n in range(5):
        store.put(f"incoming/train/digits/3/s{n}-1x2.png", digits_sheet(digits, "3", 2, cols=2))
    for n in range(2):
        store.put(f"incoming/train/digits/3/blank{n}-1x2.png", blank_png())
    store.put("incoming/train/digits2/3/other-1x2.png", digits_sheet(digits, "3", 2, cols=2))
    keys = [i.key for i in store.list("incoming/train/")]
    outcomes = {key: split_object(store, key).status for key in keys}
    assert sorted(outcomes.values()) == ["quarantined"] * 2 + ["split"] * 6
    # WHEN the console walks the list two at a time
    pages, after = [], ""
    while True:
        status, page, _ = call("GET", f"/sheets?dataset=digits&limit=2{after}")
        assert status == 200, page
        pages.append(page["sheets"])
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    # THEN four pages hold each sheet of digits once: the split ones by id, then the quarantined
    listed = [sheet for page in pages for sheet in page]
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert [s["status"] for s in listed] == ["split"] * 5 + ["quarantined"] * 2
    ids = [s["sheet_id"] for s in listed[:5]]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert sorted(s["source_key"] for s in listed) == sorted(
        k for k in keys if k.startswith("incoming/train/digits/")
    )
    assert {s["reason"]["code"] for s in listed[5:]} == {"blank_page"}


class CountingStore(InMemoryObjectStore):
    """Counts the documents read and the keys listed."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.listed = 0

    def get(self, key: str) -> StoredObject:
        self.gets += 1
        return super().get(key)

    def list(self, prefix: str, *, start_after: str = "") -> Iterator[ObjectInfo]:
        for item in super().list(prefix, start_after=start_after):
            self.listed += 1
            yield item


def test_a_page_of_sheets_reads_its_own_sheets_whatever_the_dataset_holds() -> None:
    store = CountingStore()
    for n in range(500):
        store.put_json(f"datasets/digits/sheets/s{n:04}-abc.json", {"source_key": f"k{n}"})
    for n in range(5):
        store.put_json(f"quarantine/incoming/train/digits/q{n}.png.reason.json", {"code": "x"})
    store.gets = store.listed = 0
    page = console.list_sheets(store, "digits", limit=10)
    assert [s["source_key"] for s in page["sheets"]] == [f"k{n}" for n in range(10)]
    # ten manifests read, eleven keys listed (the eleventh says there is more), no superseded
    assert (store.gets, store.listed) == (10, 11)
    store.gets = store.listed = 0
    for _ in range(49):  # walk to the end
        page = console.list_sheets(store, "digits", limit=10, after=page["next"])
    assert page["sheets"][-1]["source_key"] == "k499" and page["next"] is not None
    last = console.list_sheets(store, "digits", limit=10, after=page["next"])
    assert [s["status"] for s in last["sheets"]] == ["quarantined"] * 5 and last["next"] is None
    assert store.gets == 49 * 10 + 5


@pytest.mark.parametrize(
    "query",
    [
        "after=garbage!",
        "after=" + base64.urlsafe_b64encode(b"[]").decode(),
        "after=" + base64.urlsafe_b64encode(b'{"of": "models", "after": ""}').decode(),
        "after=" + base64.urlsafe_b64encode(b'{"of": "split", "after": 1}').decode(),
        "after=" + "A" * 5000,
        "limit=0",
        "limit=1001",
        "limit=%C2%B2",
    ],
)
def test_a_cursor_or_limit_that_no_page_gave_is_refused(sheet: dict[str, Any], query: str) -> None:
    got, body, _ = call("GET", f"/sheets?dataset=digits&{query}")
    assert got == 400 and body["error"]["code"] in {"bad_cursor", "bad_limit"}, body


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/sheets?dataset=nothing", 404, "no_such_dataset"),
        ("/sheets?dataset=../x", 400, "bad_dataset_name"),
        ("/sheets", 400, "bad_request"),
        ("/sheets/nope?dataset=digits", 404, "no_such_sheet"),
        ("/view?key=incoming/train/digits/3/sheet-2x5.png", 400, "bad_key"),
        ("/view?key=runs/x/status.json", 400, "bad_key"),
        ("/view?key=tiles/digits/../../incoming/a.png", 400, "bad_key"),
        ("/view?key=tiles/digits/s/r000-c000.png", 404, "not_found"),
        ("/review?dataset=digits&limit=0", 400, "bad_limit"),
        ("/review?dataset=digits&limit=²", 400, "bad_limit"),
        ("/review?dataset=digits", 404, "model_not_found"),
        ("/models/nothing", 404, "model_not_found"),
        ("/runs/..", 400, "bad_run_id"),
        ("/runs/local-0", 404, "no_such_run"),
    ],
)
def test_client_mistakes_are_4xx_with_the_json_error_shape(
    sheet: dict[str, Any], path: str, status: int, code: str
) -> None:
    got, body, _ = call("GET", path)
    assert (got, body["error"]["code"]) == (status, code)


def test_review_ranks_suspected_errors_and_a_correction_leaves_the_queue_audited(
    store: S3ObjectStore, sheet: dict[str, Any]
) -> None:
    with_models(store, sheet["tiles"])
    # GIVEN the champion's review: three suspected label errors, one unsure tile
    status, queue, _ = call("GET", "/review?dataset=digits&limit=10")
    assert status == 200 and queue["version"] == V2 and queue["total"] == 4
    assert [t["kind"] for t in queue["tiles"]] == ["label_issues"] * 3 + ["least_confident"]
    first = queue["tiles"][0]
    assert first["sheet_id"] == sheet["id"] and first["suggested"] == "8"
    # WHEN someone accepts the suggestion for the first, signed in
    status, stored, _ = call(
        "POST",
        "/corrections",
        {"dataset": "digits", "tile": first["tile"], "label": "8"},
        claims={"email": "ana@example.com"},
    )
    # THEN it is stored with who did it, and leaves the queue
    assert status == 201 and stored["correction"]["by"] == "ana@example.com"
    _, queue, _ = call("GET", "/review?dataset=digits&limit=10")
    assert queue["corrected"] == 1 and first["tile"] not in [t["tile"] for t in queue["tiles"]]
    # AND the sheet shows it over the stored label, which is unchanged
    _, opened, _ = call("GET", f"/sheets/{sheet['id']}?dataset=digits")
    corrected = next(t for t in opened["tiles"] if t["tile"] == first["tile"])
    assert corrected["label"] == "3" and corrected["correction"]["label"] == "8"
    # AND an undo brings the tile back, with both in its history
    call("POST", "/corrections", {"dataset": "digits", "tile": first["tile"], "undo": True})
    _, history, _ = call("GET", f"/corrections?dataset=digits&tile={first['tile']}")
    assert [h["action"] for h in history["history"]] == ["label", "undo"]
    assert call("GET", "/review?dataset=digits")[1]["corrected"] == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"dataset": "digits", "tile": "TILE", "label": "a b"}, 400, "bad_label"),
        ({"dataset": "digits", "tile": "TILE", "label": 7}, 400, "bad_label"),
        ({"dataset": "digits", "tile": "TILE"}, 400, "bad_correction"),
        ({"dataset": "digits", "tile": "TILE", "exclude": "yes"}, 400, "bad_request"),
        ({"dataset": "digits", "tile": "TILE", "label": "1", "why": 1}, 400, "bad_request"),
        (
            {"dataset": "nothing", "tile": "tiles/nothing/s/r000-c000.png", "label": "1"},
            404,
            "unknown_tile",
        ),
        (
            {"dataset": "digits", "tile": "tiles/digits/SHEET/r009-c009.png", "label": "1"},
            404,
            "unknown_tile",
        ),
        ([1, 2], 400, "bad_request"),
        (b"{" * 100_000, 400, "bad_request"),
    ],
)
def test_a_correction_that_cannot_apply_is_refused(
    store: S3ObjectStore, sheet: dict[str, Any], body: Any, status: int, code: str
) -> None:
    if isinstance(body, dict):
        body = {
            k: v.replace("TILE", sheet["tiles"][0]).replace("SHEET", sheet["id"])
            if isinstance(v, str)
            else v
            for k, v in body.items()
        }
    got, answer, _ = call("POST", "/corrections", body)
    assert (got, answer["error"]["code"]) == (status, code)
    assert list(store.list("datasets/digits/corrections/")) == []


def test_the_champion_rolls_back_and_a_version_that_failed_parity_is_refused(
    store: S3ObjectStore, sheet: dict[str, Any]
) -> None:
    registry = with_models(store, sheet["tiles"])
    status, model, _ = call("GET", "/models/digits")
    assert status == 200 and [v["champion"] for v in model["versions"]] == [False, True, False]
    assert model["versions"][0]["plots"]["confusion"].endswith(f"{V1}/confusion.png")
    status, pointer, _ = call("POST", "/models/digits/champion", {"version": V1})
    assert status == 200 and pointer["version"] == V1 == champion_of(registry)
    assert [h["version"] for h in call("GET", "/models/digits")[1]["history"]] == [V2, V1]
    assert (
        call("POST", "/models/digits/champion", {"version": BROKEN})[1]["error"]["code"]
        == "parity_failed"
    )
    assert call("POST", "/models/digits/champion", {"version": "x"})[0] == 404
    assert call("POST", "/models/digits/champion", {"version": V2, "x": 1})[0] == 400
    assert champion_of(registry) == V1


def champion_of(registry: ModelRegistry) -> str:
    pointer = registry.champion()
    assert pointer is not None
    return str(pointer["version"])


@pytest.fixture
def workflow(store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The training workflow, on moto's Step Functions, as the stack names it to the function."""
    import boto3

    from functions.console import handler

    client = boto3.client("stepfunctions")
    arn = client.create_state_machine(
        name="tessera-training",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn="arn:aws:iam::123456789012:role/tessera-training",
    )["stateMachineArn"]
    monkeypatch.setenv("TESSERA_TRAINING_STATE_MACHINE", arn)
    monkeypatch.setattr(handler, "_STEPFUNCTIONS", None)
    return client, arn


@pytest.mark.parametrize("path", ["/train", "/console/train"])
def test_train_starts_the_workflow_only_for_a_dataset_that_has_rows(
    workflow: Any, sheet: dict[str, Any], path: str
) -> None:
    client, arn = workflow
    status, answer, _ = call("POST", path, {"dataset": "digits"})
    assert status == 202, answer
    (execution,) = client.list_executions(stateMachineArn=arn)["executions"]
    assert execution["name"] == answer["execution"] == answer["executionArn"].split(":")[-1]
    described = client.describe_execution(executionArn=answer["executionArn"])
    # the family is always in the input: the workflow picks the job's queue by it
    assert json.loads(described["input"]) == {"dataset": "digits", "family": "mlp"}
    assert answer["status_key"] == f"runs/{answer['execution']}/status.json"
    # a fanned-out search goes into the workflow's input, for its array job
    status, searched, _ = call("POST", path, {"dataset": "digits", "search_workers": 4})
    assert status == 202
    described = client.describe_execution(executionArn=searched["executionArn"])
    assert json.loads(described["input"]) == {
        "dataset": "digits",
        "family": "mlp",
        "search_workers": 4,
    }
    status, keras, _ = call("POST", path, {"dataset": "digits", "family": "cnn"})
    assert (status, keras["family"]) == (202, "cnn")
    described = client.describe_execution(executionArn=keras["executionArn"])
    assert json.loads(described["input"]) == {"dataset": "digits", "family": "cnn"}
    # refused before anything starts: no dataset, a name against the rules, nonsense bodies
    for body, code, expected in (
        ({"dataset": "letters"}, 404, "dataset_not_found"),
        ({"dataset": "../../x"}, 400, "bad_request"),
        ({"datasets": ["digits", "digits"]}, 400, "bad_request"),
        ({"dataset": "digits", "family": "resnet"}, 400, "bad_request"),
        (b"null", 400, "bad_request"),
        (b"[" * 100_000, 413, "body_too_large"),
    ):
        status, refused, _ = call("POST", path, body)
        assert (status, refused["error"]["code"]) == (code, expected), body
        assert "NoneType" not in refused["error"]["message"]
    assert len(client.list_executions(stateMachineArn=arn)["executions"]) == 3
