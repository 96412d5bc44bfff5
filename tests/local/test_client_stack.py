"""The client's deployed-stack path: a stack's outputs, its API key and its queues read the way
`--stack` reads them, here from moto's CloudFormation, API Gateway and SQS."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from tessera.config import PIPELINE
from tessera_dev import client


def test_a_stack_target_comes_from_the_stacks_outputs(aws_env: None) -> None:
    with mock_aws():
        # GIVEN a deployed stack's outputs, its API key and its queues
        key = boto3.client("apigateway").create_api_key(name="tessera-default", enabled=True)
        for spec in PIPELINE.queues:
            boto3.client("sqs").create_queue(QueueName=spec.name)
            boto3.client("sqs").create_queue(QueueName=spec.dlq_name)
        outputs = {
            "BucketName": "tessera-pipeline-abc",
            "ApiUrl": "https://abc.execute-api.us-east-1.amazonaws.com/v1/",
            "ApiKeyId": key["id"],
            "TrainUrl": "https://abc.execute-api.us-east-1.amazonaws.com/v1/train",
        }
        template = {
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {name: {"Value": value} for name, value in outputs.items()},
        }
        boto3.client("cloudformation").create_stack(
            StackName="Tessera", TemplateBody=json.dumps(template)
        )
        # WHEN the client targets it by name
        target = client.stack_target("Tessera", "us-east-1")
        # THEN it knows the bucket, the API, the key's value, the train URL and every queue
        assert target.bucket == "tessera-pipeline-abc" and not target.local
        assert target.api_url == outputs["ApiUrl"] and target.train_url == outputs["TrainUrl"]
        assert target.api_key == key["value"]
        assert set(target.queues) == {spec.function for spec in PIPELINE.queues}
        assert all(urls["dlq"].endswith("-dlq") for urls in target.queues.values())


def test_an_unknown_stack_is_a_clear_error(aws_env: None) -> None:
    with mock_aws(), pytest.raises(client.ClientError) as refused:
        client.stack_target("NoSuchStack", "us-east-1")
    assert refused.value.code == "no_target"
