"""One normalization: a tile gives the same model input through Vectorize (the dataset row
training reads), the API and batch prediction."""

from __future__ import annotations

import base64

import numpy as np

from tessera.imaging.decode import decode_image, encode_png
from tessera.pipeline.batch_predictions import predict_tiles
from tessera.pipeline.tile_batch import TileBatch, cell_from_tile, encode_tile_batch
from tessera.pipeline.vectorize import vectorize_object
from tessera.serving.api_input import features_from_body, features_from_image_bytes
from tessera.serving.cache import ModelCache
from tessera_dev.samples import Glyphs, render_sheet
from tests.conftest import rows_under
from tests.reference_split import split_image
from tests.serving.conftest import Call, Served


def test_a_tile_is_the_same_vector_through_vectorize_and_the_api(
    served: Served, call: Call, digits: Glyphs
) -> None:
    # GIVEN a sheet of three handwritten digits, cut into tiles the way Split cuts it
    sheet = decode_image(render_sheet(digits.ink[10:13], cols=3))
    tiles = split_image(sheet, 1, 3)
    pngs = {f"tiles/digits/parity/r000-c{t.col:03d}.png": encode_png(t.pixels) for t in tiles}
    cells = tuple(
        cell_from_tile(key, "x", tile.pixels, "etag") for key, tile in zip(pngs, tiles, strict=True)
    )
    batch = TileBatch("digits", "parity", "incoming/train/digits/p.png", "e", cells)
    served.store.put(batch.key, encode_tile_batch(batch))

    # WHEN Vectorize turns the sheet's tile batch into rows, and the API reads each tile's PNG
    assert vectorize_object(served.store, batch.key).status == "vectorized"
    rows = {row.source_key: row for row in rows_under(served.store, "datasets/digits/rows/")}
    assert sorted(rows) == sorted(pngs)
    for key, png in pngs.items():
        row = rows[key]
        served_vector = features_from_image_bytes(png)
        via_json = features_from_body({"image": base64.b64encode(png).decode()})[0]

        # THEN what training reads (row / 255) is bit for bit what the model gets when serving
        training_vector = row.pixels.astype(np.float32) / np.float32(255.0)
        assert served_vector.dtype == np.float32 and served_vector.shape == (784,)
        assert np.array_equal(served_vector, training_vector)
        assert np.array_equal(via_json, training_vector)


def test_batch_prediction_gives_the_same_answer_as_the_api(
    served: Served, call: Call, digits: Glyphs
) -> None:
    sheet = decode_image(render_sheet(digits.ink[20:24], cols=4))
    tiles = split_image(sheet, 1, 4)
    model = ModelCache(registry=served.registry, ttl_seconds=30).get()
    batch = predict_tiles(model, [tile.pixels for tile in tiles], top_k=3)
    for tile, predicted in zip(tiles, batch, strict=True):
        png = encode_png(tile.pixels)
        reply = call("POST", "/predict", body=png, content_type="image/png")
        assert predicted is not None
        assert reply.body["label"] == predicted["label"]
        assert reply.body["top"] == predicted["top"]
