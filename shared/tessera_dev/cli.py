"""The `tessera` command line."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as BotoClientError

from tessera.config import DEFAULT_FAMILY, PIPELINE
from tessera.errors import CodedError
from tessera.serving.train_request import TRAINABLE
from tessera_dev.local.persistence import SNAPSHOT_SECONDS

# Where `tessera local up` keeps its bucket between runs (TESSERA_DATA_DIR names the reference
# data folder, so the runtime's has a name of its own).
LOCAL_DATA_DIR_ENV = "TESSERA_LOCAL_DATA_DIR"
DEFAULT_LOCAL_DATA_DIR = Path("~/.tessera/data")


def _local_up(args: argparse.Namespace) -> int:
    from tessera_dev import client
    from tessera_dev.local.persistence import DataDirError
    from tessera_dev.local.runtime import LocalRuntime

    runtime = LocalRuntime(
        bucket=args.bucket,
        aws_port=args.aws_port,
        api_port=args.api_port,
        data_dir=None if args.ephemeral else args.data_dir.expanduser(),
    )
    try:
        runtime.start()
    except DataDirError as error:
        print(f"tessera: {error}", file=sys.stderr)
        return 1
    try:
        described = runtime.describe()
        client.record_local(described)
        print(json.dumps(described), flush=True)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
    finally:
        client.LOCAL_STATE.unlink(missing_ok=True)
        runtime.stop()  # the last snapshot, on Ctrl-C and SIGTERM alike
    if runtime.unsaved_on_stop:
        print(
            f"tessera: data directory {args.data_dir}: {len(runtime.unsaved_on_stop)} object(s) "
            "could not be saved (is it full?); they are lost",
            file=sys.stderr,
        )
        return 1
    return 0


def _client_command(args: argparse.Namespace) -> int:
    """The client commands: the same against the local runtime and a deployed stack."""
    from tessera_dev import client

    def progress(message: str) -> None:
        print(f"[tessera] {message}", file=sys.stderr, flush=True)

    try:
        target = client.stack_target(args.stack) if args.stack else client.local_target()
        result: Any
        if args.command == "drop":
            result = {
                "key": client.drop(
                    target,
                    args.sheet,
                    dataset=args.dataset,
                    grid=args.grid,
                    labels=args.labels.split() if args.labels else None,
                    row_labels=args.row_labels.split() if args.row_labels else None,
                    label=args.label,
                    predict=args.predict,
                    model=args.model,
                )
            }
        elif args.command == "predict":
            result = client.predict(target, args.image, model=args.model, top_k=args.top_k)
        elif args.command == "train":
            result = client.train(
                target,
                datasets=args.dataset,
                family=args.family,
                wait=args.wait,
                progress=progress,
            )
        elif args.command == "status":
            result = client.status(target, args.run_id)
        elif args.command == "models":
            result = client.models(target)
        elif args.command == "champion":
            result = client.set_champion(target, args.model, args.version)
        else:
            result = {"moved": client.redrive(target, function=args.queue)}
    except (CodedError, ValueError, BotoCoreError, BotoClientError) as error:
        message = f"{error.code}: {error.message}" if isinstance(error, CodedError) else str(error)
        print(f"tessera: {message}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=str), flush=True)
    failed = args.command == "train" and result.get("status") == "failed"
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    from tessera_dev.local.demo import run_demo

    summary = run_demo(mnist_dir=args.mnist, limit=args.limit)
    print(json.dumps(summary), flush=True)
    return 0


def _delegate(package: str) -> Callable[[argparse.Namespace], int]:
    """`tessera bench NAME ...` runs tessera_dev.bench.NAME.main(rest); likewise `tessera eval`."""

    def run(args: argparse.Namespace) -> int:
        try:
            module = importlib.import_module(f"tessera_dev.{package}.{args.name.replace('-', '_')}")
        except ModuleNotFoundError as error:
            if error.name and error.name.startswith(f"tessera_dev.{package}."):
                print(f"tessera: no such {package}: {args.name}", file=sys.stderr)
                return 2
            raise
        return int(module.main(args.rest))

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="the local embedded runtime")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    up = local_commands.add_parser(
        "up",
        help="run moto, the event pumps and the API in the foreground",
        description="Run moto, the event pumps and the API in the foreground. The bucket is kept "
        "in --data-dir (one file per object, under <data-dir>/<bucket>/) and restored on the next "
        "start; sheets whose processing had not finished are processed then. A snapshot is "
        f"taken every {SNAPSHOT_SECONDS:g} s and on Ctrl-C or SIGTERM, so a SIGKILL loses at "
        f"most the last {SNAPSHOT_SECONDS:g} s of writes. --ephemeral keeps everything in "
        "memory only.",
    )
    up.add_argument("--bucket", default="tessera-local")
    up.add_argument("--aws-port", type=int, default=0, help="0 picks a free port")
    up.add_argument("--api-port", type=int, default=0, help="0 picks a free port")
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get(LOCAL_DATA_DIR_ENV) or DEFAULT_LOCAL_DATA_DIR),
        help=f"where the bucket is kept (default: ${LOCAL_DATA_DIR_ENV} or "
        f"{DEFAULT_LOCAL_DATA_DIR})",
    )
    up.add_argument(
        "--ephemeral", action="store_true", help="keep nothing: the bucket lives in memory only"
    )
    up.set_defaults(run=_local_up)

    demo = commands.add_parser(
        "demo", help="the whole pipeline once, locally, ending in one JSON line"
    )
    demo.add_argument(
        "--mnist", type=Path, help="a folder of MNIST idx .gz files (default: sklearn's digits)"
    )
    demo.add_argument("--limit", type=int, default=6000, help="MNIST digits to use")
    demo.set_defaults(run=_demo)

    def client_parser(name: str, about: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=about)
        command.add_argument(
            "--stack", help="a deployed stack's name (default: the local runtime `local up` runs)"
        )
        command.set_defaults(run=_client_command)
        return command

    drop = client_parser("drop", "drop a sheet with its labels (a manifest when metadata cannot)")
    drop.add_argument("sheet", type=Path)
    drop.add_argument("--dataset", default=PIPELINE.default_dataset)
    drop.add_argument("--grid", help="ROWSxCOLS; default: from the file name or the page")
    drop.add_argument("--labels", help='one label per cell, separated by spaces: "a b c d"')
    drop.add_argument("--row-labels", help='one label per row: "0 1 2 3"')
    drop.add_argument("--label", help="one label for every cell")
    drop.add_argument("--predict", action="store_true", help="for batch predictions instead")
    drop.add_argument("--model", help="with --predict: the model (default: the default one)")
    predict = client_parser("predict", "predict one image of one symbol")
    predict.add_argument("image", type=Path)
    predict.add_argument("--model")
    predict.add_argument("--top-k", type=int, default=3)
    train = client_parser("train", "start training; --wait follows it to its end")
    train.add_argument("--dataset", action="append", default=[], required=True)
    train.add_argument(
        "--family",
        default=DEFAULT_FAMILY,
        choices=TRAINABLE,
        help="what to fit (default mlp); deployed with tessera:gpu, Keras families run on GPUs",
    )
    train.add_argument("--wait", action="store_true")
    status = client_parser("status", "a training run's status")
    status.add_argument("run_id")
    client_parser("models", "models, versions, metrics and champions")
    champion = client_parser("champion", "set a model's champion (roll back or forward)")
    champion.add_argument("model")
    champion.add_argument("version")
    redrive = client_parser("redrive", "move dead-lettered messages back to their queues")
    redrive.add_argument("--queue", help="split, vectorize or batch_predict (default: all)")

    for name, about in (
        (
            "bench",
            "measure: tessera bench training|inference|sheets|loading|soak|ingest|search [options]",
        ),
        ("eval", "evaluate: tessera eval sheets [options]"),
    ):
        command = commands.add_parser(name, help=about, add_help=False)
        command.add_argument("name")
        command.add_argument("rest", nargs=argparse.REMAINDER)
        command.set_defaults(run=_delegate("bench" if name == "bench" else "evaluation"))
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
