"""Split: a sheet dropped under incoming/train/ becomes one PNG tile per cell under tiles/."""

from tessera.pipeline.split import split_object
from tessera.pipeline.sqs_handler import s3_queue_handler

lambda_handler = s3_queue_handler(split_object, service="split")
