"""Every name the CDK app uses, in one place: paths, resource names, environment variables, policies.

Plain values only (no aws_cdk import), so tests and tools can read them without starting jsii.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROJECT = "llm-gateway"
STACK_PREFIX = "LlmGateway"  # stack name: LlmGateway-<stage>

# Source folders (relative to ROOT).
FUNCTIONS_DIR = "functions"
CORE_LAYER_DIR = "layers/core"  # holds python/llm_gateway, mounted as /opt/python/llm_gateway
PYPROJECT = "pyproject.toml"
AUTHORIZER_FOLDER = "authorizer"  # functions/authorizer/handler.py: TOKEN authorizer
STREAM_FOLDER = "stream"  # functions/stream/{run.sh,app.py}: the ASGI app behind Lambda Web Adapter
ASSET_EXCLUDES = ("**/__pycache__", "**/*.pyc", "**/*.egg-info")

# Lambda runtime: Python 3.12 on the stage's architecture (arm64 unless cdk.json says x86_64); the
# third-party layers are built for exactly that platform (cdk/lambda_bundles.py).
HANDLER = "handler.lambda_handler"
STREAM_HANDLER = "run.sh"
STEP_TIMEOUT_S = 30
INVOKE_TIMEOUT_MARGIN_S = 6  # the invoke Lambda runs the REST deadline plus this margin (29 s in all)
STREAM_TIMEOUT_S = 300
AUTHORIZER_TIMEOUT_S = 5
AUTHORIZER_MEMORY_MB = 256
AUTHORIZER_CACHE_TTL_S = 300
STATE_MACHINE_TIMEOUT_S = 300  # Express executions run at most 5 minutes

# The gateway configuration file ships in its own small layer (see docs/deploy.md).
CONFIG_LAYER_SUBDIR = "gateway"
CONFIG_FILE_NAME = "config.yaml"
CONFIG_PATH_IN_LAMBDA = f"/opt/{CONFIG_LAYER_SUBDIR}/{CONFIG_FILE_NAME}"
# The prepared (quantised) embedding model ships prebuilt in a layer: Lambda's /opt is read-only.
MODELS_LAYER_SUBDIR = "models"
MODEL_DIR_IN_LAMBDA = f"/opt/{MODELS_LAYER_SUBDIR}"
ENV_MODEL_DIR = "LLM_GATEWAY_MODEL_DIR"

# Lambda environment.
ENV_CONFIG_PATH = "GATEWAY_CONFIG_PATH"
ENV_STORE = "GATEWAY_STORE"
ENV_USAGE_TABLE = "USAGE_TABLE"
ENV_AUDIT_TABLE = "AUDIT_TABLE"
ENV_MOMENTO_SECRET = "MOMENTO_SECRET_ARN"  # noqa: S105 - the variable's name, not a secret
ENV_MOMENTO_ENDPOINT = "MOMENTO_ENDPOINT"
ENV_MOMENTO_CACHE = "MOMENTO_CACHE_NAME"
ENV_PROVIDER_KEYS_SECRET = "PROVIDER_KEYS_SECRET_ARN"  # noqa: S105 - the variable's name, not a secret
ENV_PSEUDONYM_SECRET = "PSEUDONYM_SECRET_ARN"  # noqa: S105 - the variable's name, not a secret
ENV_REVIEW_QUEUE_URL = "REVIEW_QUEUE_URL"
ENV_REVIEW_TABLE = "REVIEW_TABLE"
ENV_BUDGET_TABLE = "BUDGET_TABLE"
ENV_CONVERSATION_TABLE = "CONVERSATION_TABLE"
ENV_TRACE_TABLE = "TRACE_TABLE"
ENV_ROLLOUT_TABLE = "ROLLOUT_TABLE"
ENV_ROLLOUT_ALARMS = "ROLLOUT_ALARMS"
ENV_SHADOW_QUEUE_URL = "SHADOW_QUEUE_URL"
ENV_SHADOW_TABLE = "SHADOW_TABLE"
ENV_BATCH_TABLE = "BATCH_TABLE"
ENV_BATCH_BUCKET = "BATCH_BUCKET"
ENV_IDEMPOTENCY_TABLE = "IDEMPOTENCY_TABLE"
ENV_BATCH_STATE_MACHINE = "BATCH_STATE_MACHINE_ARN"
ENV_DISTILL_BUCKET = "DISTILL_BUCKET"
POWERTOOLS_SERVICE_NAME = "llm-gateway"
POWERTOOLS_METRICS_NAMESPACE = "LlmGateway"
# The service-level metrics the alarms read (`llm_gateway.aws.observability.SERVICE_LEVEL`).
METRIC_REQUESTS = "requests"
METRIC_REQUEST_DURATION = "request_duration_seconds"
METRIC_ERRORS = "errors"
METRIC_COST = "cost_usd"
METRIC_FEEDBACK_SCORE = "feedback_score"
METRIC_GUARD_TRIGGERS = "guard_triggers"
# Written with their labels only (no service-level copy); the dashboard reads them by their dimensions.
METRIC_TIME_TO_FIRST_TOKEN = "time_to_first_token_seconds"  # noqa: S105 - a metric's name, not a secret
METRIC_TOKENS = "tokens"
METRIC_CACHE_LOOKUPS = "cache_lookups"

# Stores.
TABLE_PARTITION_KEY = "tenant"
TABLE_SORT_KEY = "sk"
TABLE_TTL_ATTRIBUTE = "expires_at"
TABLE_WRITE_ACTIONS = ("dynamodb:PutItem", "dynamodb:UpdateItem")  # records are written, never read back
USAGE = "usage"
AUDIT = "audit"
MOMENTO = "momento"
PROVIDER_KEYS = "provider_keys"  # JSON object: environment variable name -> provider API key
PSEUDONYMS = "pseudonyms"  # the generated key of the audit and usage records' pseudonyms
REVIEW = "review"  # tier 4: send flagged items to the review queue
BUDGETS = "budgets"  # reserve (router), settle (finish), release (record_failure)
TRACES = "traces"  # write each request's trace (the functions that finish a request)
TRACE_WRITE_ACTIONS = ("dynamodb:PutItem",)
TRACES_API = "traces_api"  # read traces and add feedback too (the streaming function's routes)
TRACE_API_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
CONVERSATIONS = "conversations"  # the Responses API's stored responses (the streaming function)
CONVERSATION_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query")
BUDGET_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query")
REVIEW_INGEST_FOLDER = "review_ingest"  # consumes the review queue into the review table
REVIEW_QUEUE_RECEIVES = 5  # deliveries before a message goes to the dead-letter queue
BATCH_JOBS = "batch_jobs"  # the job table: jobs and their lines
IDEMPOTENCY = "idempotency"  # batch_submit's Powertools idempotency records
BATCH_JOB_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:Query",
)
BATCH_JOBS_READ = "batch_jobs_read"  # the job table, read only: jobs and their lines for the status route
BATCH_JOB_READ_ACTIONS = ("dynamodb:GetItem", "dynamodb:Query")
IDEMPOTENCY_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
BATCH_SUBMIT_FOLDER = "batch_submit"  # S3 ObjectCreated -> a job and its workflow
BATCH_WORK_FOLDER = "batch_work"  # the batch workflow's task
BATCH_STATUS_FOLDER = "batch_status"  # GET /v1/batches[/{batch_id}] on the REST API
ROLLOUTS = "rollouts"  # read the routes' rollouts (the functions that plan a route)
ROLLOUT_READ_ACTIONS = ("dynamodb:Query",)
ROLLOUT_GATES_FOLDER = "rollout_gates"  # the rollouts' gates, on a schedule
ROLLOUT_GATES_MINUTES = 1
ROLLOUT_GATES = "rollout_gates"  # judge the rollouts: read them, the audit log and feedback; move them
ROLLOUT_GATE_ACTIONS = (  # reads, and the transactions that move a rollout (their items' actions too)
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:TransactWriteItems",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
)
AUDIT_READ_ACTIONS = ("dynamodb:Query",)
SHADOW = "shadow"  # hand sampled copies of answered requests to the shadow queue
SHADOW_PAIRS = "shadow_pairs"  # keep the shadow pairs and the routes' daily shadow spend
SHADOW_PAIR_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
SHADOW_FOLDER = "shadow"  # consumes the shadow queue: the shadow model's answers, the pairs
SHADOW_TIMEOUT_S = 120  # one batch of copies, each a model call with its retries
SHADOW_BATCH = 5
SHADOW_CONCURRENCY = 4  # copies answered at once: bounds what they may pass the daily budget by
TRACE_FEEDBACK_ACTIONS = ("dynamodb:BatchGetItem",)
BATCH_SUBMIT_TIMEOUT_S = 120
BATCH_WORK_TIMEOUT_S = 900
BATCH_WORKFLOW_HOURS = 30  # a provider batch may take 24 h
BATCH_IN_PREFIX = "batches/in/"
BATCH_OUT_PREFIX = "batches/out/"
BATCH_IN_DAYS = 30
CDK_NOTIFICATIONS_HANDLER = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"  # CDK's singleton
BATCH_OUT_DAYS = 90

# Distillation on AWS (docs/distillation.md): the workflow's two functions, its files in the batch
# bucket (object key patterns, `llm_gateway.aws.distill_run` has the layout), its SageMaker jobs.
DISTILL_COLLECT_FOLDER = "distill_collect"  # the tenant's traces -> the collection under data/
DISTILL_EVALUATE_FOLDER = "distill_evaluate"  # the batch transform's answers scored -> eval/report.json
DISTILL_TIMEOUT_S = 900
DISTILL_MEMORY_MB = 2048
DISTILL_DATA = "distill/*/data/*"  # the collection: written by distill_collect, read by the jobs
DISTILL_MODEL = "distill/*/model/*"  # the training job's output
DISTILL_EVAL = "distill/*/eval/*"  # the batch transform's output and the report
DISTILL_WORKFLOW_HOURS = 30  # the training job's longest run (`distill.max_runtime_hours`) and the transform
DISTILL_JOB_PREFIX = "distill-"  # every SageMaker job of a run is named distill-<tenant>-<run_id>-<digest>
DISTILL_PACKAGE_GROUP = "students"  # the model package group: llm-gateway-<stage>-students
# Where the GPU image is when the stage names none (model_server/Dockerfile.gpu, pushed by the
# operator): <account>.dkr.ecr.<region>.amazonaws.com/<this>:latest
DISTILL_DEFAULT_REPOSITORY = "llm-gateway-model-server-gpu"
TRACES_QUERY = "traces_query"  # read a tenant's traces (distill_collect: one Query per page)
TRACE_QUERY_ACTIONS = ("dynamodb:Query",)

# Least privilege: which function folder reaches which store. Folders not listed reach none. Every
# function that builds the AWS dependencies (`aws.runtime.deps`) reads the pseudonym key.
FUNCTION_ACCESS: dict[str, frozenset[str]] = {
    # rate-limit counters; the LLM judge (provider keys) and flagged requests (review queue)
    "guard": frozenset({MOMENTO, PROVIDER_KEYS, REVIEW, PSEUDONYMS, ROLLOUTS}),
    "cache_lookup": frozenset({MOMENTO, PSEUDONYMS}),  # exact and semantic cache reads
    "invoke": frozenset({PROVIDER_KEYS, PSEUDONYMS}),  # OpenAI / Anthropic API keys
    "moderate": frozenset({PROVIDER_KEYS, REVIEW, PSEUDONYMS}),  # the LLM judge; flagged answers
    "router": frozenset({BUDGETS, PSEUDONYMS}),  # budget reservations
    # cache store, usage and audit records, settling
    "finish": frozenset({MOMENTO, USAGE, AUDIT, BUDGETS, TRACES, PSEUDONYMS, SHADOW}),
    # the audit record and trace of a failed request, its release
    "record_failure": frozenset({AUDIT, BUDGETS, TRACES, PSEUDONYMS}),
    STREAM_FOLDER: frozenset(
        {MOMENTO, USAGE, AUDIT, PROVIDER_KEYS, REVIEW, BUDGETS, CONVERSATIONS, TRACES_API, PSEUDONYMS, ROLLOUTS, SHADOW}
    ),  # runs the whole chain in-process, the Responses API, traces and feedback
    BATCH_SUBMIT_FOLDER: frozenset(
        {BATCH_JOBS, IDEMPOTENCY, PSEUDONYMS}
    ),  # creates jobs (reads the bucket's batches/in/)
    # runs the whole chain in-process, line by line (reads batches/in/, writes batches/out/)
    BATCH_WORK_FOLDER: frozenset(
        {MOMENTO, USAGE, AUDIT, PROVIDER_KEYS, REVIEW, BUDGETS, BATCH_JOBS, TRACES, PSEUDONYMS}
    ),
    BATCH_STATUS_FOLDER: frozenset({BATCH_JOBS_READ}),  # the caller's tenant's jobs and their lines
    ROLLOUT_GATES_FOLDER: frozenset({ROLLOUT_GATES}),  # the rollouts, their audit records and feedback
    SHADOW_FOLDER: frozenset({PROVIDER_KEYS, PSEUDONYMS, SHADOW_PAIRS}),  # calls the shadow models, keeps the pairs
    DISTILL_COLLECT_FOLDER: frozenset({TRACES_QUERY}),  # the tenant's traces (and writes distill/*/data/)
}

# State machine states that are not steps of the chain, and where they put the HTTP answer.
HTTP_RESULT = "http"  # $.http: {"status", "body" (JSON text), "retry_after_s"}
RESPOND_CHOICE = "respond"
RESPOND_OK = "respond_ok"
RESPOND_ERROR = "respond_error"
DONE = "done"

# REST API.
API_PATH = ("v1", "chat", "completions")
BATCHES_PATH = ("v1", "batches")  # GET, and GET .../{BATCH_ID_PARAMETER}: the batch_status function
BATCH_ID_PARAMETER = "batch_id"
AUTHORIZER_CONTEXT_KEY = "api_key_sha256"
AUTHORIZER_HEADER = "Authorization"
AUTHORIZER_HEADER_PATTERN = r"^[Bb]earer \S+$"

# AWS Lambda Web Adapter (https://github.com/aws/aws-lambda-web-adapter): the published layers.
WEB_ADAPTER_ACCOUNT = "753240598075"
WEB_ADAPTER_LAYERS = {"arm64": "LambdaAdapterLayerArm64", "x86_64": "LambdaAdapterLayerX86"}
WEB_ADAPTER_LAYER_VERSION = 28
WEB_ADAPTER_PORT = 8080

# CDK context keys.
CONTEXT_STAGE = "stage"
CONTEXT_STAGES = "stages"
CONTEXT_SKIP_BUNDLING = "skip_bundling"  # `-c skip_bundling=true`: synthesize without building layers
# `-c bundle_for_this_machine=true`: build the layers for this machine's CPU and Python, so tests can
# import each function from its bundle here (such an assembly is not for deploying).
CONTEXT_BUNDLE_FOR_THIS_MACHINE = "bundle_for_this_machine"
BUNDLING_STACKS = "aws:cdk:bundling-stacks"


def stack_name(stage: str) -> str:
    return f"{STACK_PREFIX}-{stage}"


def resource_name(stage: str, suffix: str) -> str:
    """A physical name that is unique per stage: llm-gateway-<stage>-<suffix>."""
    return f"{PROJECT}-{stage}-{suffix.replace('_', '-')}"


def web_adapter_layer_arn(region: str, architecture: str = "arm64") -> str:
    layer = WEB_ADAPTER_LAYERS[architecture]
    return f"arn:aws:lambda:{region}:{WEB_ADAPTER_ACCOUNT}:layer:{layer}:{WEB_ADAPTER_LAYER_VERSION}"
