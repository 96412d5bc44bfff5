"""What is not a symbol, told apart: ink stains (solid, or dark all over before the light was
flattened), scribble and noise (strokes crossed too often), and what lies against them."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tessera.imaging.connected_components import Components, Ints, Mask
from tessera.imaging.decode import Gray

# A blot: ink filling at least this share of its box (a filled disc fills 79%, handwriting
# 10-45%, a thick marker digit up to 70%)
BLOT_FILL = 0.6
# ...and a stain's core survives eroding by this share of its shorter side.
BLOT_DEPTH = 0.4
# A written symbol's rows cross its strokes a few times (an "m" or "#" five or six).
MAX_RUNS_PER_ROW = 7.0


def blots(mask: Mask, components: Components, speck: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Ink stains: solid, round-ish pieces whose ink is thick all the way in. A pen stroke is
    thin next to its symbol, so eroding by two fifths of the piece's shorter side (only a
    stroke 80% of it wide survives) wipes out any written symbol (the boldest MNIST digits
    survive 30%), while a stain's core (a disc survives 50%) does not go."""
    heights = components.bottom - components.top
    widths = components.right - components.left
    short = np.minimum(heights, widths)
    fill = components.area / np.maximum(heights * widths, 1)
    roundish = np.maximum(heights, widths) <= 2 * short
    suspects = np.flatnonzero(~speck & (fill >= BLOT_FILL) & roundish & (short >= 16))
    blot = np.zeros(components.count, dtype=np.bool_)
    for k in suspects:
        piece = mask[
            components.top[k] : components.bottom[k], components.left[k] : components.right[k]
        ]
        depth = max(2, int(short[k] * BLOT_DEPTH))
        blot[k] = bool(_eroded(piece, depth).any())
    return blot


def _eroded(mask: Mask, steps: int) -> Mask:
    """A 3x3 erosion, `steps` times."""
    out = mask.copy()
    for _ in range(steps):
        if not out.any():
            break
        padded = np.pad(out, 1)
        height, width = out.shape
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                out &= padded[dy : dy + height, dx : dx + width]
    return out


def against(box: tuple[int, int, int, int], refused: list[tuple[int, int, int, int]]) -> bool:
    top, left, bottom, right = box
    area = max(1, (bottom - top) * (right - left))
    for r_top, r_left, r_bottom, r_right in refused:
        # The refused box widened by a fifth of its size each way.
        grow_y, grow_x = (r_bottom - r_top) // 5, (r_right - r_left) // 5
        inside_h = min(bottom, r_bottom + grow_y) - max(top, r_top - grow_y)
        inside_w = min(right, r_right + grow_x) - max(left, r_left - grow_x)
        if inside_h > 0 and inside_w > 0 and inside_h * inside_w >= 0.5 * area:
            return True
    return False


def dark(shade: Gray, box: tuple[int, int, int, int]) -> bool:
    """Three quarters of the box darker than mid-grey: a bold "8" fills half its box at most."""
    top, left, bottom, right = box
    return float(np.quantile(shade[top:bottom, left:right], 0.25)) > 0.5


def busy(shade: Gray, box: tuple[int, int, int, int]) -> bool:
    """Noise rather than strokes: in the page as lit (unsmoothed), the box's rows cross dark
    pixels many times (smoothing merges noise into a solid-looking piece)."""
    top, left, bottom, right = box
    inked = shade[top:bottom, left:right] > 0.5
    starts = np.count_nonzero(inked[:, 1:] & ~inked[:, :-1]) + np.count_nonzero(inked[:, 0])
    return bool(starts / max(1, bottom - top) > MAX_RUNS_PER_ROW)


def runs_per_row(components: Components, members: Ints, height: int) -> float:
    runs = int(np.isin(components.run_label, members).sum())
    return runs / max(1, height)
