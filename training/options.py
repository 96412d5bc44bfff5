"""The training job's options, typed: from the command line, with defaults from the environment
(the container's job definition sets some), and as recorded in each version's config."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tessera.config import DEFAULT_FAMILY, Env
from training.families import FAMILIES, TRANSFER

ENTRY_POINT_HELP = """The training job: the same command runs in the container and locally.

    python -m training.train --dataset digits [--dataset more] [--csv PATH] [--mnist DIR]
        [--family mlp|dense|cnn|cnn-strong|all] [--search none|halving|exhaustive]
        [--no-review]
"""


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """What one run trains on and how; field names are the command line's option names."""

    bucket: str
    dataset: tuple[str, ...] = ()
    csv: tuple[Path, ...] = ()
    mnist: Path | None = None
    mnist_download: Path | None = None
    mnist_limit: int | None = None
    model_name: str | None = None
    base_model: str | None = None
    run_id: str | None = None
    family: str = DEFAULT_FAMILY
    search: str = "none"
    search_rows: int = 10_000
    search_grid: str = "reference"
    # The exhaustive search fanned out (training.fanout): workers this job starts as local
    # processes, or shards an array job already scored, or this process is one worker (i/N).
    search_workers: int = 0
    search_shards: int = 0
    search_shard: str | None = None
    epochs: int | None = None
    jobs: int = 2
    test_size: float = 0.2
    seed: int = 0
    review: bool = True

    def as_config(self) -> dict[str, Any]:
        """JSON-ready, as each version's config.json records the arguments it was trained with."""

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):
                return [plain(item) for item in value]
            return value

        return {name: plain(value) for name, value in asdict(self).items()}


def parse_args(argv: list[str] | None = None) -> TrainOptions:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=ENTRY_POINT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ.get
    source = parser.add_argument_group("data (at least one; all given are merged)")
    source.add_argument(
        "--dataset", action="append", default=[], help="dataset name in the bucket; repeatable"
    )
    source.add_argument(
        "--csv", action="append", default=[], type=Path, help="a CSV file (either layout)"
    )
    source.add_argument("--mnist", type=Path, help="a folder of MNIST idx .gz files")
    source.add_argument(
        "--mnist-download", type=Path, help="download MNIST (checksum-verified) into this folder"
    )
    source.add_argument("--mnist-limit", type=int, help="use this many MNIST training rows")
    parser.add_argument("--model-name", help="registry name (default: the first dataset)")
    parser.add_argument(
        "--base-model",
        default=env(Env.BASE_MODEL),
        help="transfer from this model's champion (--family transfer, or all)",
    )
    parser.add_argument("--bucket", default=env(Env.BUCKET))
    parser.add_argument(
        "--run-id", default=env(Env.RUN_ID), help="status under runs/<id>/ (default: new)"
    )
    parser.add_argument(
        "--family",
        default=env(Env.FAMILY, DEFAULT_FAMILY),
        choices=[*FAMILIES, TRANSFER, "all"],
    )
    parser.add_argument(
        "--search",
        default=env(Env.SEARCH, "none"),
        choices=["none", "halving", "exhaustive"],
        help="MLP hyper-parameter search over the reference grid (default: none)",
    )
    parser.add_argument("--search-rows", type=int, default=int(env(Env.SEARCH_ROWS, "10000")))
    parser.add_argument(
        "--search-grid",
        default="reference",
        choices=["reference", "quick"],
        help="the reference notebook's 144 candidates, or 4 for a smoke test",
    )
    parser.add_argument(
        "--search-workers",
        type=int,
        default=0,
        help="exhaustive search: score the grid in this many local worker processes "
        "(default 0: in this process, GridSearchCV)",
    )
    parser.add_argument(
        "--search-shards",
        type=int,
        default=int(env(Env.SEARCH_SHARDS, "0")),
        help="exhaustive search: gather the scores of this many workers that already ran "
        "(the workflow's array job)",
    )
    parser.add_argument(
        "--search-shard",
        metavar="I/N",
        default=env(Env.SEARCH_SHARD) or None,
        help="be worker I of N: score that slice of the grid, write it under runs/<id>/search/ "
        "and stop (-/N: I from AWS_BATCH_JOB_ARRAY_INDEX)",
    )
    parser.add_argument("--epochs", type=int, help="override the family's epoch budget")
    parser.add_argument("--jobs", type=int, default=int(env(Env.JOBS, "2")))
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=int(env(Env.SEED, "0")))
    parser.add_argument(
        "--review",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rank suspected label errors and unsure tiles into each version's review.json",
    )
    args = parser.parse_args(argv)
    fanned = args.search_workers > 0 or args.search_shards > 0 or args.search_shard
    if fanned and args.search != "exhaustive":
        parser.error(
            "--search-workers, --search-shards and --search-shard go with --search exhaustive"
        )
    if args.search_workers < 0 or args.search_shards < 0:
        parser.error("--search-workers and --search-shards are counts (0: not fanned out)")
    if args.search_workers and args.search_shards:
        parser.error("--search-workers starts workers, --search-shards gathers theirs: not both")
    if (args.search_shard or args.search_shards) and not args.run_id:
        parser.error(
            "a fanned-out search needs --run-id (or TESSERA_RUN_ID): its shards live there"
        )
    if not args.bucket:
        parser.error("no bucket: pass --bucket or set TESSERA_BUCKET")
    if not (args.dataset or args.csv or args.mnist or args.mnist_download):
        parser.error("no data: pass --dataset, --csv, --mnist or --mnist-download")
    return TrainOptions(
        **{
            **vars(args),
            "dataset": tuple(args.dataset),
            "csv": tuple(args.csv),
        }
    )
