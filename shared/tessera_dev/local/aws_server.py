"""moto's server in a process of its own, so the local runtime uses two cores.

In one interpreter the functions' botocore calls and moto's answers to them took turns on the
one GIL: a burst of tile PUTs kept one core busy and left the other idle (measured: 1.08 cores
of 2 for 10,000 tiles). Here the server runs as

    python -m tessera_dev.local.aws_server --host 127.0.0.1 --port 0 [--middleware MOD:NAME]

prints `{"port": N}` on its first line once it listens, and serves until its standard input
closes: the runtime holds the other end, so the server goes with the runtime however that ends
(a stop, an exception, a SIGKILL) and never outlives it holding the port.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import IO, Any

START_SECONDS = 30.0
STOP_SECONDS = 5.0


def list_moto_modules_once() -> None:
    """moto's server, on every request, lists moto's package directory and stats each of its
    ~180 entries to see whether the Host header names a service (`host in
    list_of_moto_modules()` in moto.moto_server.werkzeug_app, moto 5.2.5): about a fifth of
    the busy time under a burst of tile PUTs, for a list that cannot change while it runs.
    Listed once instead; the server's answers are the same."""
    import moto.backends

    listing = moto.backends.list_of_moto_modules
    if not hasattr(listing, "cache_info"):
        moto.backends.list_of_moto_modules = functools.cache(lambda: tuple(listing()))


def _middleware(name: str | None) -> Any:
    """`module:attribute`, a callable that wraps a WSGI app (a benchmark's request counter)."""
    if not name:
        return None
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


def serve(host: str, port: int, middleware: str | None, ready: IO[str], stop: IO[str]) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    # moto's werkzeug server logs every request at INFO: noise next to the pipeline's own logs.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    list_moto_modules_once()
    app: Any = DomainDispatcherApplication(create_backend_app)
    wrap = _middleware(middleware)
    if wrap is not None:
        app = wrap(app)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)

    def shut_down_when_input_ends() -> None:
        stop.read()
        server.shutdown()

    threading.Thread(target=shut_down_when_input_ends, daemon=True).start()
    ready.write(json.dumps({"port": server.server_address[1]}) + "\n")
    ready.flush()
    server.serve_forever()


@dataclass
class AwsServer:
    """The runtime's end of the server process."""

    host: str = "127.0.0.1"
    port: int = 0
    middleware: str | None = None
    _process: subprocess.Popen[str] | None = field(default=None, repr=False)
    _port: int | None = None

    @property
    def endpoint(self) -> str:
        assert self._port is not None, "the server is not started"
        return f"http://{self.host}:{self._port}"

    def start(self) -> AwsServer:
        command = [sys.executable, "-m", __name__, "--host", self.host, "--port", str(self.port)]
        if self.middleware:
            command += ["--middleware", self.middleware]
        # The child finds this package where the parent found it.
        path = os.pathsep.join(p for p in sys.path if p)
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": path},
            # Out of the terminal's process group: Ctrl-C reaches the runtime, which takes its
            # last snapshot from this server before it closes its input; not the server first.
            start_new_session=True,
        )
        assert self._process.stdout is not None
        line = _read_line(self._process.stdout, START_SECONDS)
        try:
            self._port = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            self.stop()
            raise RuntimeError(
                f"moto's server did not start on {self.host}:{self.port} (it said {line!r})"
            ) from None
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the server shuts down when its input ends
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _read_line(stream: IO[str], timeout: float) -> str:
    """The first line, or "" if none comes in time (a port in use ends the child at once)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0].strip() if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tessera_dev.local.aws_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--middleware", help="module:callable wrapping the WSGI app")
    args = parser.parse_args(argv)
    # Interrupts are the runtime's to handle: it stops this server when it is done with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(args.host, args.port, args.middleware, sys.stdout, sys.stdin)
    except OSError as error:  # the port is taken, the address is not this machine's
        print(json.dumps({"error": str(error)}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
