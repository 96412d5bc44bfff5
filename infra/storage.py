"""The pipeline bucket and the bucket that receives its server access logs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from tessera.config import PIPELINE

TILES_EXPIRE_AFTER = Duration.days(30)  # tiles are re-creatable from the sheet they came from
QUARANTINE_EXPIRE_AFTER = Duration.days(90)  # long enough to look at a bad upload, then gone
NONCURRENT_VERSIONS_EXPIRE_AFTER = Duration.days(30)
ACCESS_LOGS_EXPIRE_AFTER = Duration.days(90)
INCOMPLETE_UPLOADS_ABORT_AFTER = Duration.days(7)


def _secure_bucket_defaults() -> dict[str, object]:
    return {
        "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
        "encryption": s3.BucketEncryption.S3_MANAGED,
        "enforce_ssl": True,
        "minimum_tls_version": 1.2,
        "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    }


class Storage(Construct):
    """Versioned, SSE-S3-encrypted, TLS-only, never public.

    SSE-S3 rather than a customer KMS key: the data (sheets, tiles, models) is not regulated, and
    SSE-S3 costs nothing per request, needs no key grants for S3 notifications to SQS, and keeps
    the idle cost at zero.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, retain_data: bool, retention_days: int
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if retain_data else RemovalPolicy.DESTROY
        prefixes = PIPELINE.prefixes

        # Not logged itself (that would loop); cdk-nag recognizes it as the logging target.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            **_secure_bucket_defaults(),  # type: ignore[arg-type]
            # Versioned, so a log deleted or overwritten by mistake (or on purpose) is kept.
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=ACCESS_LOGS_EXPIRE_AFTER,
                    noncurrent_version_expiration=NONCURRENT_VERSIONS_EXPIRE_AFTER,
                    abort_incomplete_multipart_upload_after=INCOMPLETE_UPLOADS_ABORT_AFTER,
                )
            ],
            removal_policy=removal,
            auto_delete_objects=not retain_data,
        )

        self.bucket = s3.Bucket(
            self,
            "Pipeline",
            **_secure_bucket_defaults(),  # type: ignore[arg-type]
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="pipeline/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-tiles",
                    prefix=prefixes.tiles,
                    expiration=TILES_EXPIRE_AFTER,
                ),
                # Users' handwriting is private data: uploads and what was predicted from them
                # are kept for `retention_days` (tessera:retention_days), then deleted.
                *(
                    s3.LifecycleRule(
                        id=f"expire-{prefix.strip('/').replace('/', '-')}",
                        prefix=prefix,
                        expiration=Duration.days(retention_days),
                    )
                    for prefix in (
                        prefixes.incoming_train,
                        prefixes.incoming_predict,
                        prefixes.predictions,
                    )
                ),
                s3.LifecycleRule(
                    id="expire-quarantine",
                    prefix=prefixes.quarantine,
                    expiration=QUARANTINE_EXPIRE_AFTER,
                ),
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=NONCURRENT_VERSIONS_EXPIRE_AFTER,
                    expired_object_delete_marker=True,
                    abort_incomplete_multipart_upload_after=INCOMPLETE_UPLOADS_ABORT_AFTER,
                ),
            ],
            removal_policy=removal,
            auto_delete_objects=not retain_data,
        )
