"""Ingest: sheets under incoming/train/ are split into tiles, tiles are vectorized into datasets."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.queued import QueueFedFunction
from tessera.config import PIPELINE


class Ingest(Construct):
    """The split and vectorize stages, each fed by its own queue as `PIPELINE.queues` describes.

    Sizing (from the config): split takes one sheet per invocation (a sheet is seconds of work
    and up to 40 MP of pixels), with 2 GB for the decoded image and the CPU share that comes with
    it, and 120 s for the largest sheet. Vectorize takes one sheet's tile batch per invocation
    (Split's `tiles.npz`, every cell of the sheet) and writes the sheet's rows as one shard: a
    cell is about a millisecond, so 1 GB and 120 s cover a 20,000-cell sheet with room.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        environment: Mapping[str, str],
        bundle_dependencies: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        self.split = QueueFedFunction(
            self,
            "Split",
            spec=PIPELINE.queue_for("split"),
            bucket=bucket,
            environment=environment,
            bundle_dependencies=bundle_dependencies,
        )
        self.vectorize = QueueFedFunction(
            self,
            "Vectorize",
            spec=PIPELINE.queue_for("vectorize"),
            bucket=bucket,
            environment=environment,
            bundle_dependencies=bundle_dependencies,
        )

    @property
    def stages(self) -> tuple[QueueFedFunction, ...]:
        return (self.split, self.vectorize)
