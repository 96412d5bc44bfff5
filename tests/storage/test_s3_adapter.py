"""What the S3 adapter puts on the wire (moto answers; the request is botocore's)."""

from __future__ import annotations

from typing import Any

from tessera.storage.s3 import EXPECT_CONTINUE_FROM, S3ObjectStore


def test_a_small_put_sends_its_body_at_once_and_a_large_one_asks_first(
    store: S3ObjectStore,
) -> None:
    sent: dict[str, Any] = {}

    def seen(request: Any, **_: Any) -> None:
        sent[request.url.rsplit("/", 1)[-1]] = dict(request.headers)

    store.client.meta.events.register("request-created.s3.PutObject", seen)
    try:
        store.put("tiles/d/s/r000-c000.png", b"\x89PNG" + bytes(300), content_type="image/png")
        store.put("models/d/big.onnx", bytes(EXPECT_CONTINUE_FROM))
    finally:
        store.client.meta.events.unregister("request-created.s3.PutObject", seen)
    # a tile: one round trip, no `100 Continue` awaited; a model of 1 MiB: botocore's default
    assert "Expect" not in sent["r000-c000.png"]
    assert sent["big.onnx"].get("Expect") == "100-continue"
    assert store.get("tiles/d/s/r000-c000.png").body[:4] == b"\x89PNG"
    assert len(store.get("models/d/big.onnx").body) == EXPECT_CONTINUE_FROM
