"""`tessera bench sheets`: a 5000-cell sheet split and vectorized in one call, side by side with
the reference way (crop each piece, save it as a JPEG, reopen it, convert to grayscale, resize
to 28x28, write CSV rows), plus the peak memory of cutting a large photo.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tessera.config import PIPELINE
from tessera.imaging.decode import decode_image
from tessera.imaging.normalize import to_vectors
from tessera.sheets.cutting import cut_sheet
from tessera_dev.samples import data_dir, mnist, sklearn_digits
from tessera_dev.synthetic import SheetStyle, make_sheet


def reference_way(data: bytes, rows: int, cols: int, folder: Path) -> int:
    """The notebook way: every piece goes through a JPEG file and a CSV row."""
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    cell_w, cell_h = width // cols, height // rows
    written = 0
    with open(folder / "rows.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        for r in range(rows):
            for c in range(cols):
                piece = image.crop((c * cell_w, r * cell_h, (c + 1) * cell_w, (r + 1) * cell_h))
                path = folder / f"{r}_{c}.jpg"
                piece.convert("RGB").save(path, format="JPEG")
                with Image.open(path) as reopened:
                    small = reopened.convert("L").resize((28, 28))
                writer.writerow([r // 5, *np.asarray(small).reshape(-1).tolist()])
                written += 1
    return written


def tessera_way(data: bytes) -> int:
    """Decode, find the grid, cut, clean and normalize every cell in one call; vectors out."""
    cutting = cut_sheet(decode_image(data))
    normalized, present = cutting.normalized()
    vectors = to_vectors(normalized[present])
    return int(vectors.shape[0])


def _best_of(runs: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def _large_photo(width: int, height: int) -> bytes:
    """A photographed 10x10 sheet at camera resolution, JPEG as a phone saves it."""
    try:
        glyphs = mnist(data_dir() / "mnist", split="test")
        ink, labels = glyphs.ink, glyphs.labels
    except FileNotFoundError:
        digits = sklearn_digits()
        ink, labels = digits.ink, digits.labels
    cell = min(width, height) // 12
    sheet = make_sheet(
        ink, labels, rows=10, cols=10, seed=7, style=SheetStyle(cell=cell, margin=cell // 2)
    )
    image = Image.fromarray(np.rint(sheet.image * 255).astype(np.uint8), mode="L")
    image = image.resize((width, height), Image.Resampling.BILINEAR).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tessera bench sheets", description=__doc__)
    parser.add_argument("--sheet", type=Path, default=None, help="default: the 5000-cell sheet")
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs; best of each")
    parser.add_argument("--photo", default="4000x3000", help="large photo size for memory")
    args = parser.parse_args(argv)
    sheet = args.sheet or data_dir() / "sheets" / "opencv_digits_5000_grid.png"
    data = sheet.read_bytes()

    ours_count = tessera_way(data)
    reference, ours = float("inf"), float("inf")
    with tempfile.TemporaryDirectory() as folder:
        reference_count = reference_way(data, 50, 100, Path(folder))
        # Interleaved, so both ways see the same load on a shared machine.
        for _ in range(args.runs):
            reference = min(
                reference, _best_of(1, lambda: reference_way(data, 50, 100, Path(folder)))
            )
            ours = min(ours, _best_of(1, lambda: tessera_way(data)))

    width, height = (int(v) for v in args.photo.lower().split("x"))
    photo = _large_photo(width, height)
    tracemalloc.start()
    start = time.perf_counter()
    cutting = cut_sheet(decode_image(photo))
    cutting.normalized()
    photo_seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    process = _fresh_process_peak(photo)

    rows = [
        ("way", "cells", "seconds", "cells/s", "ratio"),
        (
            "reference (crop, JPEG, reopen, gray, resize, CSV)",
            str(reference_count),
            f"{reference:.3f}",
            f"{reference_count / reference:,.0f}",
            "1.0x",
        ),
        (
            "tessera cut_sheet + normalize (one call)",
            str(ours_count),
            f"{ours:.3f}",
            f"{ours_count / ours:,.0f}",
            f"{reference / ours:.1f}x",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    print(f"sheet: {sheet.name}, best of {args.runs}")
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    print(
        f"large photo {width}x{height} JPEG ({len(photo) / 1e6:.1f} MB), a 10x10 ruled sheet: "
        f"found {cutting.rows}x{cutting.cols} ({cutting.grid_source}), {photo_seconds:.2f} s"
    )
    print(
        f"  memory: numpy peak {peak / 2**20:.0f} MiB (tracemalloc); a fresh process peaks at "
        f"{process['peak_mib']:.0f} MiB RSS, {process['imports_mib']:.0f} MiB of it after imports "
        f"alone (what a Lambda's memory limit counts; split has {_split_memory_mb()} MB)"
    )
    return 0


def _split_memory_mb() -> int:
    return next(q.function_memory_mb for q in PIPELINE.queues if q.function == "split")


# Run in a fresh interpreter that imports only what the split function imports, so its peak
# RSS is what the function's memory limit would see.
_PHOTO_PEAK = """
import json, sys
from pathlib import Path
from tessera.imaging import decode_image
from tessera.segmentation import cut_sheet

def high_water_mib():
    # VmHWM is this process's own peak; ru_maxrss can carry the parent's over a fork.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

imports = high_water_mib()
cutting = cut_sheet(decode_image(Path(sys.argv[1]).read_bytes()))
cutting.normalized()
print(json.dumps({"imports_mib": imports, "peak_mib": high_water_mib()}))
"""


def _fresh_process_peak(photo: bytes) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "photo.jpg"
        path.write_bytes(photo)
        done = subprocess.run(
            [sys.executable, "-c", _PHOTO_PEAK, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures
