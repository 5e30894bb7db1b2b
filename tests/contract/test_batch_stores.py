"""The batch ports: `BatchJobs` on SQLite and on DynamoDB (moto's server), `ObjectStore` on a
folder and on S3 (versioned bucket). Same promises: one job per id (a half-written job is finished,
not duplicated), lines in file order, a line moves only from the state the caller expects (racing
workers move it once), objects read back by version."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.aws.batch import DynamoBatchJobs, S3Objects, batch_jobs_key_schema
from llm_gateway.adapters.local.batch import FolderObjects, SqliteBatchJobs
from llm_gateway.ports import BatchJob, BatchJobs, BatchLine, ObjectStore
from tests.support.moto_server import MotoServer


@pytest.fixture(params=["sqlite", "dynamodb"])
def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BatchJobs]:
    if request.param == "sqlite":
        local = SqliteBatchJobs(tmp_path / "jobs.db")
        yield local
        local.close()
        return
    # One request at a time, as DynamoDB makes each request atomic (moto's backend is not thread-safe).
    moto: MotoServer = request.getfixturevalue("moto_serialised")
    client = moto.client("dynamodb")
    table = f"batch-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **batch_jobs_key_schema())
    yield DynamoBatchJobs(table, client)


@pytest.fixture(params=["folder", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "folder":
        return FolderObjects(tmp_path / "bucket")
    moto: MotoServer = request.getfixturevalue("moto")
    client = moto.client("s3")
    bucket = f"batches-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return S3Objects(bucket, client)


def _job(job_id: str, tenant: str = "acme", at: float = 100.0) -> BatchJob:
    return BatchJob(
        job_id=job_id, tenant=tenant, source="batches/in/acme/a.jsonl", version="v1", created_at=at, updated_at=at,
        requests=3, invalid=0,
    )  # fmt: skip


def _lines(job_id: str, count: int = 30) -> list[BatchLine]:
    return [BatchLine(job_id=job_id, index=i, line=i + 1, custom_id=f"c{i}", gateway_state="{}") for i in range(count)]


def test_a_job_is_created_once_with_its_lines_in_order(jobs: BatchJobs) -> None:
    assert jobs.create(_job("j1"), _lines("j1"))
    assert not jobs.create(_job("j1"), _lines("j1", 5))  # the same id: nothing changes
    assert [line.custom_id for line in jobs.lines("j1")] == [f"c{i}" for i in range(30)]
    found = jobs.job("j1")
    assert found is not None and found.requests == 3 and jobs.job("nope") is None
    jobs.create(_job("j2", "acme", 200.0), [])
    jobs.create(_job("j3", "globex", 300.0), [])
    assert [j.job_id for j in jobs.jobs("acme")] == ["j2", "j1"]
    assert [j.job_id for j in jobs.jobs()] == ["j3", "j2", "j1"]
    jobs.update_job("j1", status="completed", results_key="out/r.jsonl")
    updated = jobs.job("j1")
    assert updated is not None and (updated.status, updated.results_key) == ("completed", "out/r.jsonl")
    with pytest.raises(KeyError):
        jobs.update_job("nope", status="failed")


def test_a_line_moves_only_from_the_expected_state(jobs: BatchJobs) -> None:
    jobs.create(_job("j1"), _lines("j1", 3))
    assert jobs.advance("j1", 1, "new", state="ready", model="gpt")
    assert not jobs.advance("j1", 1, "new", state="ready", model="other")  # already moved
    assert jobs.advance("j1", 1, "ready", state="submitted", provider_batch="b1")
    assert jobs.advance("j1", 1, "submitted", provider_batch="b2")  # same state, new field
    moved = jobs.lines("j1", "submitted")
    assert [(line.index, line.model, line.provider_batch) for line in moved] == [(1, "gpt", "b2")]
    assert [line.index for line in jobs.lines("j1", "new")] == [0, 2]
    assert not jobs.advance("j1", 99, "new", state="ready")


def test_racing_workers_move_each_line_once(jobs: BatchJobs) -> None:
    jobs.create(_job("j1"), _lines("j1", 12))
    wins: list[tuple[int, int]] = []
    lock = threading.Lock()

    def worker(number: int) -> None:
        for line in range(12):
            if jobs.advance("j1", line, "new", state="done", status=200, body=f"worker {number}"):
                with lock:
                    wins.append((line, number))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(line for line, _ in wins) == list(range(12))
    final = {line.index: line.body for line in jobs.lines("j1")}
    assert all(final[line] == f"worker {number}" for line, number in wins)


def test_objects_read_back_by_version(objects: ObjectStore) -> None:
    first = objects.put("batches/in/acme/a.jsonl", b"one\n")
    second = objects.put("batches/in/acme/a.jsonl", b"two\n")
    assert first != second
    assert objects.get("batches/in/acme/a.jsonl") == (b"two\n", second)
    assert objects.get("batches/in/acme/a.jsonl", second)[0] == b"two\n"
    if isinstance(objects, S3Objects):  # S3 keeps the old version; a folder only the current one
        assert objects.get("batches/in/acme/a.jsonl", first)[0] == b"one\n"
    else:
        with pytest.raises(KeyError):
            objects.get("batches/in/acme/a.jsonl", first)
    with pytest.raises(KeyError):
        objects.get("batches/in/acme/missing.jsonl")


def test_a_job_whose_creator_died_midway_is_finished_by_the_next(moto: MotoServer) -> None:
    client: Any = moto.client("dynamodb")
    table = f"batch-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **batch_jobs_key_schema())
    store = DynamoBatchJobs(table, client)
    job = _job("j1")
    # What a creator that died after its first put leaves: the job record, incomplete, no lines.
    client.put_item(
        TableName=table,
        Item={
            "pk": {"S": "job#j1"},
            "sk": {"S": "job"},
            "tenant": {"S": "acme"},
            "created_at": {"N": "100"},
            "doc": {"S": job.model_dump_json()},
            "complete": {"BOOL": False},
        },
    )
    assert store.create(job, _lines("j1", 40))
    assert len(store.lines("j1")) == 40
    assert not store.create(job, _lines("j1", 40))


def test_the_cli_reads_a_deployments_job_table(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llm_gateway.cli.main import main

    client: Any = moto.client("dynamodb")
    table = f"batch-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **batch_jobs_key_schema())
    DynamoBatchJobs(table, client).create(_job("j1"), _lines("j1", 3))
    DynamoBatchJobs(table, client).advance("j1", 0, "new", state="done", status=200)
    for name, value in moto.environment().items():
        monkeypatch.setenv(name, value)
    assert main(["batch", "status", "--table", table]) == 0
    assert capsys.readouterr().out.startswith("j1 acme running batches/in/acme/a.jsonl: 1 done, 2 new")
    assert main(["batch", "results", "j1", "--table", table]) == 2
