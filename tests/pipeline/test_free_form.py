"""Free-form pages end to end: a page of hand-placed symbols (no grid) through Split, Vectorize,
batch predictions and POST /predict, all reading it with the one detector, and the overlay of
what was cut drawn where the symbols are."""

from __future__ import annotations

import base64
import csv
import io
import json
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from functions.batch_predict.handler import lambda_handler as batch_handler
from functions.inference import handler as inference
from functions.split.handler import lambda_handler as split_handler
from functions.vectorize.handler import lambda_handler as vectorize_handler
from tessera.imaging.decode import decode_image, encode_png
from tessera.sheets.cutting import SheetCut, cut_free, cut_sheet
from tessera.sheets.freeform import SymbolCutting
from tessera.sheets.overlay import render_overlay
from tessera.storage import ObjectStore, decode_metadata
from tessera_dev.local.pump import lambda_context
from tessera_dev.samples import Glyphs, render_sheet
from tests.conftest import (
    BUCKET,
    batch_of,
    keys_under,
    load_event,
    rows_under,
    sqs_event_for,
    tile_batches_under,
    tiles_under,
)
from tests.serving.conftest import Served, call_handler
from tests.sheets.free_pages import FreePage, font_digits, free_page

CONTEXT = lambda_context("test")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_INKED = (0, 150, 70)
_EMPTY = (200, 60, 60)
# Pages the detector reads as symbols with no layout given (ragged lines, no regular gaps).
LINES_3, SEED_3 = [6, 5, 4], 7
LINES_2, SEED_2 = [6, 6], 3
Box = tuple[int, int, int, int]


@pytest.fixture(scope="module")
def ink() -> tuple[NDArray[np.float32], NDArray[np.str_]]:
    return font_digits(60)


def _page(
    ink: tuple[NDArray[np.float32], NDArray[np.str_]], lines: list[int], seed: int
) -> FreePage:
    return free_page(*ink, lines, seed=seed)


def _split(key: str, *, message_id: str = "m0") -> dict[str, Any]:
    return split_handler(batch_of(sqs_event_for(BUCKET, key, message_id=message_id)), CONTEXT)


def _vectorize_all(store: ObjectStore) -> dict[str, Any]:
    keys = tile_batches_under(store)
    events = [sqs_event_for(BUCKET, key, message_id=f"v{i}") for i, key in enumerate(keys)]
    return vectorize_handler(batch_of(*events), CONTEXT)


def _reason(store: ObjectStore, key: str) -> dict[str, Any]:
    document = store.get_json(f"quarantine/{key}.reason.json")
    assert isinstance(document, dict), f"no quarantine reason for {key}"
    return document


def _manifest(store: ObjectStore, dataset: str) -> dict[str, Any]:
    keys = [k for k in keys_under(store, f"datasets/{dataset}/sheets/") if k.endswith(".json")]
    assert len(keys) == 1, keys
    document = store.get_json(keys[0])
    assert isinstance(document, dict)
    return document


def _tile_keys(lines: list[int]) -> list[str]:
    return [
        f"r{line:03d}-c{pos:03d}.png" for line, count in enumerate(lines) for pos in range(count)
    ]


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _holds(box: Box, point: tuple[float, float], slack: float = 0) -> bool:
    y, x = point
    return box[0] - slack <= y <= box[2] + slack and box[1] - slack <= x <= box[3] + slack


def _as_box(box: dict[str, int]) -> Box:
    return box["top"], box["left"], box["bottom"], box["right"]


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def test_a_free_form_training_sheet_becomes_one_labelled_tile_per_symbol(
    store: ObjectStore, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    # GIVEN a page of three hand-placed lines, no grid, one label per line in its metadata
    page = _page(ink, LINES_3, SEED_3)
    key = "incoming/train/digits/free page.png"
    store.put(key, page.png(), content_type="image/png", metadata={"row-labels": "3 5 8"})
    # WHEN split runs on its SQS event
    assert _split(key) == {"batchItemFailures": []}
    # THEN each symbol is one tile keyed by line and position, labelled with its line's label
    tiles = tiles_under(store, "tiles/digits/")
    assert [t.rsplit("/", 1)[1] for t in tiles] == _tile_keys(LINES_3)
    for tile in tiles:
        line = int(tile.rsplit("/", 1)[1][1:4])
        assert decode_metadata(store.get(tile).metadata)["label"] == "358"[line]
    # AND the manifest describes the page as symbols, with its picture beside it
    manifest = _manifest(store, "digits")
    assert manifest["layout"] == "symbols" and manifest["lines"] == LINES_3
    assert isinstance(manifest["rejected"], dict)
    assert 0.0 <= manifest["detection_score"] <= 1.0
    assert [(s["line"], s["position"]) for s in manifest["symbols"]] == [
        (line, pos) for line, count in enumerate(LINES_3) for pos in range(count)
    ]
    assert manifest["overlay"].endswith(".overlay.png")
    overlay = store.get(manifest["overlay"]).body
    assert overlay.startswith(_PNG_MAGIC) and Image.open(io.BytesIO(overlay)).format == "PNG"
    # AND a redelivered message rewrites the same objects and adds none
    before = {item.key: item.etag for item in store.list("")}
    assert _split(key, message_id="again") == {"batchItemFailures": []}
    assert {item.key: item.etag for item in store.list("")} == before
    # AND vectorize makes one dataset row per symbol, with its line's label
    assert _vectorize_all(store) == {"batchItemFailures": []}
    rows = rows_under(store, "datasets/digits/rows/")
    assert len(rows) == sum(LINES_3)
    assert sorted(row.label for row in rows) == ["3"] * 6 + ["5"] * 5 + ["8"] * 4


def test_row_labels_for_the_wrong_number_of_lines_are_quarantined_with_both_counts(
    store: ObjectStore, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    # GIVEN a page of two lines whose metadata names three
    key = "incoming/train/digits/two-lines.png"
    store.put(key, _page(ink, LINES_2, SEED_2).png(), metadata={"row-labels": "1,2,3"})
    # WHEN split runs
    assert _split(key) == {"batchItemFailures": []}
    # THEN it is quarantined saying both counts, and nothing is cut
    reason = _reason(store, key)
    assert reason["code"] == "label_count_mismatch"
    assert "3 row labels" in reason["message"] and "2 lines" in reason["message"]
    assert keys_under(store, "tiles/") == []


def test_labels_name_the_symbols_in_reading_order(
    store: ObjectStore, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    # GIVEN a page read as symbols (layout=free) with one label per symbol, as written
    page = _page(ink, LINES_3, SEED_3)
    key = "incoming/train/digits/labelled.png"
    metadata = {"layout": "free", "labels": ",".join(page.labels)}
    store.put(key, page.png(), metadata=metadata)
    # WHEN split runs
    assert _split(key) == {"batchItemFailures": []}
    # THEN the n-th tile in reading order has the n-th label
    tiles = tiles_under(store, "tiles/digits/")
    labels = [decode_metadata(store.get(tile).metadata)["label"] for tile in tiles]
    assert [t.rsplit("/", 1)[1] for t in tiles] == _tile_keys(LINES_3)
    assert labels == page.labels


def test_a_free_layout_that_names_a_grid_is_bad_metadata(
    store: ObjectStore, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    key = "incoming/train/digits/both.png"
    metadata = {"layout": "free", "grid": "2x6", "label": "1"}
    store.put(key, _page(ink, LINES_2, SEED_2).png(), metadata=metadata)
    assert _split(key) == {"batchItemFailures": []}
    assert _reason(store, key)["code"] == "bad_metadata"
    assert keys_under(store, "tiles/") == []


def _predict_page(served: Served, key: str, png: bytes) -> dict[str, Any]:
    served.store.put(key, png, content_type="image/png")
    assert batch_handler(batch_of(sqs_event_for(BUCKET, key)), CONTEXT) == {"batchItemFailures": []}
    document = served.store.get_json(f"predictions/{key}.json")
    assert isinstance(document, dict), served.store.get_json(f"quarantine/{key}.reason.json")
    return document


def test_batch_predictions_of_a_free_form_page_list_its_symbols_and_lines(
    served: Served, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    # GIVEN a page of hand-placed lines dropped under incoming/predict/digits/
    page = _page(ink, LINES_3, SEED_3)
    key = "incoming/predict/digits/homework.png"
    # WHEN the batch-predict function receives its event
    document = _predict_page(served, key, page.png())
    # THEN the JSON lists every symbol in reading order, each box around the written one
    assert document["layout"] == "symbols"
    symbols = document["symbols"]
    assert [(s["line"], s["position"]) for s in symbols] == [
        (line, pos) for line, count in enumerate(LINES_3) for pos in range(count)
    ]
    for symbol, truth in zip(symbols, page.boxes, strict=True):
        assert _holds(_as_box(symbol["box"]), _centre(truth)), (symbol["box"], truth)
        assert symbol["label"] and 0 < symbol["confidence"] <= 1 and symbol["top_k"]
    assert [len(line) for line in document["lines"]] == LINES_3
    assert "".join(document["lines"]) == "".join(s["label"] for s in symbols)
    assert isinstance(document["rejected"], dict) and 0 <= document["detection_score"] <= 1
    # AND the CSV has one row per symbol with its box, and the overlay is beside them
    rows = list(
        csv.DictReader(io.StringIO(served.store.get(f"predictions/{key}.csv").body.decode()))
    )
    assert len(rows) == len(symbols)
    assert list(rows[0]) == [
        "line",
        "position",
        "label",
        "confidence",
        "top",
        "left",
        "bottom",
        "right",
    ]
    assert [int(rows[7][name]) for name in ("top", "left", "bottom", "right")] == list(
        _as_box(symbols[7]["box"])
    )
    assert document["overlay"] == f"predictions/{key}.overlay.png"
    assert served.store.get(document["overlay"]).body.startswith(_PNG_MAGIC)


def _api_event(body: dict[str, Any]) -> dict[str, Any]:
    """The API Gateway proxy event kept beside the tests, with this JSON body."""
    event = load_event("api_predict.json")
    event["body"] = json.dumps(body)
    return event


def test_split_batch_predictions_and_the_api_read_a_page_with_one_detector(
    served: Served, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    # GIVEN the same page bytes, for training, for batch predictions and for POST /predict
    png = _page(ink, LINES_2, SEED_2).png()
    train_key = "incoming/train/digits/7/same.png"
    served.store.put(train_key, png, content_type="image/png")
    # WHEN each path reads it
    assert _split(train_key) == {"batchItemFailures": []}
    manifest = _manifest(served.store, "digits")
    batch = _predict_page(served, "incoming/predict/digits/same.png", png)
    response = inference.lambda_handler(_api_event({"image": _b64(png)}), lambda_context("api"))
    assert response["statusCode"] == 200, response["body"]
    answer = json.loads(response["body"])
    # THEN every path found the same symbols, in the same places, in the same order
    from_split = [(s["line"], s["position"], tuple(s["box"])) for s in manifest["symbols"]]
    from_batch = [(s["line"], s["position"], _as_box(s["box"])) for s in batch["symbols"]]
    from_api = [(s["line"], s["position"], _as_box(s["box"])) for s in answer["symbols"]]
    assert len(from_split) == sum(LINES_2)
    assert from_split == from_batch == from_api
    assert manifest["lines"] == LINES_2 and answer["lines"] == batch["lines"]


def test_a_page_posted_to_predict_answers_each_symbol_with_its_place(
    served: Served, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    # GIVEN a 700x520 photo of a page holding three lines of symbols
    page = _page(ink, LINES_3, SEED_3)
    # WHEN it is posted as a raw PNG
    reply = call_handler("POST", "/predict?top_k=2", body=page.png(), content_type="image/png")
    # THEN each symbol has its line, position, box and prediction, and each line its string
    assert reply.status == 200, reply.body
    answer = reply.body
    assert answer["layout"] == "symbols" and "label" not in answer
    assert len(answer["symbols"]) == len(answer["predictions"]) == sum(LINES_3)
    for symbol, prediction, truth in zip(
        answer["symbols"], answer["predictions"], page.boxes, strict=True
    ):
        assert _holds(_as_box(symbol["box"]), _centre(truth))
        assert symbol["label"] == prediction["label"] and len(symbol["top"]) == 2
    assert [len(line) for line in answer["lines"]] == LINES_3


def test_a_page_of_one_symbol_gets_the_single_answer(
    served: Served, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    png = _page(ink, [1], 5).png()
    reply = call_handler("POST", "/predict", json_body={"image": _b64(png)})
    assert reply.status == 200, reply.body
    assert {"label", "confidence", "top"} <= set(reply.body)
    assert len(reply.body["predictions"]) == 1 and "symbols" not in reply.body
    assert reply.body["predictions"][0]["label"] == reply.body["label"]


def test_a_blank_page_and_a_page_inside_instances_are_client_errors(
    served: Served, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    # GIVEN a blank 700x520 page, and a page of several symbols sent as one of `instances`
    blank = encode_png(np.ones((520, 700), np.float32))
    several = _page(ink, LINES_2, SEED_2).png()
    # WHEN each is posted
    empty = call_handler("POST", "/predict", json_body={"image": _b64(blank)})
    inside = call_handler("POST", "/predict", json_body={"instances": [{"image": _b64(several)}]})
    # THEN both are 400s whose code says why
    assert (empty.status, empty.body["error"]["code"]) == (400, "empty_image")
    assert (inside.status, inside.body["error"]["code"]) == (400, "several_symbols")


def test_a_page_of_more_symbols_than_one_answer_holds_is_sent_to_batch_predictions(
    served: Served,
) -> None:
    # GIVEN a page of 17 lines of 20 symbols (340: over the API's 300 per page)
    page = free_page(*font_digits(340), [20] * 17, seed=SEED_2, size=(1500, 1500), height=34)
    # WHEN it is posted whole
    reply = call_handler("POST", "/predict", body=page.png(), content_type="image/png")
    # THEN the answer says how many it holds and where such a page goes
    assert (reply.status, reply.body["error"]["code"]) == (400, "too_many_symbols")
    assert "340 symbols" in reply.body["error"]["message"]
    assert "incoming/predict/" in reply.body["error"]["message"]


def test_labels_that_do_not_fit_the_page_leave_an_overlay_of_what_was_found(
    store: ObjectStore, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    # GIVEN a page of two lines whose metadata names three
    key = "incoming/train/digits/two-lines-overlay.png"
    store.put(key, _page(ink, LINES_2, SEED_2).png(), metadata={"row-labels": "1 2 3"})
    # WHEN split quarantines it
    assert _split(key) == {"batchItemFailures": []}
    # THEN the reason names an overlay of the lines found, and the overlay is there
    reason = _reason(store, key)
    assert reason["overlay"] == f"quarantine/{key}.overlay.png"
    overlay = Image.open(io.BytesIO(store.get(reason["overlay"]).body))
    assert overlay.format == "PNG" and overlay.width > 0


def test_a_free_layout_that_names_a_grid_is_bad_metadata_for_predictions_too(
    served: Served, ink: tuple[NDArray[np.float32], NDArray[np.str_]]
) -> None:
    key = "incoming/predict/digits/free-with-grid.png"
    served.store.put(
        key, _page(ink, LINES_2, SEED_2).png(), metadata={"layout": "free", "grid": "2x5"}
    )
    context = lambda_context("batch_predict")
    assert batch_handler(batch_of(sqs_event_for(BUCKET, key)), context) == {"batchItemFailures": []}
    assert _reason(served.store, key)["code"] == "bad_metadata"


def test_a_28x28_tile_still_gets_todays_answer(served: Served) -> None:
    png = encode_png(served.trained.tiles[5])
    reply = call_handler("POST", "/predict", json_body={"image": _b64(png)})
    assert reply.status == 200
    assert reply.body["label"] and len(reply.body["predictions"]) == 1
    assert "layout" not in reply.body and "symbols" not in reply.body


def _rgb(png: bytes) -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _drawn(box: Box, factor: float) -> Box:
    """A box as overlay.py draws it: scaled, its right and bottom edges inside it."""
    top, left, bottom, right = (round(v * factor) for v in box)
    return top, left, max(bottom - 1, top), max(right - 1, left)


def _grey_ink(area: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """The page's own dark ink (grey), not an outline or a caption (coloured)."""
    same = (area[..., 0] == area[..., 1]) & (area[..., 1] == area[..., 2])
    grey: NDArray[np.bool_] = same & (area[..., 0] < 128)
    return grey


def assert_outlines_on_the_ink(cutting: SheetCut, overlay: bytes) -> None:
    """Each box's four edges are its colour, and inside an inked box there is dark ink."""
    pixels = _rgb(overlay)
    factor = pixels.shape[1] / cutting.page.shape[1]
    width = max(1, round(2 * factor))
    empty = set(cutting.empty)
    for tile, box in zip(cutting.tiles, cutting.working_boxes, strict=True):
        top, left, bottom, right = _drawn(box, factor)
        is_empty = (tile.row, tile.col) in empty
        colour = _EMPTY if is_empty else _INKED
        for edge in (
            pixels[top, left : right + 1],
            pixels[bottom, left : right + 1],
            pixels[top : bottom + 1, left],
            pixels[top : bottom + 1, right],
        ):
            assert (edge == colour).all(), (tile, box)
        inside = _grey_ink(
            pixels[top + width : bottom - width + 1, left + width : right - width + 1]
        )
        assert inside.any() != is_empty, (tile, box)


def test_a_grid_sheets_overlay_boxes_its_cells_and_crosses_out_empty_ones(digits: Glyphs) -> None:
    # GIVEN a 2x5 sheet with one blank cell, cut on its given grid
    glyphs = digits.ink[:10].copy()
    glyphs[7] = 0.0
    cutting = cut_sheet(decode_image(render_sheet(glyphs, cols=5)), 2, 5)
    assert cutting.empty == [(1, 2)]
    # WHEN its overlay is drawn
    overlay = render_overlay(cutting, [None] * 10)
    # THEN every cell is boxed green over its ink, the blank one red and empty
    assert_outlines_on_the_ink(cutting, overlay)


def test_a_free_form_pages_overlay_boxes_its_symbols_when_scaled_down(
    ink: tuple[NDArray[np.float32], NDArray[np.str_]],
) -> None:
    # GIVEN a free-form page read as symbols
    page = _page(ink, LINES_3, SEED_3)
    cutting = cut_free(decode_image(page.png()))
    assert isinstance(cutting, SymbolCutting) and cutting.line_counts == LINES_3
    # WHEN its overlay is drawn at half the page's width, and again with captions
    plain = render_overlay(cutting, [None] * len(cutting.tiles), max_width=350)
    captioned = render_overlay(cutting, page.labels, max_width=350)
    # THEN each symbol's box is drawn around it, scaled by the overlay's factor
    assert _rgb(plain).shape[1] == 350
    assert_outlines_on_the_ink(cutting, plain)
    on_page = 350 / cutting.page.shape[1]  # overlay pixels per working pixel
    on_source = 350 / page.image.shape[1]  # overlay pixels per source pixel
    for box, truth in zip(cutting.working_boxes, page.boxes, strict=True):
        y, x = _centre(truth)
        assert _holds(_drawn(box, on_page), (y * on_source, x * on_source), slack=1)
    # AND captions add their own colour
    assert (_rgb(captioned) != _rgb(plain)).any(axis=2).sum() > 0
