"""The one place every resource name, prefix, queue, route and limit comes from.

The CDK app and the local runtime both build the pipeline from `PIPELINE`, and functions read
their runtime settings from environment variables the stack (or the local runtime) sets from it,
so the deployed stack and the local one cannot drift apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# MNIST's format: a 28x28 tile, its glyph fitted into the middle 20x20, stored as 784 bytes.
TILE_SIZE = 28
GLYPH_BOX = 20
VECTOR_LENGTH = TILE_SIZE * TILE_SIZE
# The one object per sheet Split writes beside its tiles and Vectorize is triggered by.
TILE_BATCH = "tiles.npz"
# The model families training fits (training/families); the Keras ones are those a GPU speeds
# up, and deployed with a GPU queue (`-c tessera:gpu=true`) they run there.
MODEL_FAMILIES = ("mlp", "dense", "cnn", "cnn-strong")
DEFAULT_FAMILY = "mlp"  # what a training run fits unless told otherwise
KERAS_FAMILIES = ("dense", "cnn", "cnn-strong")


class Env:
    """Names of the environment variables the stack (or the local runtime) sets and the code
    reads; the values are documented where each is read."""

    BUCKET = "TESSERA_BUCKET"
    MODEL_NAME = "TESSERA_MODEL_NAME"
    CHAMPION_TTL_SECONDS = "TESSERA_CHAMPION_TTL_SECONDS"
    ORT_THREADS = "TESSERA_ORT_THREADS"
    RUN_ID = "TESSERA_RUN_ID"
    FAMILY = "TESSERA_FAMILY"
    SEARCH = "TESSERA_SEARCH"
    SEARCH_ROWS = "TESSERA_SEARCH_ROWS"
    SEARCH_SHARDS = "TESSERA_SEARCH_SHARDS"
    SEARCH_SHARD = "TESSERA_SEARCH_SHARD"  # "-/N" in each child of the search's array job
    JOBS = "TESSERA_JOBS"
    SEED = "TESSERA_SEED"
    BASE_MODEL = "TESSERA_BASE_MODEL"
    DATA_DIR = "TESSERA_DATA_DIR"
    LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"
    # The console's sign-in, set by the stack: Cognito's managed-login URL and the page's
    # client id (unset locally: the local runtime has no sign-in).
    CONSOLE_AUTH_DOMAIN = "TESSERA_CONSOLE_AUTH_DOMAIN"
    CONSOLE_CLIENT_ID = "TESSERA_CONSOLE_CLIENT_ID"
    # The training workflow POST /train starts (deployed; the local runtime runs a process).
    TRAINING_STATE_MACHINE = "TESSERA_TRAINING_STATE_MACHINE"


@dataclass(frozen=True, kw_only=True)
class Prefixes:
    """Key prefixes in the pipeline bucket. Outputs never land under a prefix that triggers
    the function that wrote them."""

    incoming_train: str = "incoming/train/"
    incoming_predict: str = "incoming/predict/"
    tiles: str = "tiles/"
    datasets: str = "datasets/"
    models: str = "models/"
    predictions: str = "predictions/"
    quarantine: str = "quarantine/"
    runs: str = "runs/"


@dataclass(frozen=True, kw_only=True)
class QueueSpec:
    """An S3 prefix feeding one function through SQS, with its dead-letter queue."""

    name: str
    function: str
    prefix: str
    suffixes: tuple[str, ...] = ()
    batch_size: int = 10
    max_batching_window_seconds: int = 0
    max_receive_count: int = 3
    function_timeout_seconds: int = 60
    function_memory_mb: int = 1024
    # The most concurrent invocations this queue's event source may drive (Lambda's SQS
    # maxConcurrency, 2..1000): a burst of sheets cannot take the account's concurrency from
    # the API.
    max_concurrency: int = 10

    @property
    def dlq_name(self) -> str:
        return f"{self.name}-dlq"

    @property
    def visibility_timeout_seconds(self) -> int:
        # AWS guidance for SQS event sources: at least six times the function timeout, plus
        # the batching window (messages wait in the batch before the function even starts).
        return 6 * self.function_timeout_seconds + self.max_batching_window_seconds


@dataclass(frozen=True, kw_only=True)
class Route:
    method: str
    path: str  # API Gateway's form: /models/{name}
    function: str = "inference"

    def matches(self, method: str, path: str) -> bool:
        """Whether a request for `path` is this route's (a {parameter} is one path part)."""
        mine, theirs = self.path.strip("/").split("/"), path.strip("/").split("/")
        return (
            method == self.method
            and len(mine) == len(theirs)
            and all(
                (m.startswith("{") and t != "") or m == t for m, t in zip(mine, theirs, strict=True)
            )
        )


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Input limits shared by every entry point (S3 objects and API requests)."""

    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 20 * 1024 * 1024
    min_cell_pixels: int = 4
    max_grid_cells: int = 20_000
    max_label_length: int = 32
    # Lambda takes a synchronous event of at most 6 MB, and API Gateway base64-encodes image
    # bodies (4/3 larger): 4 MiB is the largest body whose event still fits, headers and all.
    max_api_body_bytes: int = 4 * 1024 * 1024
    # What Lambda accepts as a synchronous invocation's event (the local API enforces it too).
    max_lambda_event_bytes: int = 6 * 1024 * 1024
    max_api_instances: int = 1_000
    max_api_image_pixels: int = 16_000_000
    max_similar_instances: int = 32
    # Symbols the API reads off one page: each answer carries its top-k, and the answer must
    # stay far inside Lambda's 6 MB response; bigger pages go to batch predictions.
    max_api_page_symbols: int = 300


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    project: str = "tessera"
    default_dataset: str = "digits"
    prefixes: Prefixes = field(default_factory=Prefixes)
    limits: Limits = field(default_factory=Limits)
    queues: tuple[QueueSpec, ...] = ()
    routes: tuple[Route, ...] = ()
    # The console's page and routes (functions/console); served by the local runtime.
    console_routes: tuple[Route, ...] = ()
    champion_ttl_seconds: int = 30
    # Concurrency reserved for the API's function, so ingest bursts cannot starve it (0: none;
    # an account at Lambda's default limit of 10 cannot reserve any).
    inference_reserved_concurrency: int = 10
    # Days users' uploads (incoming/) and batch predictions (predictions/) are kept.
    retention_days: int = 90
    # Request bodies API Gateway passes base64-encoded (everything else arrives as text).
    binary_media_types: tuple[str, ...] = ("image/png", "image/jpeg", "application/octet-stream")

    def queue_for(self, function: str) -> QueueSpec:
        for queue in self.queues:
            if queue.function == function:
                return queue
        raise KeyError(f"no queue feeds function {function!r}")


_PREFIXES = Prefixes()

PIPELINE = PipelineConfig(
    prefixes=_PREFIXES,
    queues=(
        QueueSpec(
            name="tessera-split",
            function="split",
            prefix=_PREFIXES.incoming_train,
            batch_size=1,  # a sheet is a large unit of work of its own
            function_timeout_seconds=120,
            function_memory_mb=2048,
            max_concurrency=5,
        ),
        QueueSpec(
            name="tessera-vectorize",
            function="vectorize",
            prefix=_PREFIXES.tiles,
            # One message per sheet (its tile batch), not per tile: the PNGs are for people.
            suffixes=(f"/{TILE_BATCH}",),
            batch_size=1,  # a sheet of up to max_grid_cells tiles is a unit of work of its own
            function_timeout_seconds=120,
            function_memory_mb=1024,
            max_concurrency=20,
        ),
        QueueSpec(
            name="tessera-batch-predict",
            function="batch_predict",
            prefix=_PREFIXES.incoming_predict,
            batch_size=1,
            function_timeout_seconds=120,
            function_memory_mb=2048,
            max_concurrency=5,
        ),
    ),
    routes=(
        Route(method="GET", path="/health"),
        Route(method="GET", path="/models"),
        Route(method="POST", path="/predict"),
        Route(method="POST", path="/similar"),
        Route(method="POST", path="/train"),
    ),
    console_routes=(
        *(
            Route(method=method, path=path, function="console")
            for method, path in (
                ("GET", "/"),
                ("GET", "/console/{name}"),
                ("GET", "/sheets"),
                ("GET", "/sheets/{sheet}"),
                ("GET", "/view"),
                ("GET", "/review"),
                ("GET", "/corrections"),
                ("POST", "/corrections"),
                ("GET", "/models/{name}"),
                ("POST", "/models/{name}/champion"),
                ("GET", "/runs/{run_id}"),
            )
        ),
        # /predict, /similar and /train for the signed-in console: a browser holds no API key
        # and no AWS credentials.
        Route(method="POST", path="/console/predict"),
        Route(method="POST", path="/console/similar"),
        Route(method="POST", path="/console/train", function="train"),
    ),
)


@dataclass(frozen=True, kw_only=True)
class FunctionSettings:
    """What a function learns from its environment at cold start."""

    bucket: str
    model_name: str
    champion_ttl_seconds: int

    @classmethod
    def from_env(cls) -> FunctionSettings:
        return cls(
            bucket=os.environ[Env.BUCKET],
            model_name=os.environ.get(Env.MODEL_NAME, PIPELINE.default_dataset),
            champion_ttl_seconds=int(
                os.environ.get(Env.CHAMPION_TTL_SECONDS, PIPELINE.champion_ttl_seconds)
            ),
        )
