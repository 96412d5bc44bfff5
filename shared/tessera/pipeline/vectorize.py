"""Vectorize: a tile under tiles/ becomes its MNIST-normalized dataset row under datasets/."""

from __future__ import annotations

from tessera.dataset import Row, write_row
from tessera.errors import InvalidInput
from tessera.imaging.decode import decode_image
from tessera.imaging.normalize import normalize_tile, to_vector
from tessera.names import validate_label
from tessera.pipeline.outcome import Outcome, quarantined
from tessera.storage import ObjectStore, decode_metadata


def vectorize_object(store: ObjectStore, key: str) -> Outcome:
    """Normalize the tile at `key` and write its dataset row (idempotently)."""
    tile = store.get(key)
    try:
        label = validate_label(decode_metadata(tile.metadata).get("label", ""))
        pixels = normalize_tile(decode_image(tile.body))
        if pixels is None:
            raise InvalidInput("empty_tile", "the tile has no ink; it is not added to the dataset")
    except InvalidInput as error:
        status = "empty" if error.code == "empty_tile" else "quarantined"
        return quarantined(store, key, error, stage="vectorize", etag=tile.etag, status=status)
    shard, written = write_row(
        store, Row(pixels=to_vector(pixels), label=label, source_key=key, source_etag=tile.etag)
    )
    return Outcome(key, "vectorized" if written else "unchanged", {"shard": shard, "label": label})
