"""The local runtime's bucket kept on disk, so stopping `tessera local up` loses nothing.

The data directory mirrors the bucket: one file per object and a JSON sidecar beside it (its
key, ETag, content type and user metadata). Files are named by a hash of the key, so any S3
key (`a` beside `a/b`, `..`, 1,024 bytes of UTF-8) maps to one safe file name and none can
escape the directory. Every file is written under a temporary name and renamed into place,
so a SIGKILL leaves the old version or the new one, never half of either; what was written in
the last snapshot interval before a kill is what can be lost.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("tessera_dev.local.persistence")
# Below this much free space the directory counts as full: the first snapshot would fail.
MIN_FREE_BYTES = 16 * 1024 * 1024
SNAPSHOT_SECONDS = 2.0
_MiB = 1024 * 1024
# Headers S3 keeps with an object besides its user metadata, as get_object names them and
# put_object takes them.
_HEADERS = ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage")


class DataDirError(Exception):
    """The data directory cannot hold the bucket: a message that names it."""


@dataclass(frozen=True)
class Stored:
    """One object as its sidecar records it."""

    key: str
    etag: str
    headers: dict[str, str]
    metadata: dict[str, str]

    def as_json(self) -> bytes:
        return json.dumps(
            {"key": self.key, "etag": self.etag, "headers": self.headers, "metadata": self.metadata}
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Stored:
        data = json.loads(raw)
        return cls(
            key=str(data["key"]),
            etag=str(data["etag"]),
            headers={str(k): str(v) for k, v in data.get("headers", {}).items()},
            metadata={str(k): str(v) for k, v in data.get("metadata", {}).items()},
        )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename: never a half-written `path`."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class BucketMirror:
    """One bucket's objects under `<data_dir>/<bucket>/objects/`, locked to one runtime."""

    def __init__(self, data_dir: Path, bucket: str) -> None:
        self.root = data_dir.expanduser() / bucket
        self.objects = self.root / "objects"
        # key -> ETag of what is on disk: what a snapshot compares a listing with.
        self.on_disk: dict[str, str] = {}
        self._lock: IO[bytes] | None = None
        self._snapshotting = threading.Lock()
        # A snapshot deletes the files of objects not in the bucket: before a whole restore
        # that would be the files of objects not restored yet.
        self._restored = False

    def open(self) -> None:
        """Check the directory can take the bucket and lock it, or raise `DataDirError`."""
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            self._lock = (self.root / ".lock").open("ab")
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_atomically(self.root / ".probe", b"a write, to prove the directory takes one")
            (self.root / ".probe").unlink()
            free = shutil.disk_usage(self.root).free
        except BlockingIOError:
            self.close()
            raise DataDirError(
                f"data directory {self.root} is in use by another `tessera local up`"
            ) from None
        except OSError as error:
            self.close()
            problem = "is full" if error.errno == errno.ENOSPC else "is not writable"
            raise DataDirError(
                f"data directory {self.root} {problem}: {error.strerror or error}"
            ) from None
        if free < MIN_FREE_BYTES:
            self.close()
            raise DataDirError(f"data directory {self.root} is full: {free} bytes free")
        for stale in self.objects.glob("*/.*.tmp"):  # a kill's leftovers: never a whole file
            stale.unlink(missing_ok=True)

    @property
    def is_open(self) -> bool:
        return self._lock is not None

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None

    def _paths(self, key: str) -> tuple[Path, Path]:
        digest = hashlib.sha256(key.encode()).hexdigest()
        folder = self.objects / digest[:2]
        return folder / f"{digest}.data", folder / f"{digest}.json"

    def stored(self) -> list[Stored]:
        """Every object whose sidecar and file are both on disk; others are skipped, said so."""
        found = []
        for sidecar in sorted(self.objects.glob("*/*.json")):
            try:
                record = Stored.from_json(sidecar.read_bytes())
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning("skipping %s: its sidecar cannot be read (%s)", sidecar, error)
                continue
            if not self._paths(record.key)[0].is_file():
                log.warning("skipping %s: its file is missing", record.key)
                continue
            found.append(record)
        return found

    def restore(self, s3: Any, bucket: str) -> list[Stored]:
        """Put every stored object back into the bucket; meant to run before the bucket's
        notifications exist, so nothing already processed is processed again."""
        restored = []
        for record in self.stored():
            try:
                body = self._paths(record.key)[0].read_bytes()
            except OSError as error:
                log.warning("skipping %s: its file cannot be read (%s)", record.key, error)
                continue
            self.on_disk[record.key] = _put(s3, bucket, record, body)
            restored.append(record)
        self._restored = True
        return restored

    def snapshot(self, s3: Any, bucket: str) -> int:
        """Write what changed since the last snapshot and delete what is gone; the count of
        files written or deleted."""
        if not self._restored:
            raise RuntimeError(f"{self.root} was not restored: a snapshot would delete from it")
        with self._snapshotting:
            listed = _listing(s3, bucket)
            changed = 0
            for key, etag in listed.items():
                if self.on_disk.get(key) != etag and self._save(s3, bucket, key):
                    changed += 1
            for key in [key for key in self.on_disk if key not in listed]:
                for path in self._paths(key):
                    path.unlink(missing_ok=True)
                del self.on_disk[key]
                changed += 1
            return changed

    def unsaved(self, s3: Any, bucket: str) -> list[str]:
        """The bucket's keys whose current version is not on disk."""
        return sorted(k for k, etag in _listing(s3, bucket).items() if self.on_disk.get(k) != etag)

    def _save(self, s3: Any, bucket: str, key: str) -> bool:
        try:
            got = s3.get_object(Bucket=bucket, Key=key)
        except s3.exceptions.NoSuchKey:  # deleted since the listing: the next one drops it
            return False
        body = got["Body"].read()
        record = Stored(
            key=key,
            etag=got["ETag"],
            headers={name: got[name] for name in _HEADERS if got.get(name)},
            metadata=dict(got.get("Metadata") or {}),
        )
        data_path, sidecar = self._paths(key)
        data_path.parent.mkdir(exist_ok=True)
        # The file first, its sidecar second: a sidecar always describes a whole file.
        _write_atomically(data_path, body)
        _write_atomically(sidecar, record.as_json())
        self.on_disk[key] = record.etag
        return True


def _listing(s3: Any, bucket: str) -> dict[str, str]:
    listed = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            listed[item["Key"]] = item["ETag"]
    return listed


def _put(s3: Any, bucket: str, record: Stored, body: bytes) -> str:
    """Put the object back with its headers and metadata; the ETag it now has. A multipart
    upload's ETag is rebuilt with the same part size when one can be found, so keys derived
    from ETags (a sheet's id) stay what the pipeline saw."""
    extra = {**record.headers, "Metadata": record.metadata}
    part_size = _part_size_for(record.etag, body)
    if part_size is None:
        return str(s3.put_object(Bucket=bucket, Key=record.key, Body=body, **extra)["ETag"])
    upload = s3.create_multipart_upload(Bucket=bucket, Key=record.key, **extra)["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(body), part_size), start=1):
        chunk = body[start : start + part_size]
        etag = s3.upload_part(
            Bucket=bucket, Key=record.key, UploadId=upload, PartNumber=number, Body=chunk
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=record.key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    return str(done["ETag"])


def _part_size_for(etag: str, body: bytes) -> int | None:
    """The part size that reproduces a multipart ETag (`md5-of-part-md5s-N`): the AWS CLI's
    8 MiB, or the whole MiBs N parts need. None for a single-part ETag or when none fits."""
    digest, _, count = etag.strip('"').partition("-")
    if not count.isdigit() or int(count) < 1:
        return None
    parts = int(count)
    fewest_mib = -(-len(body) // (parts * _MiB))
    for size in dict.fromkeys((8 * _MiB, fewest_mib * _MiB, 5 * _MiB, 16 * _MiB)):
        if size <= 0 or -(-len(body) // size) != parts:
            continue
        md5s = b"".join(
            hashlib.md5(body[start : start + size]).digest() for start in range(0, len(body), size)
        )
        if hashlib.md5(md5s).hexdigest() == digest:
            return size
    log.warning("a multipart ETag %s could not be rebuilt; the object gets a new one", etag)
    return None


class Snapshotter(threading.Thread):
    """Snapshots the bucket every `interval` seconds until stopped; a failure (the disk filled
    up) is logged once per kind and retried, and never stops the runtime."""

    def __init__(self, mirror: BucketMirror, s3: Any, bucket: str, interval: float) -> None:
        super().__init__(name="local-snapshot", daemon=True)
        self.mirror, self.s3, self.bucket, self.interval = mirror, s3, bucket, interval
        self._stop_event = threading.Event()
        self._last_failure = ""

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.mirror.snapshot(self.s3, self.bucket)
                self._last_failure = ""
            except Exception as error:  # the runtime outlives a full disk; it says so once
                if str(error) != self._last_failure:
                    log.error("snapshot to %s failed: %s", self.mirror.root, error)
                self._last_failure = str(error)


def snapshot_on_stop(mirror: BucketMirror, s3: Any, bucket: str) -> list[str]:
    """The last snapshot, when the runtime stops. If it fails (the disk is full), the keys that
    are not on disk, which this process's exit loses, are logged and returned: never silent."""
    try:
        mirror.snapshot(s3, bucket)
        return []
    except Exception as error:
        unsaved = mirror.unsaved(s3, bucket)
        shown = ", ".join(unsaved[:5]) + (", ..." if len(unsaved) > 5 else "")
        log.error(
            "the final snapshot to %s failed (%s): %d object(s) are not on disk and are lost "
            "when this process exits: %s",
            mirror.root,
            error,
            len(unsaved),
            shown,
        )
        return unsaved
