"""What Split hands Vectorize: one object per sheet holding every inked cell it cut.

Split still writes one PNG per tile, for people to look at (and the overlay numbers them), but
nothing listens for those: Vectorize is triggered once per sheet by the sheet's tile batch,
`tiles/<dataset>/<sheet-id>/tiles.npz`, and writes the sheet's rows as one shard. Per tile that
is one PUT instead of a PUT, an SQS message, a GET, a HEAD and a PUT.

The batch holds each cell's pixels exactly as its PNG holds them (8-bit), so a row is the same
vector whichever of the two it is made from. Its `digest` (in the object's metadata and in the
shard Vectorize writes) is a hash of what defines the rows - pixels, labels and tile keys - so a
sheet uploaded again with the same bytes and labels is not vectorized again, and one uploaded
with corrected labels is.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tessera.config import PIPELINE, TILE_BATCH
from tessera.errors import InvalidInput
from tessera.imaging.decode import Gray, to_gray_bytes


@dataclass(frozen=True)
class Cell:
    key: str  # the tile's PNG, tiles/<dataset>/<sheet-id>/rNNN-cNNN.png
    label: str
    pixels: NDArray[np.uint8]  # the PNG's 8-bit gray values
    etag: str  # the PNG's ETag when Split wrote it

    def gray(self) -> Gray:
        """As `decode_image` reads the PNG: float32 in [0, 1]."""
        return self.pixels.astype(np.float32) * np.float32(1.0 / 255.0)


@dataclass(frozen=True)
class TileBatch:
    dataset: str
    sheet_id: str
    source_key: str
    source_etag: str
    cells: tuple[Cell, ...]

    @property
    def key(self) -> str:
        return tile_batch_key(self.dataset, self.sheet_id)

    def digest(self) -> str:
        hashed = hashlib.sha256(f"{self.source_key}\n{self.source_etag}\n".encode())
        for cell in self.cells:
            hashed.update(f"{cell.key}\t{cell.label}\t{cell.pixels.shape}\n".encode())
            hashed.update(np.ascontiguousarray(cell.pixels).tobytes())
        return hashed.hexdigest()[:32]


def tile_prefix(dataset: str, sheet_id: str) -> str:
    return f"{PIPELINE.prefixes.tiles}{dataset}/{sheet_id}/"


def tile_batch_key(dataset: str, sheet_id: str) -> str:
    return f"{tile_prefix(dataset, sheet_id)}{TILE_BATCH}"


def sheet_of_tile_batch(key: str) -> tuple[str, str]:
    """tiles/<dataset>/<sheet-id>/tiles.npz -> (dataset, sheet-id); InvalidInput otherwise."""
    parts = key.removeprefix(PIPELINE.prefixes.tiles).split("/")
    if not key.startswith(PIPELINE.prefixes.tiles) or len(parts) != 3 or parts[2] != TILE_BATCH:
        raise InvalidInput(
            "bad_tile_batch",
            f"{key} is not a sheet's tile batch ({PIPELINE.prefixes.tiles}<dataset>/<sheet-id>/"
            f"{TILE_BATCH})",
        )
    return parts[0], parts[1]


def cell_from_tile(key: str, label: str, pixels: Gray, etag: str) -> Cell:
    return Cell(key=key, label=label, pixels=to_gray_bytes(pixels), etag=etag)


def encode_tile_batch(batch: TileBatch) -> bytes:
    shapes = np.array([c.pixels.shape for c in batch.cells], dtype=np.int32).reshape(-1, 2)
    flat = (
        np.concatenate([c.pixels.ravel() for c in batch.cells])
        if batch.cells
        else np.zeros(0, dtype=np.uint8)
    )
    buffer = io.BytesIO()
    np.savez(
        buffer,
        pixels=flat,
        shapes=shapes,
        keys=np.array([c.key for c in batch.cells], dtype=str),
        labels=np.array([c.label for c in batch.cells], dtype=str),
        etags=np.array([c.etag for c in batch.cells], dtype=str),
        source=np.array([batch.source_key, batch.source_etag]),
    )
    return buffer.getvalue()


def decode_tile_batch(data: bytes, key: str) -> TileBatch:
    """The batch at `key`; `InvalidInput("bad_tile_batch")` for anything Split did not write."""
    dataset, sheet_id = sheet_of_tile_batch(key)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            flat, shapes = stored["pixels"], stored["shapes"]
            keys, labels, etags = stored["keys"], stored["labels"], stored["etags"]
            source_key, source_etag = (str(v) for v in stored["source"])
    except Exception as error:  # numpy raises many types for a damaged archive
        raise InvalidInput(
            "bad_tile_batch", f"{key} is not a readable tile batch: {error}"
        ) from None
    sizes = [int(h) * int(w) for h, w in shapes] if shapes.ndim == 2 else []
    if (
        flat.dtype != np.uint8
        or shapes.ndim != 2
        or shapes.shape[1:] != (2,)
        or (shapes < 0).any()
        or sum(sizes) != flat.size
        or not len(keys) == len(labels) == len(etags) == len(shapes)
    ):
        raise InvalidInput("bad_tile_batch", f"{key}: its arrays do not agree with each other")
    offsets = np.cumsum([0, *sizes])
    cells = tuple(
        Cell(
            key=str(keys[i]),
            label=str(labels[i]),
            pixels=flat[offsets[i] : offsets[i + 1]].reshape(int(shapes[i][0]), int(shapes[i][1])),
            etag=str(etags[i]),
        )
        for i in range(len(keys))
    )
    prefix = tile_prefix(dataset, sheet_id)
    if any(not cell.key.startswith(prefix) or "/" in cell.key[len(prefix) :] for cell in cells):
        raise InvalidInput("bad_tile_batch", f"{key} names tiles outside {prefix}")
    return TileBatch(dataset, sheet_id, source_key, source_etag, cells)
