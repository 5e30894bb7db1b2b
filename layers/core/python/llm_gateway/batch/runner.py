"""Batch jobs: a JSONL file of requests uploaded under `batches/in/<tenant>/` becomes a results file
under `batches/out/<tenant>/<job>/`, through the same guardrails, caches and accounting as the
online path.

A job moves every line through states kept in the `BatchJobs` store, so any step can die and be
run again (a Lambda timeout, a killed CLI) without losing or repeating a line:

    new ──prepare──> ready ──dispatch──> submitted ──collect──> done
       └─(refused, cache hit)──────────────────────────────────> done
                       └──(answered in bounded parallel chunks)─> done

- prepare: the chain's guard, cache and router steps per line (`InProcessRunner.run(stop_before=
  "invoke")`): a refusal or a cache hit is the line's answer; otherwise its chain state waits.
- dispatch: lines for models with a provider batch API go to it in one provider batch per model
  (`batch.providers`); the others are answered now, a few at a time, by the invoke, moderate and
  finish steps.
- collect: a finished provider batch's answers go through moderate and finish per line; a line
  it throttled, failed or let expire is answered online instead (the request's own fault, a 4xx,
  is its answer).
- complete: once every line is done, results.jsonl (answers, in input order) and errors.jsonl
  (invalid, refused and failed lines) are written and the job is marked completed.

Each move is a conditional update (`BatchJobs.advance` from the expected state): a line is
answered, charged and written once. Usage and budgets are keyed by the line's request id
(`<job>-<index>`), so a line re-run after a crash between its answer and its state change is
recorded once; only its provider call may be repeated.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backoff import doubling_delay
from ..contracts import Attempt, CallerContext, FinishResult, GatewayState, InvokeResult
from ..errors import GatewayError, InternalError, ProviderBadRequest, ProviderUnavailable
from ..invoke.step import build_completion
from ..ports import BatchJob, BatchJobs, BatchLine, ObjectStore
from ..providers.batches import BatchAPI, BatchItem, BatchResults
from ..runner import InProcessRunner
from .format import BatchFileError, InputLine, InvalidLine, jsonl, parse_input, result_record

if TYPE_CHECKING:
    from ..deps import Deps

IN_PREFIX = "batches/in/"
OUT_PREFIX = "batches/out/"
EVALS_FOLDER = "evals/"  # batches/in/<tenant>/evals/...: an eval suite's run (`llm-gateway eval run --batch-bucket`)
Progress = Callable[[int, int], None]  # (lines done, lines in the job)
PENDING = "pending:"  # a submitted line's provider batch before the provider has named it
DIRECT = "direct"  # a ready line to answer online (its provider batch could not answer it)


class BatchRejected(ValueError):
    """An object that cannot start a job: outside `batches/in/<tenant>/`, or an unknown tenant."""


def tenant_of(deps: Deps, key: str) -> str:
    """The tenant a batch file belongs to: its key is `batches/in/<tenant>/<name>`."""
    if not key.startswith(IN_PREFIX):
        raise BatchRejected(f"batch files go under {IN_PREFIX}<tenant>/, not {key}")
    tenant, _, name = key[len(IN_PREFIX) :].partition("/")
    if not tenant or not name:
        raise BatchRejected(f"batch files go under {IN_PREFIX}<tenant>/<name>, not {key}")
    if tenant not in deps.config.tenants:
        raise BatchRejected(f"no tenant '{tenant}' in the configuration")
    return tenant


def is_eval(job: BatchJob) -> bool:
    """A job of an eval suite's run: its file is under `batches/in/<tenant>/evals/`."""
    return job.source.startswith(f"{IN_PREFIX}{job.tenant}/{EVALS_FOLDER}")


def job_id_for(tenant: str, key: str, version: str) -> str:
    """One job per object version: the same upload delivered twice is the same job."""
    return "batch_" + hashlib.sha256(f"{tenant}\0{key}\0{version}".encode()).hexdigest()[:24]


def batch_object(jobs: BatchJobs, job: BatchJob) -> dict[str, Any]:
    """A job as the OpenAI Batch API describes a batch (`GET /v1/batches/{id}`), with its lines
    counted: `completed` answered, `failed` refused, failed or invalid."""
    lines = jobs.lines(job.job_id)
    done = [line for line in lines if line.state == "done"]
    status = {"running": "in_progress", "completed": "completed", "failed": "failed"}[job.status]
    return {
        "id": job.job_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "status": status,
        "input_file": job.source,
        "output_file": job.results_key,
        "error_file": job.errors_key,
        "created_at": int(job.created_at),
        "completed_at": int(job.updated_at) if job.status == "completed" else None,
        "errors": None if job.message is None else {"data": [{"code": "invalid_file", "message": job.message}]},
        "request_counts": {
            "total": len(lines),
            "completed": sum(1 for line in done if line.status == 200),
            "failed": sum(1 for line in done if line.status != 200),
        },
    }


def output_keys(tenant: str, job_id: str) -> tuple[str, str]:
    return f"{OUT_PREFIX}{tenant}/{job_id}/results.jsonl", f"{OUT_PREFIX}{tenant}/{job_id}/errors.jsonl"


@dataclass(frozen=True)
class JobCounts:
    total: int
    by_state: dict[str, int]
    answered: int  # done with status 200
    failed: int  # done with an error (invalid lines included)

    @property
    def done(self) -> int:
        return self.by_state.get("done", 0)


class BatchRunner:
    """Runs jobs over the ports; every method may be called again after a crash."""

    def __init__(
        self,
        deps: Deps,
        jobs: BatchJobs,
        objects: ObjectStore,
        *,
        parallel: int = 4,
        on_progress: Progress | None = None,
    ) -> None:
        self.deps = deps
        self.jobs = jobs
        self.objects = objects
        self.parallel = parallel
        self.on_progress = on_progress
        self.runner = InProcessRunner(deps)

    # ------------------------------------------------------------------ submit

    def submit(self, key: str, version: str | None = None) -> tuple[BatchJob, bool]:
        """Create the job of an uploaded file, that version of it when given (False: this object
        version already has a job)."""
        tenant = tenant_of(self.deps, key)
        data, version = self.objects.get(key, version)
        job_id = job_id_for(tenant, key, version)
        existing = self.jobs.job(job_id)
        if existing is not None:
            return existing, False
        now = self.deps.clock()
        problem = None
        try:
            valid, invalid = parse_input(data)
        except BatchFileError as exc:  # the file as a whole is no batch: a failed job says why
            valid, invalid, problem = [], [], str(exc)
        job = BatchJob(
            job_id=job_id,
            tenant=tenant,
            source=key,
            version=version,
            status="running" if problem is None else "failed",
            created_at=now,
            updated_at=now,
            requests=len(valid),
            invalid=len(invalid),
            message=problem,
        )
        entries: list[InputLine | InvalidLine] = sorted([*valid, *invalid], key=lambda e: e.line)
        lines = [self._line(job, index, entry, now) for index, entry in enumerate(entries)]
        created = self.jobs.create(job, lines)
        self.deps.metrics.count("batch_jobs", tenant=tenant, outcome="created" if created else "duplicate")
        return (job if created else self.jobs.job(job_id) or job), created

    def _line(self, job: BatchJob, index: int, entry: InputLine | InvalidLine, now: float) -> BatchLine:
        if isinstance(entry, InvalidLine):
            record = entry.error_record()
            return BatchLine(
                job_id=job.job_id,
                index=index,
                line=entry.line,
                custom_id=entry.custom_id,
                state="done",
                status=400,
                body=json.dumps(record, separators=(",", ":")),
            )
        caller = CallerContext(batch_tenant=job.tenant)
        if is_eval(job):  # an eval measures the model: no cache answers it, no rollout or experiment arm takes it
            caller = caller.model_copy(update={"cache_control": "no-cache, no-store", "offline": True})
        state = GatewayState(
            request_id=f"{job.job_id}-{index}",
            received_at=now,
            request=entry.request,
            caller=caller,
        )
        return BatchLine(
            job_id=job.job_id,
            index=index,
            line=entry.line,
            custom_id=entry.custom_id,
            gateway_state=state.model_dump_json(),
        )

    # ------------------------------------------------------------------ steps

    def prepare(self, job_id: str, deadline: float | None = None) -> bool:
        """Guard, cache and route the new lines: refusals and cache hits are done here. False when
        `deadline` (`time.monotonic()`) came first and lines are left."""
        for line in self.jobs.lines(job_id, "new"):
            if _past(deadline):
                self._progress(job_id)
                return False
            state = self._state(line)
            try:
                self.runner.run(state, stop_before="invoke")
            except GatewayError as error:
                self._done(line, "new", state, error=error)
                continue
            if state.finish is not None:  # refused by a guard, or answered from the cache
                self._done(line, "new", state, finish=state.finish)
            else:
                assert state.router is not None
                self.jobs.advance(
                    job_id,
                    line.index,
                    "new",
                    state="ready",
                    model=state.router.candidates[0],
                    gateway_state=state.model_dump_json(),
                )
        self._progress(job_id)
        return True

    def dispatch(self, job_id: str, deadline: float | None = None) -> bool:
        """Send the ready lines of models with a provider batch API to it (one batch per model);
        answer the others `parallel` at a time (invoke, moderate, finish per line).

        A provider batch's members are recorded before it is created (the lines move to
        `submitted` under a pending label), so a run that dies in between finds them again and
        creates or finds (OpenAI: by metadata) that one batch, not a second one."""
        direct: list[BatchLine] = []
        by_model: dict[str, list[BatchLine]] = {}
        for line in self.jobs.lines(job_id, "ready"):
            assert line.model is not None
            # a provider batch answers one choice a line: a line asking for several is answered directly
            several = self._state(line).request.choices_wanted() > 1
            if line.provider_batch != DIRECT and not several and self._batch_api(line.model) is not None:
                by_model.setdefault(line.model, []).append(line)
            else:
                direct.append(line)
        unsent = {  # a group recorded by a run that died before creating its batch takes the rest
            line.model: line.provider_batch
            for line in self.jobs.lines(job_id, "submitted")
            if line.provider_batch is not None and line.provider_batch.startswith(PENDING)
        }
        for model_id, lines in by_model.items():
            pending = unsent.get(model_id) or f"{PENDING}{job_id}:{model_id}:{lines[0].index}"
            for line in lines:
                self.jobs.advance(job_id, line.index, "ready", state="submitted", provider_batch=pending)
        direct += self._submit_pending(job_id)
        return self._answer_all(job_id, direct, deadline)

    def _answer_all(self, job_id: str, lines: list[BatchLine], deadline: float | None) -> bool:
        """Answer `lines` directly, `parallel` at a time; False when `deadline` came first."""
        step = max(1, self.parallel)
        with ThreadPoolExecutor(max_workers=step) as pool:
            for start in range(0, len(lines), step):
                if _past(deadline):
                    return False
                list(pool.map(self._answer, lines[start : start + step]))
                self._progress(job_id)
        return True

    def _batch_api(self, model_id: str) -> BatchAPI | None:
        model = self.deps.config.models[model_id]
        provider = self.deps.providers.get(model.provider)
        return provider if model.uses_batch_api() and isinstance(provider, BatchAPI) else None

    def _submit_pending(self, job_id: str) -> list[BatchLine]:
        """Create (or find) the provider batch of each pending group; returns the lines to answer
        directly instead (back in `ready`: the provider refused the batch as a whole)."""
        groups: dict[str, list[BatchLine]] = {}
        for line in self.jobs.lines(job_id, "submitted"):
            if line.provider_batch is not None and line.provider_batch.startswith(PENDING):
                groups.setdefault(line.provider_batch, []).append(line)
        direct: list[BatchLine] = []
        for pending, lines in groups.items():
            model_id = lines[0].model
            assert model_id is not None
            api = self._api_of(model_id)
            model = self.deps.config.models[model_id]
            label = pending.removeprefix(PENDING)
            states = [self._state(line) for line in lines]
            try:
                batch_id = api.find_batch(label, model_id, model) or api.submit_batch(
                    [BatchItem(state.request_id, state.model_request()) for state in states], model_id, model, label
                )
            except ProviderBadRequest:  # one line the API cannot take: each line then gets its own verdict
                self.deps.metrics.count("batch_submissions", model=model_id, outcome="refused")
                for line in lines:
                    self.jobs.advance(job_id, line.index, "submitted", state="ready", provider_batch=None)
                direct += self.jobs.lines(job_id, "ready")
                continue
            self.deps.metrics.count("batch_submissions", model=model_id, outcome="submitted")
            for line in lines:
                self.jobs.advance(job_id, line.index, "submitted", provider_batch=batch_id)
        return direct

    def _api_of(self, model_id: str) -> BatchAPI:
        """The batch API of a model with submitted lines (asked even if the configuration has
        turned it off since: those lines are already with the provider)."""
        provider = self.deps.providers.get(self.deps.config.models[model_id].provider)
        if not isinstance(provider, BatchAPI):
            raise RuntimeError(f"model '{model_id}' has lines in a provider batch but its provider has no batch API")
        return provider

    def poll(self, job_id: str) -> bool:
        """Collect the answers of ended provider batches (moderate and finish per line); True when
        no line is waiting on a provider batch any more."""
        self._answer_all(job_id, self._submit_pending(job_id), None)  # a run died between recording and creating
        waiting: dict[tuple[str, str], list[BatchLine]] = {}
        for line in self.jobs.lines(job_id, "submitted"):
            assert line.provider_batch is not None and line.model is not None
            waiting.setdefault((line.provider_batch, line.model), []).append(line)
        for (batch_id, model_id), lines in waiting.items():
            api, model = self._api_of(model_id), self.deps.config.models[model_id]
            state = api.batch_state(batch_id, model_id, model)
            if state == "running":
                continue
            results = api.batch_results(batch_id, model_id, model) if state == "ended" else BatchResults({}, {})
            for line in lines:
                self._collect(line, model_id, results, batch_failed=state == "failed")
            self._progress(job_id)
        direct = [line for line in self.jobs.lines(job_id, "ready") if line.provider_batch == DIRECT]
        self._answer_all(job_id, direct, None)
        return not self.jobs.lines(job_id, "submitted")

    def _collect(self, line: BatchLine, model_id: str, results: BatchResults, *, batch_failed: bool) -> None:
        state = self._state(line)
        reply = results.replies.get(state.request_id)
        if reply is None:
            error = results.errors.get(state.request_id) or ProviderUnavailable(
                f"model '{model_id}': the provider batch {'failed' if batch_failed else 'returned no answer'}"
            )
            if not isinstance(error, ProviderBadRequest):
                # Throttled, failed or expired upstream: answered online instead (the invoke step's
                # retries and the route's fallbacks, at the online price), never lost.
                self.deps.metrics.count("batch_lines_retried_online", model=model_id)
                self.jobs.advance(line.job_id, line.index, "submitted", state="ready", provider_batch=DIRECT)
                return
            self.runner.fail(state, error)
            self._done(line, "submitted", state, error=error)
            return
        model = self.deps.config.models[model_id]
        state.invoke = InvokeResult(
            model=model_id,
            provider=model.provider,
            response=build_completion(state, self.deps, model_id, reply, model.batch_prices()),
            attempts=[Attempt(model=model_id, outcome="ok", latency_ms=0.0)],
            latency_ms=0.0,
        )
        try:
            self.runner.run(state, start_at="moderate")
        except GatewayError as error:
            self._done(line, "submitted", state, error=error)
            return
        assert state.finish is not None
        self._done(line, "submitted", state, finish=state.finish)

    def _answer(self, line: BatchLine) -> None:
        state = self._state(line)
        try:
            self.runner.run(state, start_at="invoke")
        except GatewayError as error:
            self._done(line, "ready", state, error=error)
            return
        except Exception:  # a bug or a store failure: recorded as failed (the runner audited it)
            self._done(line, "ready", state, error=InternalError("The gateway failed to process the request."))
            return
        assert state.finish is not None
        self._done(line, "ready", state, finish=state.finish)

    def complete(self, job_id: str) -> BatchJob:
        """Write the output files once every line is done; returns the job (completed or not)."""
        job = self._job(job_id)
        if job.status != "running":
            return job
        lines = self.jobs.lines(job_id)
        if any(line.state != "done" for line in lines):
            return job
        results = [json.loads(line.body or "{}") for line in lines if line.status == 200]
        errors = [json.loads(line.body or "{}") for line in lines if line.status != 200]
        results_key, errors_key = output_keys(job.tenant, job_id)
        self.objects.put(results_key, jsonl(results))
        self.objects.put(errors_key, jsonl(errors))
        self.jobs.update_job(
            job_id, status="completed", results_key=results_key, errors_key=errors_key, updated_at=self.deps.clock()
        )
        self.deps.metrics.count("batch_lines", len(results), tenant=job.tenant, outcome="answered")
        self.deps.metrics.count("batch_lines", len(errors), tenant=job.tenant, outcome="error")
        return self._job(job_id)

    def step(self, job_id: str, deadline: float | None = None) -> tuple[BatchJob, bool]:
        """Do what the job needs next, until `deadline`: prepare, dispatch, collect provider
        batches, complete. Returns the job and whether it now waits on a provider batch (look
        again later); a running job that does not wait has more to do at once."""
        job = self._job(job_id)
        if job.status != "running":
            return job, False
        if not self.prepare(job_id, deadline) or not self.dispatch(job_id, deadline):
            return job, False
        if not self.poll(job_id):
            return job, True
        return self.complete(job_id), False

    def run(self, job_id: str) -> BatchJob:
        """Every step in order, from wherever the job stands, polling provider batches with
        backoff (`deps.sleep`) until they end."""
        attempt, done_before = 0, -1
        while True:
            job, waiting = self.step(job_id)
            if job.status != "running":
                return job
            if waiting:
                self.deps.sleep(poll_delay_s(attempt))
                attempt += 1
                continue
            done = self.counts(job_id).done
            if done == done_before:
                raise RuntimeError(f"batch job {job_id} makes no progress")
            done_before = done

    # ------------------------------------------------------------------ status

    def counts(self, job_id: str) -> JobCounts:
        lines = self.jobs.lines(job_id)
        by_state: dict[str, int] = {}
        for line in lines:
            by_state[line.state] = by_state.get(line.state, 0) + 1
        answered = sum(1 for line in lines if line.state == "done" and line.status == 200)
        failed = sum(1 for line in lines if line.state == "done" and line.status != 200)
        return JobCounts(total=len(lines), by_state=by_state, answered=answered, failed=failed)

    # ------------------------------------------------------------------ helpers

    def _job(self, job_id: str) -> BatchJob:
        job = self.jobs.job(job_id)
        if job is None:
            raise KeyError(f"no batch job {job_id}")
        return job

    @staticmethod
    def _state(line: BatchLine) -> GatewayState:
        if line.gateway_state is None:
            raise RuntimeError(f"line {line.index} of {line.job_id} has no chain state")
        return GatewayState.model_validate_json(line.gateway_state)

    def _done(
        self,
        line: BatchLine,
        expected: Any,
        state: GatewayState,
        *,
        finish: FinishResult | None = None,
        error: GatewayError | None = None,
    ) -> None:
        if finish is None:
            assert error is not None
            finish = FinishResult(status=error.status, error=error.body())
        if finish.response is not None and finish.status == 200:
            body = finish.response.model_dump(mode="json", exclude_none=True)
        else:
            assert finish.error is not None
            body = finish.error.model_dump(mode="json", exclude_none=True)
        record = result_record(state.request_id, line.custom_id or "", finish.status, body)
        self.jobs.advance(
            line.job_id,
            line.index,
            expected,
            state="done",
            status=finish.status,
            body=json.dumps(record, separators=(",", ":"), ensure_ascii=False),
            gateway_state=None,
        )

    def _progress(self, job_id: str) -> None:
        if self.on_progress is not None:
            counts = self.counts(job_id)
            self.on_progress(counts.done, counts.total)


def poll_delay_s(attempt: int, first_s: float = 5.0, most_s: float = 300.0) -> float:
    """The wait before the next look at a provider batch: 5 s, 10 s, 20 s ... at most 5 minutes."""
    return doubling_delay(first_s, most_s, attempt)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline
