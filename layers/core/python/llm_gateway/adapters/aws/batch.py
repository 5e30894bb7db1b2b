"""Batch jobs on AWS: the job table on DynamoDB, the batch bucket on S3.

Job table layout: partition key `pk` (`job#<job id>`), sort key `sk`: `job` for the job record,
`line#<index, 8 digits>` for each line (file order is key order). Attributes: `state` (lines),
`tenant` and `created_at` (the job), `doc` (the record as JSON). Global secondary index
`by_tenant` (partition `tenant`, sort `created_at`) lists a tenant's jobs. Creating a job is a
conditional put of the job record with `complete = false`, the lines in batches of 25
(idempotent puts), then `complete = true`: a creator that dies midway is finished by the next
one. A line moves with a conditional update on its `state`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ...ports import BatchJob, BatchLine, BatchLineState

TENANT_INDEX = "by_tenant"
_WRITE_CHUNK = 25  # BatchWriteItem's limit


def batch_jobs_key_schema() -> dict[str, Any]:
    """`create_table` arguments for the job table (tests and local tooling; CDK defines the same)."""
    return {
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "tenant", "AttributeType": "S"},
            {"AttributeName": "created_at", "AttributeType": "N"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": TENANT_INDEX,
                "KeySchema": [
                    {"AttributeName": "tenant", "KeyType": "HASH"},
                    {"AttributeName": "created_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }


def _pk(job_id: str) -> dict[str, str]:
    return {"S": f"job#{job_id}"}


def _line_sk(index: int) -> dict[str, str]:
    return {"S": f"line#{index:08d}"}


class DynamoBatchJobs:
    """`BatchJobs` on one DynamoDB table."""

    def __init__(self, table: str, client: Any) -> None:
        self.table = table
        self._client = client

    def create(self, job: BatchJob, lines: Sequence[BatchLine]) -> bool:
        key = {"pk": _pk(job.job_id), "sk": {"S": "job"}}
        try:
            self._client.put_item(
                TableName=self.table,
                Item={
                    **key,
                    "tenant": {"S": job.tenant},
                    "created_at": {"N": repr(job.created_at)},
                    "doc": {"S": job.model_dump_json()},
                    "complete": {"BOOL": False},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            found = self._client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item", {})
            if found.get("complete", {}).get("BOOL", True):
                return False
            # A creator died while writing the lines: finish its work (the puts are idempotent;
            # no line has moved yet, the job was not complete).
        for start in range(0, len(lines), _WRITE_CHUNK):
            requests = [{"PutRequest": {"Item": self._line_item(line)}} for line in lines[start : start + _WRITE_CHUNK]]
            while requests:
                answer = self._client.batch_write_item(RequestItems={self.table: requests})
                requests = answer.get("UnprocessedItems", {}).get(self.table, [])
        self._client.update_item(
            TableName=self.table,
            Key=key,
            UpdateExpression="SET complete = :t",
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )
        return True

    @staticmethod
    def _line_item(line: BatchLine) -> dict[str, Any]:
        return {
            "pk": _pk(line.job_id),
            "sk": _line_sk(line.index),
            "state": {"S": line.state},
            "doc": {"S": line.model_dump_json()},
        }

    def job(self, job_id: str) -> BatchJob | None:
        item = self._client.get_item(
            TableName=self.table, Key={"pk": _pk(job_id), "sk": {"S": "job"}}, ConsistentRead=True
        ).get("Item")
        return BatchJob.model_validate_json(item["doc"]["S"]) if item else None

    def jobs(self, tenant: str | None = None, limit: int = 100) -> list[BatchJob]:
        if tenant is None:
            pages = self._client.get_paginator("scan").paginate(
                TableName=self.table, FilterExpression="sk = :job", ExpressionAttributeValues={":job": {"S": "job"}}
            )
            found = [BatchJob.model_validate_json(i["doc"]["S"]) for page in pages for i in page["Items"]]
            return sorted(found, key=lambda j: j.created_at, reverse=True)[:limit]
        answer = self._client.query(
            TableName=self.table,
            IndexName=TENANT_INDEX,
            KeyConditionExpression="tenant = :t",
            ExpressionAttributeValues={":t": {"S": tenant}},
            ScanIndexForward=False,
            Limit=limit,
        )
        return [BatchJob.model_validate_json(i["doc"]["S"]) for i in answer["Items"]]

    def update_job(self, job_id: str, **changes: object) -> None:
        key = {"pk": _pk(job_id), "sk": {"S": "job"}}
        for _ in range(5):  # optimistic: a concurrent change makes this read-modify-write retry
            item = self._client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
            if item is None:
                raise KeyError(job_id)
            job = BatchJob.model_validate({**json.loads(item["doc"]["S"]), **changes})
            try:
                self._client.update_item(
                    TableName=self.table,
                    Key=key,
                    UpdateExpression="SET doc = :new",
                    ConditionExpression="doc = :old",
                    ExpressionAttributeValues={":new": {"S": job.model_dump_json()}, ":old": item["doc"]},
                )
                return
            except self._client.exceptions.ConditionalCheckFailedException:
                continue
        raise RuntimeError(f"job {job_id} kept changing under the update")

    def lines(self, job_id: str, state: BatchLineState | None = None) -> list[BatchLine]:
        arguments: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :line)",
            "ExpressionAttributeValues": {":pk": _pk(job_id), ":line": {"S": "line#"}},
            "ConsistentRead": True,
        }
        if state is not None:
            arguments["FilterExpression"] = "#state = :state"
            arguments["ExpressionAttributeNames"] = {"#state": "state"}
            arguments["ExpressionAttributeValues"][":state"] = {"S": state}
        pages = self._client.get_paginator("query").paginate(**arguments)
        return [BatchLine.model_validate_json(item["doc"]["S"]) for page in pages for item in page["Items"]]

    def advance(self, job_id: str, index: int, expected: BatchLineState, **changes: object) -> bool:
        key = {"pk": _pk(job_id), "sk": _line_sk(index)}
        item = self._client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        if item is None or item["state"]["S"] != expected:
            return False
        line = BatchLine.model_validate({**json.loads(item["doc"]["S"]), **changes})
        try:
            self._client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET #state = :new, doc = :doc",
                ConditionExpression="#state = :expected AND doc = :old",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":new": {"S": line.state},
                    ":doc": {"S": line.model_dump_json()},
                    ":expected": {"S": expected},
                    ":old": item["doc"],
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True


class S3Objects:
    """`ObjectStore` on the batch bucket (versioned: an object's version is its S3 version id)."""

    def __init__(self, bucket: str, client: Any) -> None:
        self.bucket = bucket
        self._client = client

    def get(self, key: str, version: str | None = None) -> tuple[bytes, str]:
        arguments = {"Bucket": self.bucket, "Key": key, **({"VersionId": version} if version else {})}
        try:
            answer = self._client.get_object(**arguments)
        except self._client.exceptions.NoSuchKey as exc:
            raise KeyError(key) from exc
        data: bytes = answer["Body"].read()
        return data, str(answer.get("VersionId") or answer["ETag"].strip('"'))

    def put(self, key: str, data: bytes) -> str:
        answer = self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/jsonl")
        return str(answer.get("VersionId") or answer["ETag"].strip('"'))


def default_s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 3}))
