"""One normalization: a tile gives the same model input through Vectorize (the dataset row
training reads), the API and batch prediction."""

from __future__ import annotations

import base64

import numpy as np

from tessera.dataset import decode_row, shard_key_for_tile
from tessera.imaging.decode import decode_image, encode_png
from tessera.pipeline.batch_predictions import predict_tiles
from tessera.pipeline.vectorize import vectorize_object
from tessera.serving.api_input import features_from_body, features_from_image_bytes
from tessera.serving.cache import ModelCache
from tessera.storage import encode_metadata
from tessera_dev.samples import Glyphs, render_sheet
from tests.reference_split import split_image
from tests.serving.conftest import Call, Served


def test_a_tile_is_the_same_vector_through_vectorize_and_the_api(
    served: Served, call: Call, digits: Glyphs
) -> None:
    # GIVEN a sheet of three handwritten digits, cut into tiles the way Split cuts it
    sheet = decode_image(render_sheet(digits.ink[10:13], cols=3))
    tiles = split_image(sheet, 1, 3)
    for tile in tiles:
        png = encode_png(tile.pixels)
        key = f"tiles/digits/parity/r000-c{tile.col:03d}.png"
        served.store.put(
            key, png, content_type="image/png", metadata=encode_metadata({"label": "x"})
        )

        # WHEN Vectorize turns the tile into its dataset row, and the API reads the same bytes
        assert vectorize_object(served.store, key).status == "vectorized"
        row = decode_row(served.store.get(shard_key_for_tile(key)).body)
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
