"""`tessera bench ingest` counts what ingest asks of S3, SQS and Lambda per tile, from the
local runtime (the figures for 100 sheets and a 5000-cell sheet come from running it)."""

from __future__ import annotations

import json

import pytest

from tessera_dev.bench.ingest import at_ref, classify, main, price_per_1000_tiles, run

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_requests_are_classified_as_aws_bills_them() -> None:
    s3 = {"HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=k/20261203/us-east-1/s3/aws4_request"}
    assert classify({**s3, "REQUEST_METHOD": "PUT"}) == ("s3", "PutObject")
    assert classify({**s3, "REQUEST_METHOD": "PUT", "HTTP_X_AMZ_COPY_SOURCE": "b/k"}) == (
        "s3",
        "CopyObject",
    )
    assert classify({**s3, "REQUEST_METHOD": "GET", "QUERY_STRING": "list-type=2"}) == (
        "s3",
        "ListObjectsV2",
    )
    assert classify({**s3, "REQUEST_METHOD": "HEAD"}) == ("s3", "HeadObject")
    assert classify({"HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"}) == ("sqs", "ReceiveMessage")


def test_the_price_counts_puts_and_gets_at_their_own_rates() -> None:
    # 1,000 PUTs ($0.005) and 1,000 GETs ($0.0004) for 1,000 tiles, nothing else
    price = price_per_1000_tiles({"s3:PutObject": 1000, "s3:GetObject": 1000}, 0, 0.0, 1000)
    assert price == pytest.approx(0.0054)
    assert price_per_1000_tiles({"s3:DeleteObject": 1000}, 0, 0.0, 1000) == 0.0


def test_a_small_ingest_makes_every_row_once_with_few_requests_per_tile() -> None:
    # GIVEN 3 sheets of 20 cells dropped at once into a fresh local runtime
    result = run(3, 20, 10, timeout=120)
    # THEN every cell became exactly one row and one tile image people can open
    assert result["idle"] and result["rows"] == result["distinct_rows"] == 60
    assert result["tile_objects"] == 60
    # AND the pipeline works per sheet: one split and one vectorize invocation per sheet,
    # one S3 PUT per tile image plus a few per sheet, and few SQS requests per tile
    assert result["invocations"] == {"split": 3, "vectorize": 3, "batch_predict": 0}
    assert result["requests"]["s3:PutObject"] <= 60 + 3 * 6
    assert result["requests_per_tile"] < 2.2  # before per-sheet vectorize: 4.4
    assert result["requests"]["sqs:SendMessage"] == 6  # S3's notifications, one per sheet and batch
    assert 0 < result["usd_per_1000_tiles"] < 0.01


def test_the_command_prints_a_table_and_ends_with_one_json_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--sheets", "1", "--cells", "10", "--big", "0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("| 1 x 10 | requests per tile |") for line in out)
    assert json.loads(out[-1])["now"][0]["rows"] == 10
    assert main(["--sheets", "0", "--big", "0"]) == 2


def test_a_baseline_runs_the_same_bench_with_another_commits_pipeline() -> None:
    # HEAD stands in for an older commit: a worktree of it, in a process of its own
    (result,) = at_ref("HEAD", [(1, 10, 10)], timeout=120)
    assert result["rows"] == result["tiles_expected"] == 10
