"""Glyphs for drawing test sheets, shared by the sheet tests."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tessera_dev.samples import Glyphs, sklearn_digits


def upscaled_digits(count: int) -> Glyphs:
    """sklearn's first `count` 8x8 digits upscaled to 28x28: MNIST-like strokes, no download."""
    digits = sklearn_digits()
    ink = np.stack(
        [
            np.asarray(Image.fromarray(g, mode="F").resize((28, 28), Image.Resampling.BILINEAR))
            for g in digits.ink[:count]
        ]
    )
    return Glyphs(ink=np.clip(ink, 0, 1).astype(np.float32), labels=digits.labels[:count])
