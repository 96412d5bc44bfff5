"""Batch predict: a sheet under incoming/predict/ becomes predictions/<key>.json and .csv."""

from tessera.pipeline.batch_predictions import predict_sheet_object
from tessera.pipeline.sqs_handler import s3_queue_handler

lambda_handler = s3_queue_handler(predict_sheet_object, service="batch_predict")
