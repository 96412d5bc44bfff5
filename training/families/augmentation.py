"""Random distortions of the training digits for the CNN families, applied only while fitting.

They model how a new writer differs from MNIST's: where the digit sits and how big it is
(shift, zoom), how it leans (rotation, shear), how the hand wobbles (elastic distortion, after
Simard et al. 2003) and which pen drew it (stroke width). One random affine map per digit and
one resampling for all four affine parts, then the elastic field, then the stroke width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tessera.config import TILE_SIZE


@dataclass(frozen=True)
class Augmentation:
    """Random distortions of the training digits, applied only while fitting."""

    shift_pixels: float
    rotation_degrees: float
    zoom: float
    shear_degrees: float = 0.0
    # Elastic distortion: a smooth random displacement field (random normal displacements on a
    # coarse grid of `elastic_grid` x `elastic_grid` points, interpolated over the tile) whose
    # standard deviation is `elastic_pixels`; 0 turns it off.
    elastic_pixels: float = 0.0
    elastic_grid: int = 4
    # Stroke width: each digit moves up to this fraction of the way to its 3x3 dilation
    # (thicker) or erosion (thinner).
    stroke: float = 0.0
    # The share of digits distorted; the rest are fitted as they are.
    probability: float = 1.0


# Cells cut from real sheets sit a pixel or two off MNIST's centre of mass, lean a little, vary
# in size and come from other pens. Half the digits are distorted, half fitted as they are:
# every digit distorted cost 0.4 points of MNIST test accuracy at the same budget (99.05% against
# 99.45%). Measured by `tessera bench training` on digits from other sources (the 5000-cell
# sheet, scikit-learn's digits, generated sheets) against the affine-only augmentation: see the
# README.
STRONG_AUGMENTATION = Augmentation(
    shift_pixels=2,
    rotation_degrees=10.0,
    zoom=0.1,
    shear_degrees=10.0,
    elastic_pixels=1.0,
    stroke=0.5,
    probability=0.5,
)
# What cnn-strong trained on before shear, elastic distortion and stroke width were added
# (kept for the benchmark's side-by-side comparison).
AFFINE_AUGMENTATION = Augmentation(shift_pixels=2, rotation_degrees=10.0, zoom=0.1)
# By name, for FitOptions.augmentation and `tessera bench training --augmentations`.
AUGMENTATIONS: dict[str, Augmentation | None] = {
    "strong": STRONG_AUGMENTATION,
    "affine": AFFINE_AUGMENTATION,
    "none": None,
}


def _distortion_layer() -> Any:
    import keras
    from keras import ops

    class Distortion(keras.layers.Layer):  # type: ignore[misc]
        """(n, 28, 28, 1) -> distorted copies in training mode, the identity otherwise."""

        def __init__(self, augmentation: Augmentation, seed: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.augmentation = augmentation
            self.generator = keras.random.SeedGenerator(seed)

        def _uniform(self, n: Any, limit: float) -> Any:
            return keras.random.uniform((n,), -limit, limit, seed=self.generator)

        def _affine(self, images: Any) -> Any:
            a = self.augmentation
            n = ops.shape(images)[0]
            angle = self._uniform(n, math.radians(a.rotation_degrees))
            shear = self._uniform(n, math.radians(a.shear_degrees))
            scale = 1.0 + self._uniform(n, a.zoom)
            dx, dy = self._uniform(n, a.shift_pixels), self._uniform(n, a.shift_pixels)
            # The map from output to input pixel (what affine_transform takes): rotate, shear
            # and zoom about the tile's centre, then shift.
            cos, sin, tan = ops.cos(angle), ops.sin(angle), ops.tan(shear)
            a0, a1 = cos / scale, (tan * cos - sin) / scale
            b0, b1 = sin / scale, (tan * sin + cos) / scale
            centre = (TILE_SIZE - 1) / 2
            a2 = centre - a0 * centre - a1 * centre + dx
            b2 = centre - b0 * centre - b1 * centre + dy
            zero = ops.zeros_like(angle)
            transform = ops.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)
            return ops.image.affine_transform(images, transform, fill_mode="constant")

        def _elastic(self, images: Any) -> Any:
            # Keras' own elastic_transform draws dx and dy from one seed (dx == dy): every digit
            # would wobble along the diagonal only.
            a = self.augmentation
            n = ops.shape(images)[0]
            coarse = keras.random.normal(
                (n, a.elastic_grid, a.elastic_grid, 2), stddev=a.elastic_pixels, seed=self.generator
            )
            field = ops.image.resize(coarse, (TILE_SIZE, TILE_SIZE), interpolation="bilinear")
            side = TILE_SIZE
            grid = ops.arange(side, dtype="float32")
            rows = grid[None, :, None] + field[..., 0]
            cols = grid[None, None, :] + field[..., 1]
            # Bilinear resampling by four gathers from the flattened batch (map_coordinates
            # would interpolate along the batch axis too: eight gathers, twice the time).
            flat = ops.reshape(images, (-1,))
            offset = ops.reshape(ops.arange(n) * side * side, (-1, 1, 1))
            top, left = ops.floor(rows), ops.floor(cols)
            moved = ops.zeros_like(rows)
            for row, row_weight in ((top, 1 - (rows - top)), (top + 1, rows - top)):
                for col, col_weight in ((left, 1 - (cols - left)), (left + 1, cols - left)):
                    inside = (row >= 0) & (row < side) & (col >= 0) & (col < side)
                    index = (
                        offset
                        + ops.cast(ops.clip(row, 0, side - 1), "int32") * side
                        + ops.cast(ops.clip(col, 0, side - 1), "int32")
                    )
                    weight = row_weight * col_weight * ops.cast(inside, "float32")
                    moved = moved + weight * ops.take(flat, index)
            return moved[..., None]

        def _stroke(self, images: Any) -> Any:
            n = ops.shape(images)[0]
            amount = ops.reshape(self._uniform(n, self.augmentation.stroke), (-1, 1, 1, 1))
            thicker = ops.max_pool(images, 3, strides=1, padding="same")
            thinner = -ops.max_pool(-images, 3, strides=1, padding="same")
            target = ops.where(amount > 0, thicker, thinner)
            return images + ops.abs(amount) * (target - images)

        def call(self, images: Any, training: bool | None = None) -> Any:
            if not training:
                return images
            a = self.augmentation
            distorted = self._affine(images)
            if a.elastic_pixels > 0:
                distorted = self._elastic(distorted)
            if a.stroke > 0:
                distorted = self._stroke(distorted)
            distorted = ops.clip(distorted, 0.0, 1.0)
            if a.probability >= 1:
                return distorted
            n = ops.shape(images)[0]
            chosen = keras.random.uniform((n, 1, 1, 1), seed=self.generator) < a.probability
            return ops.where(chosen, distorted, images)

    return Distortion


def augmentation_model(augmentation: Augmentation, *, seed: int) -> Any:
    """(n, 784) -> (n, 784) distorted copies in training mode, the identity otherwise.

    A model of its own in front of the shared layers, not part of them: the exported model never
    holds a random op, so its ONNX graph is deterministic and matches the native model exactly.
    """
    import keras
    from keras import layers

    side = TILE_SIZE
    return keras.Sequential(
        [
            keras.Input((side * side,)),
            layers.Reshape((side, side, 1)),
            _distortion_layer()(augmentation, seed, name="distortion"),
            layers.Reshape((side * side,)),
        ],
        name="augmentation",
    )
