"""Vectorize: a tile under tiles/ becomes an MNIST-normalized row under datasets/."""

from tessera.ingest import vectorize_object
from tessera.lambda_support import s3_queue_handler

lambda_handler = s3_queue_handler(vectorize_object, service="vectorize")
