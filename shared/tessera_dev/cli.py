"""The `tessera` command line."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path


def _local_up(args: argparse.Namespace) -> int:
    from tessera_dev.local.runtime import LocalRuntime

    runtime = LocalRuntime(bucket=args.bucket, aws_port=args.aws_port, api_port=args.api_port)
    with runtime:
        print(json.dumps(runtime.describe()), flush=True)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
    return 0


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
        "up", help="run moto, the event pumps and the API in the foreground"
    )
    up.add_argument("--bucket", default="tessera-local")
    up.add_argument("--aws-port", type=int, default=0, help="0 picks a free port")
    up.add_argument("--api-port", type=int, default=0, help="0 picks a free port")
    up.set_defaults(run=_local_up)

    demo = commands.add_parser(
        "demo", help="the whole pipeline once, locally, ending in one JSON line"
    )
    demo.add_argument(
        "--mnist", type=Path, help="a folder of MNIST idx .gz files (default: sklearn's digits)"
    )
    demo.add_argument("--limit", type=int, default=6000, help="MNIST digits to use")
    demo.set_defaults(run=_demo)

    for name, about in (
        ("bench", "measure: tessera bench training|inference|sheets [options]"),
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
