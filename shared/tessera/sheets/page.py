"""A photographed or scanned page turned into ink: uneven light flattened, an adaptive
threshold, and a working size that keeps a Lambda's memory and time in bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image

from tessera.imaging.connected_components import Mask
from tessera.imaging.decode import Gray

# Pages are analysed at no more than this many pixels on their long side: a 4000x3000 photo
# holds no more information about a 28x28 glyph than its 2000x1500 reduction, and a quarter of
# the pixels keeps a Lambda's memory and time in bounds.
WORKING_SIDE = 2000


@dataclass(frozen=True)
class Page:
    """A page as ink: bright strokes on zero, lit evenly, with the threshold that separates
    strokes from paper noise. `ink` is smoothed, for deciding what is ink; `values` is the
    same ink unsmoothed, what the cells are cut from (smoothing thickens thin strokes and
    closes the loops of small glyphs)."""

    ink: Gray
    values: Gray
    threshold: float
    scale: float  # working pixels per source pixel
    working: Gray = field(repr=False)  # the gray page at working size, as lit
    paper_level: float = 1.0  # the page's median gray

    @property
    def mask(self) -> Mask:
        return self.ink > self.threshold

    @cached_property
    def shade(self) -> Gray:
        """The working page as ink before the light was flattened: a stain or a shadow is dark
        all over here, where flattening has left only its rim."""
        level = np.float32(self.paper_level)
        if self.paper_level >= 0.5:
            shade = 1.0 - self.working / max(level, np.float32(1e-3))
        else:
            shade = self.working - level
        clipped: Gray = np.clip(shade, 0.0, 1.0).astype(np.float32)
        return clipped


def _working_size(gray: Gray) -> tuple[Gray, float]:
    height, width = gray.shape
    factor = math.ceil(max(height, width) / WORKING_SIDE)
    if factor <= 1:
        return gray, 1.0
    # A box mean over whole blocks, straight from the array: no second full-size copy.
    rows, cols = height // factor, width // factor
    blocks = gray[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor)
    reduced = blocks.mean(axis=(1, 3), dtype=np.float32)
    return reduced, 1.0 / factor


def _block_level(gray: Gray, block: int, quantile: float) -> Gray:
    """A smooth map of `quantile` of each block x block tile, at full size."""
    height, width = gray.shape
    rows = max(1, -(-height // block))
    cols = max(1, -(-width // block))
    padded = np.pad(gray, ((0, rows * block - height), (0, cols * block - width)), mode="edge")
    blocks = padded.reshape(rows, block, cols, block)[:, ::2, :, ::2]
    # Every other pixel each way: a quarter of the sorting for the same light map.
    blocks = blocks.transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    level = np.quantile(blocks, quantile, axis=2).astype(np.float32)
    image = Image.fromarray(level, mode="F").resize(
        (cols * block, rows * block), Image.Resampling.BILINEAR
    )
    # A writable copy: callers work on it in place.
    return np.array(np.asarray(image, dtype=np.float32)[:height, :width])


def _mean3(image: Gray) -> Gray:
    padded = np.pad(image, 1, mode="edge")
    rows = padded[:-2] + padded[1:-1]
    rows += padded[2:]
    mean = rows[:, :-2] + rows[:, 1:-1]
    mean += rows[:, 2:]
    mean *= np.float32(1.0 / 9.0)
    return mean


def prepare_page(gray: Gray) -> Page:
    """Flatten the lighting and turn the page into ink intensity with an adaptive threshold.

    Paper (dark ink on light) is divided by a smooth estimate of the paper's brightness, which
    undoes uneven light and shadows in photos; light ink on a dark ground has its ground level
    subtracted. The threshold adapts to the page's paper noise.
    """
    working, scale = _working_size(np.asarray(gray, dtype=np.float32))
    height, width = working.shape
    # Blocks larger than a glyph, so each holds some paper to measure the light by.
    block = int(np.clip(min(height, width) // 16, 32, 160))
    # Statistics of the page are taken on every other pixel each way: the same figures from a
    # quarter of the sorting.
    # In place where it can be: a page is millions of pixels and every pass shows.
    paper_level = float(np.median(working[::2, ::2]))
    if paper_level >= 0.5:
        paper = _block_level(working, block, 0.9)
        np.maximum(paper, 0.05, out=paper)
        values = np.divide(working, paper, out=paper)
        np.subtract(1.0, values, out=values)
    else:
        ground = _block_level(working, block, 0.1)
        values = np.subtract(working, ground, out=ground)
    np.clip(values, 0.0, 1.0, out=values)
    # A 3x3 mean takes two thirds off sensor noise, so faint ruling and pencil clear the
    # threshold; it only decides what is ink, the cells keep the unsmoothed values.
    ink = _mean3(values)
    # Paper noise from the lower quantiles, which are paper even when ink covers half the
    # page: for Gaussian noise q25 - q10 is 0.607 sigma and the mean sits 0.674 sigma above q25.
    sample = ink[::2, ::2]
    low, quarter = (float(v) for v in np.quantile(sample, [0.10, 0.25]))
    sigma = (quarter - low) / 0.607
    threshold = max(0.1, quarter + 0.674 * sigma + 5.0 * sigma)
    strokes = sample[sample > threshold]
    if strokes.size < 4:
        # A small symbol can fall between the sampled pixels.
        strokes = ink[ink > threshold]
    if strokes.size < 4:
        blank = np.zeros_like(ink)
        return Page(ink=blank, values=blank, threshold=1.0, scale=scale, working=working)
    # Strokes are brought to full strength, as MNIST's are, so faint pencil reads like ink; the
    # scale comes from the strongest strokes, so the grey edges of strokes stay grey (clipping
    # at a lower quantile thickened strokes and closed the loops of small 8s and 9s).
    level = max(float(np.quantile(strokes, 0.99)), threshold * 1.5)
    for page in (ink, values):
        page *= 1.0 / level
        np.minimum(page, 1.0, out=page)
    return Page(
        ink=ink,
        values=values,
        threshold=min(threshold / level, 0.5),
        scale=scale,
        working=working,
        paper_level=paper_level,
    )
