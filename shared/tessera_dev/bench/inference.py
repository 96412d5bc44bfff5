"""`tessera bench inference`: serving speed against the reference way, side by side in one run.

    tessera bench inference [--mnist DIR] [--train-rows 10000] [--requests 3000]
                            [--load-requests 10000 --clients 50] [--skip-load] [--skip-bundle]

Measures, on this machine:
- the in-process `/predict` handler for one 28x28 PNG (decode, normalize, ONNX, JSON, Powertools)
  against the reference way on the same input and preprocessing: an unpickled scikit-learn MLP's
  `predict_proba` and Keras `model.predict`; and the model call alone for each;
- cold start: a fresh process importing the handler and answering its first prediction (model
  read from S3 on loopback) against a fresh process importing TensorFlow;
- `/similar` top-10 over the training rows' embeddings (60,000 with MNIST);
- batch predictions per second for 1,000 tiles in one call;
- the inference function's Lambda bundle (manylinux, CPython 3.12) unzipped;
- load on the local HTTP API: concurrent clients over loopback, errors and p99.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

from tessera.imaging.decode import decode_image, encode_png
from tessera.imaging.normalize import model_input, normalize_tile

MODEL_NAME = "digits"
BUNDLE_LIMIT_MB = 150.0
HIDDEN = 128


@dataclass(frozen=True)
class Figure:
    measure: str
    tessera: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    met: str = ""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    values = np.asarray(samples)
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _time_calls(call: Callable[[], object], count: int, *, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Digits:
    x: NDArray[np.float32]  # (n, 784) in [0, 1]
    labels: NDArray[np.str_]
    test_images: NDArray[np.float32]  # (m, 28, 28) ink in [0, 1]
    source: str


def _load_digits(mnist_dir: Path | None, train_rows: int) -> Digits:
    from tessera_dev.samples import data_dir, mnist, sklearn_digits

    directory = mnist_dir or data_dir() / "mnist"
    if (directory / "train-images-idx3-ubyte.gz").exists():
        train = mnist(directory, split="train")
        test = mnist(directory, split="test")
        x = train.ink.reshape(len(train.ink), -1).astype(np.float32)
        return Digits(x=x, labels=train.labels, test_images=test.ink[:200], source="MNIST")
    # Without MNIST: sklearn's 8x8 digits, upsampled and normalized like any tile.
    glyphs = sklearn_digits()
    rows = []
    for ink in glyphs.ink:
        tile = np.kron(ink, np.ones((3, 3), dtype=np.float32))
        normalized = normalize_tile(tile)
        rows.append(model_input(normalized) if normalized is not None else np.zeros(784))
    x = np.stack(rows).astype(np.float32)
    images = x[:200].reshape(-1, 28, 28)
    return Digits(x=x, labels=glyphs.labels, test_images=images, source="sklearn digits")


def _fit_models(digits: Digits, train_rows: int) -> tuple[Any, bytes, Any]:
    """The reference MLP (scaler + MLPClassifier pipeline) exported to ONNX, and a Keras dense
    net of the same shape."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from training.export import sklearn_to_onnx

    rows = min(train_rows, len(digits.x))
    x, y = digits.x[:rows], digits.labels[:rows]
    pipeline = Pipeline(
        [
            ("scale", StandardScaler(with_std=False)),
            ("mlp", MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=15, random_state=0)),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(x, y)
    classes = [str(label) for label in pipeline.classes_]
    onnx_model = sklearn_to_onnx(pipeline, classes=classes)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras_model = keras.Sequential(
        [
            keras.Input(shape=(784,)),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(len(classes), activation="softmax"),
        ]
    )
    keras_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    keras_model.fit(x, np.searchsorted(classes, y), epochs=1, batch_size=256, verbose=0)
    return pipeline, onnx_model, keras_model


def _embeddings_npz(onnx_model: bytes, digits: Digits) -> tuple[bytes, int]:
    from tessera.serving.model import OnnxClassifier
    from tessera.serving.similarity import encode_index

    classifier = OnnxClassifier.from_bytes(onnx_model, name=MODEL_NAME, version="bench")
    embeddings = np.concatenate(
        [classifier.embed(digits.x[i : i + 4096]) for i in range(0, len(digits.x), 4096)]
    )
    sources = [f"tiles/mnist/train/{i:05d}.png" for i in range(len(digits.x))]
    return encode_index(embeddings, digits.labels, sources), len(embeddings)


def _publish(store: Any, onnx_model: bytes, npz: bytes, *, train_accuracy: float) -> str:
    from tessera.registry import (
        EMBEDDINGS_FILE,
        METRICS_FILE,
        MODEL_FILE,
        ModelRegistry,
        new_version,
    )

    registry = ModelRegistry(store, MODEL_NAME)
    version = new_version(hashlib.sha256(onnx_model).hexdigest())
    registry.put_artifact(version, EMBEDDINGS_FILE, npz, "application/octet-stream")
    metrics = json.dumps({"train_accuracy": train_accuracy}).encode()
    registry.put_artifact(version, METRICS_FILE, metrics, "application/json")
    registry.put_artifact(version, MODEL_FILE, onnx_model, "application/octet-stream")
    # The serving benchmark measures speed, not accuracy: its pointer records the accuracy on
    # the rows the model was fitted on, and says so.
    registry.promote(
        version, accuracy=train_accuracy, evaluation={"rows": "training rows of the bench"}
    )
    return version


def _api_event(path: str, body: dict[str, Any]) -> dict[str, Any]:
    from tessera_dev.local.api import proxy_event

    return proxy_event(
        method="POST",
        target=path,
        headers={"content-type": "application/json"},
        body=json.dumps(body).encode(),
        source_ip="127.0.0.1",
    )


def _in_process(
    args: argparse.Namespace, digits: Digits, pipeline: Any, onnx_model: bytes, keras_model: Any
) -> tuple[list[Figure], dict[str, float]]:
    from functions.inference import handler
    from tessera_dev.local.pump import LocalLambdaContext

    context: Any = LocalLambdaContext(function_name="inference")
    png = encode_png(1.0 - digits.test_images[0])  # dark ink on paper, as a camera sees it
    event = _api_event("/predict", {"image": base64.b64encode(png).decode()})
    reply = handler.lambda_handler(event, context)
    assert reply["statusCode"] == 200, reply

    def preprocess() -> NDArray[np.float32]:
        normalized = normalize_tile(decode_image(png))
        assert normalized is not None
        return model_input(normalized)[np.newaxis, :]

    unpickled = pickle.loads(pickle.dumps(pipeline))
    x = preprocess()
    model = handler.cache_for(MODEL_NAME).get()
    n = args.requests
    _progress(f"timing {n} in-process /predict calls and the baselines")
    # Ours first, Keras last: TensorFlow's worker threads keep spinning after a predict and
    # would slow whatever is timed next on a 2-core machine.
    ours = _time_calls(lambda: handler.lambda_handler(event, context), n)
    ours_model = _time_calls(lambda: model.probabilities(x), n)
    preprocessing = _time_calls(preprocess, n)
    sklearn_path = _time_calls(lambda: unpickled.predict_proba(preprocess()), n)
    sklearn_model = _time_calls(lambda: unpickled.predict_proba(x), n)
    later = _similar_and_batch(handler, context, png, digits, model, unpickled, preprocess, n)
    keras_n = max(50, n // 10)
    keras_path = _time_calls(
        lambda: keras_model.predict(preprocess(), verbose=0), keras_n, warmup=10
    )
    keras_model_only = _time_calls(lambda: keras_model.predict(x, verbose=0), keras_n, warmup=10)

    p50, p99 = _percentiles(ours)
    s50, s99 = _percentiles(sklearn_path)
    k50, k99 = _percentiles(keras_path)
    figures = [
        Figure(
            "/predict one 28x28 PNG, in-process handler p50 (vs pickled MLP predict_proba)",
            _ms(p50),
            _ms(s50),
            f"{s50 / p50:.1f}x",
            "<= 0.5 ms, >= 5x",
            "yes" if p50 <= 0.0005 and s50 / p50 >= 5 else "no",
        ),
        Figure(
            "/predict one 28x28 PNG, in-process handler p50 (vs Keras model.predict)",
            _ms(p50),
            _ms(k50),
            f"{k50 / p50:.0f}x",
            ">= 100x",
            "yes" if k50 / p50 >= 100 else "no",
        ),
        Figure("/predict p99 (vs MLP / Keras)", _ms(p99), f"{_ms(s99)} / {_ms(k99)}"),
        Figure(
            "  of which decode + normalize (same code on every path), p50",
            _ms(_percentiles(preprocessing)[0]),
        ),
        *_model_only(ours_model, sklearn_model, keras_model_only),
        *later,
    ]
    return figures, {"p50": p50}


def _model_only(
    ours: list[float], sklearn_model: list[float], keras_model: list[float]
) -> list[Figure]:
    figures = []
    o50 = _percentiles(ours)[0]
    for label, theirs in (
        ("pickled MLP predict_proba", sklearn_model),
        ("Keras predict", keras_model),
    ):
        t50 = _percentiles(theirs)[0]
        figures.append(
            Figure(
                f"  model call alone, p50: onnxruntime vs {label}",
                _ms(o50),
                _ms(t50),
                f"{t50 / o50:.1f}x",
            )
        )
    return figures


def _similar_and_batch(
    handler: Any,
    context: Any,
    png: bytes,
    digits: Digits,
    model: Any,
    unpickled: Any,
    preprocess: Callable[[], NDArray[np.float32]],
    n: int,
) -> list[Figure]:
    from tessera.pipeline.batch_predictions import predict_tiles

    # /similar over every training row's embedding.
    figures = []
    similar_event = _api_event("/similar", {"image": base64.b64encode(png).decode(), "k": 10})
    reply = handler.lambda_handler(similar_event, context)
    assert reply["statusCode"] == 200, reply
    rows = len(handler.cache_for(MODEL_NAME).similarity()[1])
    similar = _time_calls(lambda: handler.lambda_handler(similar_event, context), max(200, n // 5))
    m50, m99 = _percentiles(similar)
    figures.append(
        Figure(
            f"/similar top-10 over {rows:,} embeddings, handler p50 (p99)",
            f"{_ms(m50)} ({_ms(m99)})",
            goal="<= 5 ms",
            met="yes" if m50 <= 0.005 else "no",
        )
    )

    # Batch: 1,000 tiles normalized and predicted in one call.
    tiles = [1.0 - image for image in np.resize(digits.test_images, (1000, 28, 28))]
    batch_runs = _time_calls(lambda: predict_tiles(model, tiles), 5, warmup=1)
    batch_time = statistics.median(batch_runs)
    x_batch = np.stack([preprocess()[0]] * 1000)
    model_batch = statistics.median(_time_calls(lambda: model.probabilities(x_batch), 20, warmup=2))
    sklearn_batch = statistics.median(
        _time_calls(lambda: unpickled.predict_proba(x_batch), 20, warmup=2)
    )
    figures.append(
        Figure(
            "batch: 1,000 tiles normalized + predicted in one call",
            f"{1000 / batch_time:,.0f} tiles/s",
        )
    )
    figures.append(
        Figure(
            "  model call alone on 1,000 rows (vs pickled MLP)",
            f"{1000 / model_batch:,.0f} rows/s",
            f"{1000 / sklearn_batch:,.0f} rows/s",
            f"{sklearn_batch / model_batch:.1f}x",
        )
    )
    return figures


_COLD_SCRIPT = """
import json, time
start = time.perf_counter()
from functions.inference.handler import lambda_handler
imported = time.perf_counter()
from tessera_dev.local.pump import LocalLambdaContext
event = json.loads(open({event!r}).read())
reply = lambda_handler(event, LocalLambdaContext(function_name="inference"))
done = time.perf_counter()
timings = {{"import": imported - start, "first": done - imported}}
print(json.dumps({{"status": reply["statusCode"], **timings}}))
"""


def _cold_start(event: dict[str, Any], env: dict[str, str], runs: int) -> list[Figure]:
    with tempfile.TemporaryDirectory() as folder:
        event_path = Path(folder) / "event.json"
        event_path.write_text(json.dumps(event))
        script = _COLD_SCRIPT.format(event=str(event_path))
        ours, details = [], []
        for _ in range(runs):
            start = time.perf_counter()
            completed = subprocess.run(
                [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
            )
            ours.append(time.perf_counter() - start)
            details.append(json.loads(completed.stdout.strip().splitlines()[-1]))
            assert details[-1]["status"] == 200, completed.stdout
        theirs = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", "import tensorflow"],
                env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                capture_output=True,
                check=True,
            )
            theirs.append(time.perf_counter() - start)
    o, t = statistics.median(ours), statistics.median(theirs)
    return [
        Figure(
            f"cold start: new process, import handler, first /predict (median of {runs})",
            f"{o:.3f} s",
            f"{t:.3f} s (import tensorflow)",
            f"{t / o:.1f}x",
            "<= 0.5 s, >= 5x",
            "yes" if o <= 0.5 and t / o >= 5 else "no",
        ),
        Figure(
            "  of which import / first request (model GET from S3 + session + predict)",
            f"{statistics.median(d['import'] for d in details):.3f} s / "
            f"{statistics.median(d['first'] for d in details):.3f} s",
        ),
    ]


def _bundle_size() -> list[Figure]:
    """The inference function's bundle exactly as `cdk synth` builds it (infra/bundling.py)."""
    from infra.bundling import FunctionBundler
    from infra.function import REQUIREMENTS_BY_FUNCTION

    requirements = REQUIREMENTS_BY_FUNCTION["inference"]
    _progress(f"bundling the inference function as cdk synth does ({requirements.name})")
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "bundle"
        bundle.mkdir()
        FunctionBundler(function="inference", requirements=requirements).try_bundle(str(bundle))
        unzipped = sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())
        archive = Path(folder) / "bundle.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in sorted(bundle.rglob("*")):
                if path.is_file():
                    zipped.write(path, path.relative_to(bundle))
        zipped_size = archive.stat().st_size
        forbidden = sorted(
            name for name in ("tensorflow", "sklearn", "scipy", "keras") if (bundle / name).exists()
        )
    mb = unzipped / 1e6
    return [
        Figure(
            f"inference bundle ({requirements.name}, manylinux, cp312), unzipped",
            f"{mb:.1f} MB (zip {zipped_size / 1e6:.1f} MB)",
            goal=f"<= {BUNDLE_LIMIT_MB:.0f} MB, no TF/sklearn/SciPy",
            met="yes" if mb <= BUNDLE_LIMIT_MB and not forbidden else f"no {forbidden}",
        )
    ]


def _load(runtime: Any, png: bytes, *, total: int, clients: int) -> list[Figure]:
    body = json.dumps({"image": base64.b64encode(png).decode()}).encode()
    url = urlsplit(runtime.api_url)
    api_host, api_port = url.hostname or "127.0.0.1", url.port
    counter = iter(range(total))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection(api_host, api_port, timeout=60)
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            start = time.perf_counter()
            try:
                connection.request(
                    "POST", "/predict", body=body, headers={"content-type": "application/json"}
                )
                response = connection.getresponse()
                data = response.read()
                if response.status != 200 or b'"label"' not in data:
                    errors.append(f"{response.status} {data[:200]!r}")
            except (OSError, http.client.HTTPException) as error:
                errors.append(repr(error))
                connection.close()
                connection = http.client.HTTPConnection(api_host, api_port, timeout=60)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
        connection.close()

    _progress(f"load: {clients} clients, {total} requests on {runtime.api_url}")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    p50, p99 = _percentiles(latencies)
    return [
        Figure(
            f"load on the local HTTP API: {clients} clients, {total:,} requests",
            f"{len(errors)} errors, p50 {_ms(p50)}, p99 {_ms(p99)}, {total / wall:,.0f} req/s",
            goal="zero errors",
            met="yes" if not errors else f"no: {errors[:3]}",
        )
    ]


def _table(figures: list[Figure]) -> str:
    headers = ("measure", "tessera (onnxruntime)", "baseline", "ratio", "goal", "met")
    rows = [headers] + [(f.measure, f.tessera, f.baseline, f.ratio, f.goal, f.met) for f in figures]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join(" --- " for _ in headers) + "|")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tessera bench inference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mnist", type=Path, help="folder of MNIST idx .gz files")
    parser.add_argument("--train-rows", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--load-requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-bundle", action="store_true")
    args = parser.parse_args(argv)

    from tessera.storage.s3 import S3ObjectStore
    from tessera_dev.local.runtime import LocalRuntime

    digits = _load_digits(args.mnist, args.train_rows)
    rows_used = min(args.train_rows, len(digits.x))
    _progress(f"fitting the MLP and the Keras net on {rows_used} {digits.source} rows")
    pipeline, onnx_model, keras_model = _fit_models(digits, args.train_rows)
    npz, rows = _embeddings_npz(onnx_model, digits)
    png = encode_png(1.0 - digits.test_images[0])

    # One local runtime for every part: the handler in-process, the cold-start processes and
    # the HTTP load all read the model from the same moto bucket.
    with LocalRuntime(bucket="tessera-bench") as runtime:
        # The benchmark drops nothing into the bucket, so the SQS pumps have nothing to do; their
        # long polls would only take the GIL from the handler being timed.
        for pump in runtime.pumps:
            pump.stop()
        for pump in runtime.pumps:
            pump.join(timeout=5)
        store = S3ObjectStore(bucket=runtime.bucket, client=runtime.client("s3"))
        _publish(
            store, onnx_model, npz, train_accuracy=float(pipeline.score(digits.x, digits.labels))
        )
        figures, _ = _in_process(args, digits, pipeline, onnx_model, keras_model)
        _progress("cold starts")
        child_env = {**runtime.env(), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        figures += _cold_start(
            _api_event("/predict", {"image": base64.b64encode(png).decode()}),
            child_env,
            args.cold_runs,
        )
        if not args.skip_load:
            figures += _load(runtime, png, total=args.load_requests, clients=args.clients)
    if not args.skip_bundle:
        figures += _bundle_size()

    # Other work on the machine skews every latency here; the load average says how much.
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"tessera bench inference: {digits.source}, MLP {HIDDEN} hidden, {rows:,} embeddings, "
        f"{os.cpu_count()} CPUs (load average {load}), onnxruntime threads as in Lambda"
    )
    print(_table(figures))
    return 0
