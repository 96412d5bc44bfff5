"""Vectorize: a tile under tiles/ becomes an MNIST-normalized row under datasets/."""

from tessera.pipeline.sqs_handler import s3_queue_handler
from tessera.pipeline.vectorize import vectorize_object

lambda_handler = s3_queue_handler(vectorize_object, service="vectorize")
