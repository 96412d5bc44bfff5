"""Regression corpus for tile normalization: speed work on imaging/components must not move a bit.

The fixture beside this file holds SHA-256 digests of the float32 outputs computed with the code
as it was before the /predict speed work (commit 3fa91ff). Outputs are compared bit for bit.

The resampling is a float32 matrix product, which numpy hands to OpenBLAS, and OpenBLAS picks a
kernel for the processor it runs on: AVX-512, AVX2 and older kernels sum in different orders and
differ in the last bit. So the digests are recorded per kernel (the same code run with
OPENBLAS_CORETYPE set to each kernel this machine can run), and a test compares against the
kernel it runs on. Regenerate only for an intended change of output, once per kernel:
    OPENBLAS_CORETYPE=<kernel> python tests/imaging/test_normalize_regression.py --write
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from tessera.imaging import connected_components, ink
from tessera.imaging.connected_components import label_components
from tessera.imaging.decode import decode_image, encode_png
from tessera.imaging.ink import clean_ink, ink_image
from tessera.imaging.normalize import normalize_ink, normalize_tile
from tessera_dev.samples import render_sheet, sklearn_digits
from tests.reference_split import split_image

FIXTURE = Path(__file__).with_name("normalize_regression.json")
Gray = NDArray[np.float32]


def _digest(array: NDArray[Any] | None) -> str | None:
    if array is None:
        return None
    data = np.ascontiguousarray(array)
    return hashlib.sha256(str(data.shape).encode() + data.tobytes()).hexdigest()


def _sheet_tiles(ink: Gray, *, cols: int, cell: int, margin: int) -> list[Gray]:
    png = render_sheet(ink, cols=cols, cell=cell, margin=margin)
    image = decode_image(png)
    rows = -(-len(ink) // cols)
    return [tile.pixels for tile in split_image(image, rows, cols)]


def _stroke_tile(rng: np.random.Generator, size: int) -> Gray:
    """A few thick random strokes, dark on light paper, with noise."""
    canvas = np.ones((size, size), dtype=np.float32)
    ys, xs = np.mgrid[:size, :size]
    for _ in range(int(rng.integers(1, 4))):
        y0, x0, y1, x1 = rng.uniform(0.15, 0.85, 4) * size
        width = rng.uniform(0.04, 0.12) * size
        t = np.clip(
            ((ys - y0) * (y1 - y0) + (xs - x0) * (x1 - x0))
            / max((y1 - y0) ** 2 + (x1 - x0) ** 2, 1e-6),
            0,
            1,
        )
        distance = np.hypot(ys - (y0 + t * (y1 - y0)), xs - (x0 + t * (x1 - x0)))
        canvas = np.minimum(canvas, np.clip(distance / width, 0, 1).astype(np.float32))
    noise = rng.normal(0, rng.uniform(0, 0.08), canvas.shape).astype(np.float32)
    tile: Gray = np.clip(canvas + noise, 0, 1).astype(np.float32)
    return tile


def _corpus() -> list[Gray]:
    rng = np.random.default_rng(20240604)
    glyphs = sklearn_digits().ink
    tiles: list[Gray] = []
    # sklearn digits rendered onto sheets at several cell sizes, cut back into tiles.
    for cell, margin, start in ((16, 1, 0), (28, 3, 40), (40, 5, 80), (64, 4, 120)):
        tiles += _sheet_tiles(glyphs[start : start + 40], cols=8, cell=cell, margin=margin)
    # Cells cut off-centre: neighbours' fragments at the edges.
    png = render_sheet(glyphs[200:264], cols=8, cell=32, margin=1)
    sheet = decode_image(png)
    for r in range(0, 7):
        for c in range(0, 7):
            tiles.append(sheet[r * 32 + 10 : r * 32 + 48, c * 32 + 12 : c * 32 + 46])
    for size in (20, 28, 37, 56):
        for _ in range(15):
            tiles.append(_stroke_tile(rng, size))
    # White-on-black (ink bright), faint ink on grey paper, 8-bit PNG round trips.
    for index in range(30):
        tile = _stroke_tile(rng, 28 + index % 5)
        tiles.append(1.0 - tile)
        tiles.append((0.7 + 0.25 * tile).astype(np.float32))
        tiles.append(decode_image(encode_png(tile)))
    # Empty, flat, pure noise and speck-only tiles.
    tiles.append(np.ones((28, 28), dtype=np.float32))
    tiles.append(np.zeros((28, 28), dtype=np.float32))
    tiles.append(np.full((30, 30), 0.5, dtype=np.float32))
    for _ in range(5):
        tiles.append(rng.uniform(0.9, 1.0, (28, 28)).astype(np.float32))
        speck = np.ones((28, 28), dtype=np.float32)
        speck[tuple(rng.integers(0, 28, 2))] = 0.0
        tiles.append(speck)
    # A ruled line along an edge plus a glyph, and a lone line.
    for size in (28, 40):
        tile = _stroke_tile(rng, size)
        tile[1, :] = 0.0
        tiles.append(tile)
        line = np.ones((size, size), dtype=np.float32)
        line[:, size // 2] = 0.0
        tiles.append(line)
    return [np.asarray(tile, dtype=np.float32) for tile in tiles]


def _stack(tiles: list[Gray]) -> tuple[Gray, NDArray[np.int64], NDArray[np.int64]]:
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    stack = np.zeros((len(tiles), height, width), dtype=np.float32)
    for k, tile in enumerate(tiles):
        stack[k, : tile.shape[0], : tile.shape[1]] = ink_image(tile)
    heights = np.array([t.shape[0] for t in tiles], dtype=np.int64)
    widths = np.array([t.shape[1] for t in tiles], dtype=np.int64)
    return stack, heights, widths


def _outputs() -> dict[str, Any]:
    tiles = _corpus()
    single = [_digest(normalize_tile(tile)) for tile in tiles]
    deslanted = [_digest(normalize_tile(tile, deslant=True)) for tile in tiles[::7]]
    stack, heights, widths = _stack(tiles)
    stacks = {}
    for name, ruled in (("ruled", True), ("unruled", False)):
        cleaned, present = clean_ink(stack, heights, widths, threshold=0.2, ruled=ruled)
        stacks[name] = [_digest(cleaned), _digest(present), _digest(normalize_ink(cleaned))]
    rng = np.random.default_rng(7)
    masks = [rng.random((h, w)) < p for h, w, p in ((29, 28, 0.3), (64, 40, 0.5), (5, 300, 0.4))]
    labelled = []
    for mask in masks:
        for connectivity in (4, 8):
            parts = label_components(mask, connectivity=connectivity)
            labelled.append(
                _digest(np.stack([parts.area, parts.top, parts.left, parts.bottom, parts.right]))
            )
    return {
        "tiles": len(tiles),
        "single": single,
        "deslanted": deslanted,
        "stacks": stacks,
        "components": labelled,
    }


def blas_kernel() -> str:
    """The OpenBLAS kernel numpy's matrix products run on in this process."""
    from threadpoolctl import threadpool_info

    found = [info for info in threadpool_info() if info.get("internal_api") == "openblas"]
    return str(found[0].get("architecture", "unknown")) if found else "none"


def recorded_outputs(kernel: str) -> dict[str, Any] | None:
    for group in json.loads(FIXTURE.read_text())["recorded"]:
        if kernel in group["blas_kernels"]:
            outputs: dict[str, Any] = group["outputs"]
            return outputs
    return None


def test_normalization_is_bit_identical_to_the_recorded_corpus() -> None:
    # GIVEN the digests recorded before the speed work, for the BLAS kernel this process uses
    kernel = blas_kernel()
    expected = recorded_outputs(kernel)
    if expected is None:
        pytest.skip(f"no digests recorded for the OpenBLAS kernel {kernel!r}")
    # WHEN the same corpus goes through today's code
    actual = _outputs()
    # THEN every output matches bit for bit, tile by tile
    assert actual["tiles"] == expected["tiles"]
    changed = [
        k
        for k, (a, e) in enumerate(zip(actual["single"], expected["single"], strict=True))
        if a != e
    ]
    assert not changed, f"normalize_tile changed for corpus tiles {changed[:20]}"
    assert actual["deslanted"] == expected["deslanted"]
    assert actual["stacks"] == expected["stacks"]
    assert actual["components"] == expected["components"]


def test_corpus_is_varied() -> None:
    # The corpus must exercise empty tiles as well as inked ones, or it proves little.
    expected = recorded_outputs("Haswell")
    assert expected is not None
    empty = sum(digest is None for digest in expected["single"])
    assert expected["tiles"] >= 300
    assert 5 <= empty < expected["tiles"] // 4
    assert len(set(expected["single"])) > expected["tiles"] // 2


def test_small_mask_labelling_matches_the_vectorized_labelling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN random masks of tile size (few runs) and sparse ones with many separate pieces
    rng = np.random.default_rng(11)
    masks = [rng.random((h, w)) < p for h, w, p in ((6, 7, 0.5), (29, 28, 0.08), (12, 3, 0.6))]
    masks += [
        rng.random((int(rng.integers(1, 30)), 28)) < rng.uniform(0.02, 0.9) for _ in range(60)
    ]
    for mask in masks:
        for connectivity in (4, 8):
            # WHEN they are labelled by the small-mask union-find and by the array passes
            monkeypatch.setattr(connected_components, "SMALL_RUNS", 10**9)
            small = label_components(mask, connectivity=connectivity)
            monkeypatch.setattr(connected_components, "SMALL_RUNS", 0)
            vectorized = label_components(mask, connectivity=connectivity)
            # THEN both give the same components, numbered the same way
            assert small.count == vectorized.count
            for name in ("area", "top", "left", "bottom", "right", "run_label"):
                np.testing.assert_array_equal(getattr(small, name), getattr(vectorized, name))


@pytest.mark.parametrize("ruled", [True, False])
def test_one_tile_cleans_as_it_does_inside_a_stack(ruled: bool) -> None:
    # GIVEN corpus tiles (ink, and a smoothed copy deciding what is ink) of every size
    tiles = _corpus()
    for size in (40, 48, 64):
        # A stroke and a ruled line's remnant near the top: only `ruled` drops the line.
        tile = np.ones((size, size), dtype=np.float32)
        tile[size // 5 : size - size // 5, size // 2 - 3 : size // 2 + 3] = 0.0
        tile[2, 5 : size - 4] = 0.1
        tiles.append(tile)
    for tile in tiles:
        values = ink_image(tile)
        ink = np.clip(values * 1.1, 0, 1).astype(np.float32)
        h, w = ink.shape
        sizes = np.array([h, h]), np.array([w, w])
        # WHEN it is cleaned alone and as the first tile of a stack of two
        alone, alone_present = clean_ink(
            ink[None], sizes[0][:1], sizes[1][:1], threshold=0.2, ruled=ruled, values=values[None]
        )
        stacked, stacked_present = clean_ink(
            np.stack([ink, ink[::-1]]),
            *sizes,
            threshold=0.2,
            ruled=ruled,
            values=np.stack([values, values[::-1]]),
        )
        # THEN the tile comes out the same bits either way
        assert alone_present[0] == stacked_present[0]
        assert alone.dtype == stacked.dtype == np.float32
        np.testing.assert_array_equal(alone[0], stacked[0])


def test_tile_median_is_numpys_median_to_the_bit() -> None:
    # GIVEN float32 arrays of odd and even sizes, 8-bit levels with ties, and some with NaN
    rng = np.random.default_rng(5)
    arrays = []
    for index in range(3000):
        values = rng.random(int(rng.integers(1, 50))).astype(np.float32)
        if index % 3 == 0:
            values = np.round(values * 255) / np.float32(255)
        if index % 50 == 0:
            values[int(rng.integers(0, values.size))] = np.nan
        arrays.append(values.reshape(1, -1))
    for values in arrays:
        # WHEN the tile median is taken
        ours, numpys = ink._median(values), float(np.median(values))
        # THEN it is numpy's, bit for bit (NaN when numpy says NaN)
        assert ours == numpys or (np.isnan(ours) and np.isnan(numpys))


if __name__ == "__main__" and "--write" in sys.argv:
    kernel, outputs = blas_kernel(), _outputs()
    groups = [
        group
        for group in json.loads(FIXTURE.read_text())["recorded"]
        if kernel not in group["blas_kernels"]
    ]
    for group in groups:
        if group["outputs"] == outputs:
            group["blas_kernels"] = sorted([*group["blas_kernels"], kernel])
            break
    else:
        groups.append({"blas_kernels": [kernel], "outputs": outputs})
    FIXTURE.write_text(json.dumps({"recorded": groups}, indent=0) + "\n")
    print(f"wrote {FIXTURE} for the {kernel} kernel ({FIXTURE.stat().st_size} bytes)")
