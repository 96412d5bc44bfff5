"""The local runtime keeps its bucket in a data directory: a restart restores every object with
its bytes and metadata, processes nothing twice, picks up work whose messages were lost, and a
directory it cannot use is refused with one clear line."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from moto.moto_api._internal.models import moto_api_backend

from tessera.config import PIPELINE
from tessera.dataset import decode_rows
from tessera_dev import cli
from tessera_dev.local import persistence, runtime
from tessera_dev.local.persistence import BucketMirror, DataDirError, Stored
from tessera_dev.local.recovery import unfinished
from tessera_dev.local.resources import ProvisionedQueue
from tessera_dev.local.runtime import LocalRuntime
from tessera_dev.samples import Glyphs
from tests.conftest import digits_sheet

BUCKET = "tessera-persist"
runtime_test = pytest.mark.usefixtures("fresh_moto")


@pytest.fixture
def fresh_moto() -> Iterator[None]:
    """Each runtime in these tests starts on an empty moto, as a new `tessera local up`
    process would: what it finds comes from the data directory alone."""
    moto_api_backend.reset()
    yield
    moto_api_backend.reset()


@pytest.fixture
def processed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(function, key) for every object a pipeline step was handed (S3's test events left
    out), recorded around the handlers the runtime starts."""
    seen: list[tuple[str, str]] = []
    handler_for = runtime.handler_for

    def recording(function: str) -> Any:
        real = handler_for(function)

        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            for record in event["Records"]:
                for item in json.loads(record["body"]).get("Records", []):
                    seen.append((function, unquote_plus(item["s3"]["object"]["key"])))
            result: dict[str, Any] = real(event, context)
            return result

        return handler

    monkeypatch.setattr(runtime, "handler_for", recording)
    return seen


def restart(data_dir: Path) -> LocalRuntime:
    moto_api_backend.reset()  # the old process's memory is gone
    return LocalRuntime(bucket=BUCKET, data_dir=data_dir, snapshot_seconds=0.5).start()


def everything(runtime: LocalRuntime) -> dict[str, dict[str, Any]]:
    """Every object's bytes, ETag, content type and metadata."""
    s3 = runtime.client("s3")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=runtime.bucket):
        for item in page.get("Contents", []):
            got = s3.get_object(Bucket=runtime.bucket, Key=item["Key"])
            found[item["Key"]] = {
                "body": got["Body"].read(),
                "etag": got["ETag"],
                "content_type": got["ContentType"],
                "metadata": got["Metadata"],
            }
    return found


def under(objects: dict[str, Any], prefix: str) -> int:
    return sum(key.startswith(prefix) for key in objects)


def tiles_and_rows(objects: dict[str, Any]) -> tuple[int, int]:
    """Tile PNGs, and rows in the shards, of the digits dataset."""
    tiles = sum(k.startswith("tiles/digits/") and k.endswith(".png") for k in objects)
    rows = sum(
        len(decode_rows(o["body"], key=k))
        for k, o in objects.items()
        if k.startswith("datasets/digits/rows/")
    )
    return tiles, rows


@pytest.mark.slow
@pytest.mark.e2e
@runtime_test
def test_a_restart_restores_every_object_and_processes_nothing_twice(
    tmp_path: Path, digits: Glyphs, processed: list[tuple[str, str]]
) -> None:
    # GIVEN a runtime on a data directory, a split sheet and objects with metadata
    first = LocalRuntime(bucket=BUCKET, data_dir=tmp_path, snapshot_seconds=0.5).start()
    try:
        s3 = first.client("s3")
        s3.put_object(
            Bucket=BUCKET,
            Key="incoming/train/digits/0/sheet-2x10.png",
            Body=digits_sheet(digits, "0", 20),
        )
        s3.put_object(
            Bucket=BUCKET,
            Key="notes/a key with spaces+plus/ünï.txt",
            Body=b"hello",
            ContentType="text/plain; charset=utf-8",
            Metadata={"grid": "3x10", "row-labels": "0,1,2"},
        )
        s3.put_object(Bucket=BUCKET, Key="notes/a", Body=b"a file beside a folder")
        s3.put_object(Bucket=BUCKET, Key="notes/a/b", Body=b"and one inside it")
        assert first.wait_until_idle(timeout=60)
        before = everything(first)
    finally:
        first.stop()
    assert tiles_and_rows(before) == (20, 20)
    processed.clear()
    # WHEN a new runtime starts on the same directory
    second = restart(tmp_path)
    try:
        assert second.wait_until_idle(timeout=60)
        after = everything(second)
        # THEN every object is back, byte for byte, with its ETag, content type and metadata
        assert after == before
        # AND nothing was sent to a queue again: no step ran
        assert second.resent == [] and processed == []
    finally:
        second.stop()


@pytest.mark.slow
@pytest.mark.e2e
@runtime_test
def test_a_sheet_whose_message_was_lost_is_split_after_the_restart(
    tmp_path: Path, digits: Glyphs, processed: list[tuple[str, str]]
) -> None:
    # GIVEN a sheet dropped while the split pump was not running, then a stop
    first = LocalRuntime(bucket=BUCKET, data_dir=tmp_path, snapshot_seconds=0.5).start()
    try:
        (split,) = [pump for pump in first.pumps if pump.queue.spec.function == "split"]
        split.stop()
        split.join(timeout=10)
        key = "incoming/train/digits/1/late-1x10.png"
        first.client("s3").put_object(Bucket=BUCKET, Key=key, Body=digits_sheet(digits, "1", 10))
    finally:
        first.stop()
    # WHEN the runtime starts again on the directory (its queued message died with moto)
    second = restart(tmp_path)
    try:
        # THEN the sheet's event is sent again, and the sheet becomes tiles and rows
        assert second.resent == [key]
        assert second.wait_until_idle(timeout=60)
        after = everything(second)
        assert tiles_and_rows(after) == (10, 10)
        assert processed.count(("split", key)) == 1
    finally:
        second.stop()


@pytest.mark.slow
@pytest.mark.e2e
@runtime_test
def test_a_big_multipart_object_is_on_disk_whole_and_keeps_its_etag(tmp_path: Path) -> None:
    # GIVEN a 12 MiB object uploaded in parts, as `aws s3 cp` uploads a big file
    body = os.urandom(12 * 1024 * 1024)
    first = LocalRuntime(bucket=BUCKET, data_dir=tmp_path, snapshot_seconds=0.5).start()
    try:
        first.client("s3").upload_fileobj(io.BytesIO(body), BUCKET, "big/blob.bin")
        etag = first.client("s3").head_object(Bucket=BUCKET, Key="big/blob.bin")["ETag"]
    finally:
        first.stop()
    assert etag.endswith('-2"')
    # THEN after the stop its file is whole, its sidecar names it, and no temporary is left
    mirror = BucketMirror(tmp_path, BUCKET)
    (record,) = mirror.stored()
    assert (record.key, record.etag) == ("big/blob.bin", etag)
    assert mirror._paths(record.key)[0].read_bytes() == body
    assert not list(mirror.objects.rglob("*.tmp"))
    # AND restored, it has the ETag it had (keys derived from ETags stay the same)
    second = restart(tmp_path)
    try:
        head = second.client("s3").head_object(Bucket=BUCKET, Key="big/blob.bin")
        assert head["ETag"] == etag
    finally:
        second.stop()


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "object.data"
    target.write_bytes(b"old, whole")

    def half_then_die(self: Path, data: bytes) -> int:
        with self.open("wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_die)
    with pytest.raises(OSError):
        persistence._write_atomically(target, b"new and much longer")
    monkeypatch.undo()
    assert target.read_bytes() == b"old, whole"
    assert [path.name for path in tmp_path.iterdir()] == ["object.data"]


@pytest.mark.parametrize("how", ["under_a_file", "read_only", "full"])
def test_an_unusable_data_dir_is_one_line_naming_it_and_exit_1(
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a data directory that cannot take the bucket
    data_dir = tmp_path / "data"
    if how == "under_a_file":
        data_dir.write_text("a file, not a folder")
        data_dir = data_dir / "inside"
    elif how == "read_only":
        data_dir.mkdir(mode=0o500)
        if os.geteuid() == 0:  # root writes anyway: the refusal a user would get, played
            monkeypatch.setattr(persistence, "_write_atomically", _permission_denied)
    else:
        monkeypatch.setattr(shutil, "disk_usage", lambda _path: _Usage(4096))
    # WHEN `tessera local up` starts on it
    code = cli.main(["local", "up", "--data-dir", str(data_dir), "--bucket", BUCKET])
    # THEN it exits 1 with one line that names the directory, and no traceback
    error = capsys.readouterr().err
    assert code == 1
    assert error.count("\n") == 1 and "Traceback" not in error
    assert error.startswith("tessera: data directory ") and str(data_dir) in error
    assert ("is full" if how == "full" else "is not writable") in error


def _permission_denied(path: Path, _data: bytes) -> None:
    raise PermissionError(13, "Permission denied", str(path))


class _Usage:
    def __init__(self, free: int) -> None:
        self.free = free


def test_a_data_dir_in_use_by_another_runtime_is_refused(tmp_path: Path) -> None:
    first = BucketMirror(tmp_path, BUCKET)
    first.open()
    try:
        with pytest.raises(DataDirError, match="in use by another"):
            BucketMirror(tmp_path, BUCKET).open()
    finally:
        first.close()
    BucketMirror(tmp_path, BUCKET).open()  # free again once the first has closed


def _queues() -> list[ProvisionedQueue]:
    return [
        ProvisionedQueue(spec=spec, url=spec.name, arn="arn", dlq_url="", dlq_arn="")
        for spec in PIPELINE.queues
    ]


def _stored(*keys: str) -> list[Stored]:
    return [Stored(key=key, etag='"e"', headers={}, metadata={}) for key in keys]


def test_only_objects_without_an_outcome_are_sent_again() -> None:
    from tessera.sheets.spec import sheet_id_for

    split_sheet = "incoming/train/digits/done.png"
    objects = _stored(
        split_sheet,
        f"datasets/digits/sheets/{sheet_id_for(split_sheet, 'e')}.json",
        "incoming/train/digits/bad.png",
        "quarantine/incoming/train/digits/bad.png.reason.json",
        "incoming/train/digits/waiting.png",
        "incoming/train/digits/labelled.png",
        "incoming/train/digits/labelled.png.labels.json",
        "incoming/train/digits/orphan.png.labels.json",
        "tiles/digits/s/r000-c000.png",
        "tiles/digits/s/tiles.npz",
        "datasets/digits/rows/s.npz",
        "tiles/digits/t/r000-c000.png",
        "tiles/digits/t/tiles.npz",
        "incoming/predict/page.png",
        "predictions/incoming/predict/page.png.json",
        "incoming/predict/digits/new.png",
        "models/digits/champion.json",
    )
    pending = {
        (queue.spec.function, record.key) for queue, record in unfinished(_queues(), objects)
    }
    assert pending == {
        ("split", "incoming/train/digits/waiting.png"),
        # the manifest's event splits its sheet with its labels: the sheet's own is left out
        ("split", "incoming/train/digits/labelled.png.labels.json"),
        # a tile batch is vectorized once its sheet has a shard; tile PNGs trigger nothing
        ("vectorize", "tiles/digits/t/tiles.npz"),
        ("batch_predict", "incoming/predict/digits/new.png"),
    }


def test_the_sidecar_round_trips() -> None:
    record = Stored(key="k", etag='"e"', headers={"ContentType": "a/b"}, metadata={"x": "y"})
    assert Stored.from_json(record.as_json()) == record
    assert json.loads(record.as_json())["key"] == "k"


def test_no_snapshot_before_a_whole_restore(tmp_path: Path) -> None:
    # A snapshot deletes the files of objects not in the bucket: before the restore finished,
    # those would be the objects still waiting to be restored.
    mirror = BucketMirror(tmp_path, BUCKET)
    with pytest.raises(RuntimeError, match="not restored"):
        mirror.snapshot(s3=None, bucket=BUCKET)


def _no_space(path: Path, _data: bytes) -> None:
    raise OSError(28, "No space left on device", str(path))


def _wait_until(condition: Any, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@runtime_test
def test_a_disk_that_fills_up_while_running_loses_nothing_once_it_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    first = LocalRuntime(bucket=BUCKET, data_dir=data_dir, snapshot_seconds=0.1).start()
    mirror = first._mirror
    assert mirror is not None
    try:
        s3 = first.client("s3")
        s3.put_object(Bucket=BUCKET, Key="before.txt", Body=b"saved")
        assert _wait_until(lambda: "before.txt" in mirror.on_disk)
        # WHEN the disk is full, a write is still acknowledged and readable
        monkeypatch.setattr(persistence, "_write_atomically", _no_space)
        s3.put_object(Bucket=BUCKET, Key="during.txt", Body=b"acknowledged")
        assert _wait_until(lambda: "No space left" in caplog.text)
        assert s3.get_object(Bucket=BUCKET, Key="during.txt")["Body"].read() == b"acknowledged"
        assert caplog.text.count("No space left") == 1  # said once, not every interval
        # AND once there is room again the next snapshot catches up
        monkeypatch.undo()
        assert _wait_until(lambda: "during.txt" in mirror.on_disk)
    finally:
        first.stop()
    assert first.unsaved_on_stop == []
    second = restart(data_dir)
    try:
        body = second.client("s3").get_object(Bucket=BUCKET, Key="during.txt")["Body"].read()
        assert body == b"acknowledged"
    finally:
        second.stop()


@runtime_test
def test_stopping_on_a_full_disk_names_what_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = LocalRuntime(bucket=BUCKET, data_dir=tmp_path / "data", snapshot_seconds=60).start()
    runtime.client("s3").put_object(Bucket=BUCKET, Key="late.txt", Body=b"not yet on disk")
    monkeypatch.setattr(persistence, "_write_atomically", _no_space)
    runtime.stop()
    assert runtime.unsaved_on_stop == ["late.txt"]
    assert "1 object(s) are not on disk" in caplog.text and "late.txt" in caplog.text


def test_ctrl_c_in_a_terminal_still_saves_the_bucket(tmp_path: Path) -> None:
    """A terminal's Ctrl-C interrupts the whole foreground process group: moto's server must
    outlast it until the runtime's last snapshot is taken from it."""
    data_dir = tmp_path / "data"
    up = subprocess.Popen(
        [sys.executable, "-m", "tessera_dev.cli", "local", "up", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job is
    )
    try:
        assert up.stdout is not None
        described = json.loads(up.stdout.readline())
        s3 = boto3.client(
            "s3",
            endpoint_url=described["aws_endpoint"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        # written just now: only the last snapshot, on the way out, can save it
        s3.put_object(Bucket=described["bucket"], Key="notes/kept.txt", Body=b"kept")
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    saved = [stored.key for stored in BucketMirror(data_dir, described["bucket"]).stored()]
    assert "notes/kept.txt" in saved
