"""The synthesized stack: functions and layers, the state machine built from pipeline.py, the API,
least-privilege IAM, and a clean cdk-nag report."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Annotations, Match

from cdk import constants as c
from cdk import lambda_bundles as bundles
from cdk.constructs.api import request_schema
from llm_gateway.pipeline import CAUGHT_ERRORS, FAILED, FINISH, STEPS, TASK_RETRY
from tests.infrastructure.cfn import (
    actions,
    api_methods,
    flatten,
    functions_by_folder,
    resource_refs,
    resources,
    role_statements,
    state_machine,
    state_machine_definition,
)
from tests.infrastructure.synth import Synthesized, synthesize

CHAIN_FOLDERS = [step.handler for step in (*STEPS, FINISH, FAILED)]


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> dict[str, Any]:
    return dev.to_json()


@pytest.fixture(scope="module")
def definition(template: dict[str, Any]) -> dict[str, Any]:
    return state_machine_definition(template)


def main_path(definition: dict[str, Any]) -> list[str]:
    """Task states from StartAt, following Next and each Choice's Default (the no-exit path)."""
    tasks, name = [], definition["StartAt"]
    while name is not None:
        state = definition["States"][name]
        if state["Type"] == "Task":
            tasks.append(name)
        name = state.get("Default") if state["Type"] == "Choice" else state.get("Next")
    return tasks


def reachable(definition: dict[str, Any], start: str) -> list[dict[str, Any]]:
    """Every state reachable from `start` (excluded) through Next, Choices and Default."""
    seen, frontier = set(), [start]
    while frontier:
        state = definition["States"][frontier.pop()]
        targets = [state.get("Next"), state.get("Default"), *(choice["Next"] for choice in state.get("Choices", []))]
        for target in filter(None, targets):
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return [definition["States"][name] for name in seen]


# ----------------------------------------------------------------------------- functions and layers


def test_every_chain_step_has_an_arm64_python312_function_from_its_own_folder(template: dict[str, Any]) -> None:
    functions = functions_by_folder(template)
    assert set(CHAIN_FOLDERS) <= set(functions)
    for folder in CHAIN_FOLDERS:
        _, properties = functions[folder]
        assert properties["Runtime"] == "python3.12"
        assert properties["Architectures"] == ["arm64"]
        assert properties["Handler"] == c.HANDLER
        assert properties["TracingConfig"] == {"Mode": "Active"}
        assert properties["LoggingConfig"]["LogFormat"] == "JSON"
        assert "ReservedConcurrentExecutions" not in properties  # dev: unreserved
        environment = properties["Environment"]["Variables"]
        assert environment[c.ENV_CONFIG_PATH] == c.CONFIG_PATH_IN_LAMBDA
        stores = {c.ENV_STORE, c.ENV_USAGE_TABLE, c.ENV_AUDIT_TABLE, c.ENV_MOMENTO_ENDPOINT, c.ENV_MOMENTO_CACHE}
        assert stores <= set(environment)
        # a secret's ARN only where the function may read it (test_a_function_is_told_only_of_the_secrets...)
        access = c.FUNCTION_ACCESS.get(folder, frozenset())
        assert (c.ENV_PROVIDER_KEYS_SECRET in environment) == (c.PROVIDER_KEYS in access), folder
        assert c.ENV_MOMENTO_SECRET in environment, folder  # read when a Momento client is built
        assert environment[c.ENV_STORE] == "aws"
        assert environment["POWERTOOLS_SERVICE_NAME"] == c.POWERTOOLS_SERVICE_NAME
        assert environment["POWERTOOLS_METRICS_NAMESPACE"] == c.POWERTOOLS_METRICS_NAMESPACE
        assert environment["POWERTOOLS_LOG_LEVEL"] == "DEBUG"


def test_function_code_is_its_folder_only(dev: Synthesized, template: dict[str, Any]) -> None:
    # Given the assets CDK staged for the functions, each holds exactly its folder's files
    for folder, (_, properties) in functions_by_folder(template).items():
        asset = dev.outdir / f"asset.{properties['Code']['S3Key'].removesuffix('.zip')}"
        source = c.ROOT / c.FUNCTIONS_DIR / folder
        staged = sorted(p.relative_to(asset).as_posix() for p in asset.rglob("*"))
        expected = sorted(
            p.relative_to(source).as_posix()
            for p in source.rglob("*")
            if "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
        assert staged == expected, folder


def _layer_ids(template: dict[str, Any], construct_id: str) -> list[str]:
    """Logical ids of the layer `Layers/<construct_id>` (CDK appends an 8-character hash)."""
    layers = resources(template, "AWS::Lambda::LayerVersion")
    return [key for key in layers if key[:-8] == f"Layers{construct_id}"]


def test_every_function_gets_core_config_and_the_deps_layer_of_exactly_its_features(template: dict[str, Any]) -> None:
    for layer in resources(template, "AWS::Lambda::LayerVersion").values():
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
        assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    core, config = _layer_ids(template, "Core"), _layer_ids(template, "Config")
    assert len(core) == 1 and len(config) == 1
    functions = functions_by_folder(template)
    assert set(functions) <= set(bundles.FUNCTION_FEATURES)
    for folder, (_, properties) in functions.items():
        attached = properties["Layers"]
        assert len(attached) <= bundles.MAX_LAYERS, folder
        name = bundles.deps_layer_name(bundles.FUNCTION_FEATURES[folder])
        deps = _layer_ids(template, "".join(part.capitalize() for part in name.split("-")))
        assert len(deps) == 1, (folder, name)
        assert {"Ref": core[0]} in attached and {"Ref": config[0]} in attached and {"Ref": deps[0]} in attached
        others = [r for r in attached if isinstance(r, dict) and str(r.get("Ref", "")).startswith("LayersDeps")]
        assert others == [{"Ref": deps[0]}], folder  # one deps layer: no function carries another's packages


def test_models_layer_and_model_dir_reach_exactly_the_functions_that_embed(template: dict[str, Any]) -> None:
    models = _layer_ids(template, "Models")
    assert len(models) == 1
    functions = functions_by_folder(template)
    embedding = {folder for folder, features in bundles.FUNCTION_FEATURES.items() if "embedding" in features}
    assert {"cache_lookup", "guard", "moderate", c.STREAM_FOLDER, c.BATCH_WORK_FOLDER} <= embedding
    assert "router" not in embedding  # the guard plans the route (its complexity embedding) once
    for folder, (_, properties) in functions.items():
        has_layer = {"Ref": models[0]} in properties.get("Layers", [])
        assert has_layer == (folder in embedding), folder
        if has_layer:
            assert properties["Environment"]["Variables"][c.ENV_MODEL_DIR] == c.MODEL_DIR_IN_LAMBDA


# ----------------------------------------------------------------------------- state machine


def test_state_machine_is_express_jsonpath_traced_and_logged(template: dict[str, Any]) -> None:
    _, machine = state_machine(template)
    properties = machine["Properties"]
    assert properties["StateMachineType"] == "EXPRESS"
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert properties["LoggingConfiguration"]["Level"] in ("ALL", "ERROR")
    assert properties["LoggingConfiguration"]["IncludeExecutionData"] is False
    assert state_machine_definition(template)["QueryLanguage"] == "JSONPath"


def test_task_states_are_the_pipeline_steps_in_order_then_finish(definition: dict[str, Any]) -> None:
    assert main_path(definition) == [step.name for step in STEPS] + [FINISH.name]


def test_each_task_invokes_its_steps_function_and_writes_its_result_path(
    template: dict[str, Any], definition: dict[str, Any]
) -> None:
    functions = functions_by_folder(template)
    for step in (*STEPS, FINISH, FAILED):
        state = definition["States"][step.name]
        assert state["Type"] == "Task"
        assert state["Resource"] == f"<{functions[step.handler][0]}.Arn>"  # payload_response_only
        assert "Parameters" not in state  # the whole state is the payload
        expected = "$.finish" if step is FAILED else f"$.{step.name}"
        assert state["ResultPath"] == expected


def test_exits_go_to_finish(definition: dict[str, Any]) -> None:
    names = [step.name for step in STEPS] + [FINISH.name]
    for index, step in enumerate(STEPS):
        following = definition["States"][definition["States"][step.name]["Next"]]
        if step.exit is None:
            assert definition["States"][step.name]["Next"] == names[index + 1]
            continue
        assert following["Type"] == "Choice"
        assert following["Default"] == names[index + 1]
        (choice,) = following["Choices"]
        assert choice["Next"] == FINISH.name
        rules = choice.get("Or", [choice])
        assert {rule["Variable"] for rule in rules} == {f"$.{step.name}.{step.exit.field}"}
        assert sorted(rule["StringEquals"] for rule in rules) == sorted(step.exit.values)


def test_every_task_retries_lambda_service_faults(definition: dict[str, Any]) -> None:
    for step in (*STEPS, FINISH, FAILED):
        (retry,) = definition["States"][step.name]["Retry"]
        assert retry["ErrorEquals"] == list(TASK_RETRY.errors)
        assert retry["MaxAttempts"] == TASK_RETRY.max_attempts
        assert retry["IntervalSeconds"] == TASK_RETRY.interval_s
        assert retry["BackoffRate"] == TASK_RETRY.backoff_rate


def test_domain_errors_and_anything_else_are_caught_into_record_failure(definition: dict[str, Any]) -> None:
    for step in (*STEPS, FINISH):
        catches = definition["States"][step.name]["Catch"]
        assert catches[0]["ErrorEquals"] == list(CAUGHT_ERRORS)
        assert catches[-1]["ErrorEquals"] == ["States.ALL"]
        assert all(catch["Next"] == FAILED.name and catch["ResultPath"] == "$.error" for catch in catches)
    assert "Catch" not in definition["States"][FAILED.name]


def test_finish_and_failure_end_in_succeed_without_another_task(definition: dict[str, Any]) -> None:
    for start in (FINISH.name, FAILED.name):
        after = reachable(definition, start)
        assert all(state["Type"] in ("Choice", "Pass", "Succeed") for state in after)
        assert any(state["Type"] == "Succeed" for state in after)


def test_execution_output_keeps_the_state_and_adds_what_the_response_template_reads(
    definition: dict[str, Any],
) -> None:
    from cdk.api_mapping import RESPONSE_TEMPLATE

    for name in (c.RESPOND_OK, c.RESPOND_ERROR):
        state = definition["States"][name]
        assert state["ResultPath"] == f"$.{c.HTTP_RESULT}"  # the state (finish, cache...) stays
        keys = {key.removesuffix(".$") for key in state["Parameters"]}
        assert keys == {"status", "body", "retry_after_s"}
        assert f"#set($answer = $state.{c.HTTP_RESULT})" in RESPONSE_TEMPLATE
        assert all(f"$answer.{key}" in RESPONSE_TEMPLATE for key in keys)


# ----------------------------------------------------------------------------- API


def test_chat_completions_posts_to_start_sync_execution_with_authorizer_validator_and_model(
    template: dict[str, Any],
) -> None:
    properties = api_methods(template)[("POST", "/" + "/".join(c.API_PATH))]
    assert properties["AuthorizationType"] == "CUSTOM"
    assert flatten(properties["Integration"]["Uri"]).endswith(":states:action/StartSyncExecution")
    request_template = flatten(properties["Integration"]["RequestTemplates"]["application/json"])
    machine_id, _ = state_machine(template)
    assert f'"stateMachineArn": "<{machine_id}>"' in request_template

    (validator_id, validator) = next(iter(resources(template, "AWS::ApiGateway::RequestValidator").items()))
    assert validator["Properties"]["ValidateRequestBody"] is True
    assert properties["RequestValidatorId"] == {"Ref": validator_id}
    (model_id, model) = next(iter(resources(template, "AWS::ApiGateway::Model").items()))
    assert properties["RequestModels"] == {"application/json": {"Ref": model_id}}
    assert model["Properties"]["Schema"] == request_schema()

    (authorizer,) = resources(template, "AWS::ApiGateway::Authorizer").values()
    assert authorizer["Properties"]["Type"] == "TOKEN"
    assert authorizer["Properties"]["IdentitySource"] == "method.request.header.Authorization"
    assert properties["AuthorizerId"] == {"Ref": next(iter(resources(template, "AWS::ApiGateway::Authorizer")))}


def test_stage_has_access_logs_throttling_and_tracing(template: dict[str, Any]) -> None:
    (stage,) = resources(template, "AWS::ApiGateway::Stage").values()
    properties = stage["Properties"]
    assert "DestinationArn" in properties["AccessLogSetting"]
    (settings,) = properties["MethodSettings"]
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (10, 20)
    assert settings["DataTraceEnabled"] is False
    assert properties["TracingEnabled"] is True


def test_streaming_function_is_behind_a_response_stream_function_url(template: dict[str, Any]) -> None:
    (url,) = resources(template, "AWS::Lambda::Url").values()
    assert url["Properties"]["InvokeMode"] == "RESPONSE_STREAM"
    _, stream = functions_by_folder(template)[c.STREAM_FOLDER]
    assert stream["Handler"] == c.STREAM_HANDLER
    assert stream["Environment"]["Variables"]["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert c.web_adapter_layer_arn("eu-west-1") in stream["Layers"]


# ----------------------------------------------------------------------------- IAM


def test_only_finish_record_failure_and_review_ingest_write_the_record_tables(template: dict[str, Any]) -> None:
    tables = resources(template, "AWS::DynamoDB::Table")
    usage = next(key for key in tables if key.startswith("StoresUsage"))
    audit = next(key for key in tables if key.startswith("StoresAudit"))
    review = next(key for key in tables if key.startswith("StoresReview"))
    budgets = next(key for key in tables if key.startswith("StoresBudgets"))
    batch_tables = {key for key in tables if key.startswith(("StoresBatchJobs", "StoresIdempotency"))}
    batch_tables |= {key for key in tables if key.startswith(("StoresConversations", "StoresTraces"))}  # own tests
    batch_tables |= {key for key in tables if key.startswith(("StoresRollouts", "StoresShadowPairs"))}  # own tests
    expected_tables = {
        "finish": {usage, audit},
        "record_failure": {audit},
        c.STREAM_FOLDER: {usage, audit},
        c.BATCH_WORK_FOLDER: {usage, audit},
        c.REVIEW_INGEST_FOLDER: {review},
        c.ROLLOUT_GATES_FOLDER: {audit},  # read: the arms' requests, through the variant index only
    }
    expected_budgets = {"router", "finish", "record_failure", c.STREAM_FOLDER, c.BATCH_WORK_FOLDER}
    for folder, (_, properties) in functions_by_folder(template).items():
        statements = role_statements(template, properties)
        dynamodb = [s for s in statements if any(a.startswith("dynamodb:") for a in actions(s))]
        on_budgets = [s for s in dynamodb if any(budgets in ref for ref in resource_refs(s))]
        on_batch = [s for s in dynamodb if any(t in ref for t in batch_tables for ref in resource_refs(s))]
        records = [s for s in dynamodb if s not in on_budgets and s not in on_batch]
        touched = {ref.split(">")[0].strip("<").removesuffix(".Arn") for s in records for ref in resource_refs(s)}
        assert touched == expected_tables.get(folder, set()), folder
        allowed = c.AUDIT_READ_ACTIONS if folder == c.ROLLOUT_GATES_FOLDER else c.TABLE_WRITE_ACTIONS
        assert all(set(actions(s)) <= set(allowed) for s in records), folder
        if folder == c.ROLLOUT_GATES_FOLDER:  # never the table itself: the whole tenant's traffic
            assert [ref for s in records for ref in resource_refs(s)] == [f"<{audit}.Arn>/index/by_variant"]
        else:
            assert all(not ref.endswith(("/index/*", "/index/by_variant")) for s in records for ref in resource_refs(s))
        # Budgets: the table and its `held` index, with the ledger's four actions, for the steps that
        # reserve, settle or release
        assert bool(on_budgets) == (folder in expected_budgets), folder
        for statement in on_budgets:
            assert set(actions(statement)) == set(c.BUDGET_ACTIONS)
            assert sorted(resource_refs(statement)) == sorted([f"<{budgets}.Arn>", f"<{budgets}.Arn>/index/held"])


def test_only_the_streaming_function_keeps_conversations_in_a_tenant_keyed_table_with_ttl(
    template: dict[str, Any],
) -> None:
    tables = resources(template, "AWS::DynamoDB::Table")
    (table_id,) = [key for key in tables if key.startswith("StoresConversations")]
    table = tables[table_id]["Properties"]
    assert table["KeySchema"] == [
        {"AttributeName": "tenant", "KeyType": "HASH"},
        {"AttributeName": "id", "KeyType": "RANGE"},
    ]
    assert table["TimeToLiveSpecification"] == {"AttributeName": c.TABLE_TTL_ATTRIBUTE, "Enabled": True}
    (index,) = table["GlobalSecondaryIndexes"]
    assert (index["IndexName"], index["KeySchema"][0]["AttributeName"]) == ("by_parent", "parent")
    reachers = set()
    for folder, (_, properties) in functions_by_folder(template).items():
        for statement in role_statements(template, properties):
            refs = resource_refs(statement)
            if any(table_id in ref for ref in refs):
                reachers.add(folder)
                assert set(actions(statement)) == set(c.CONVERSATION_ACTIONS)
                assert sorted(refs) == sorted([f"<{table_id}.Arn>", f"<{table_id}.Arn>/index/by_parent"])
                assert properties["Environment"]["Variables"][c.ENV_CONVERSATION_TABLE] == {"Ref": table_id}
    assert reachers == {c.STREAM_FOLDER}


def test_traces_are_written_by_who_finishes_a_request_and_read_by_the_streaming_function(
    template: dict[str, Any],
) -> None:
    tables = resources(template, "AWS::DynamoDB::Table")
    (table_id,) = [key for key in tables if key.startswith("StoresTraces")]
    table = tables[table_id]["Properties"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["tenant", "request_id"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": c.TABLE_TTL_ATTRIBUTE, "Enabled": True}
    granted: dict[str, set[str]] = {}
    for folder, (_, properties) in functions_by_folder(template).items():
        for statement in role_statements(template, properties):
            if any(table_id in ref for ref in resource_refs(statement)):
                granted.setdefault(folder, set()).update(actions(statement))
    writes = set(c.TRACE_WRITE_ACTIONS)
    assert granted == {
        "finish": writes,
        "record_failure": writes,
        c.BATCH_WORK_FOLDER: writes,
        c.STREAM_FOLDER: set(c.TRACE_API_ACTIONS),
        c.ROLLOUT_GATES_FOLDER: set(c.TRACE_FEEDBACK_ACTIONS),  # the feedback on the rollouts' requests
        c.DISTILL_COLLECT_FOLDER: set(c.TRACE_QUERY_ACTIONS),  # a tenant's traces, for distillation
    }


def test_rollouts_are_read_where_routes_are_planned_and_judged_every_minute_by_the_gates_function(
    template: dict[str, Any],
) -> None:
    tables = resources(template, "AWS::DynamoDB::Table")
    (table_id,) = [key for key in tables if key.startswith("StoresRollouts")]
    table = tables[table_id]["Properties"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["by_id"]
    granted: dict[str, set[str]] = {}
    told: set[str] = set()
    by_folder = functions_by_folder(template)
    for folder, (_, properties) in by_folder.items():
        for statement in role_statements(template, properties):
            if any(table_id in ref for ref in resource_refs(statement)):
                granted.setdefault(folder, set()).update(actions(statement))
        if c.ENV_ROLLOUT_TABLE in properties["Environment"]["Variables"]:
            told.add(folder)
    assert granted == {
        "guard": set(c.ROLLOUT_READ_ACTIONS),
        c.STREAM_FOLDER: set(c.ROLLOUT_READ_ACTIONS),
        c.ROLLOUT_GATES_FOLDER: set(c.ROLLOUT_GATE_ACTIONS),
    }
    assert told == set(granted)  # a function told of the table may read it, and only those
    # every minute, the schedule invokes the gates function, one at a time
    gates_id, gates = by_folder[c.ROLLOUT_GATES_FOLDER]
    (rule,) = resources(template, "AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == f"rate({c.ROLLOUT_GATES_MINUTES} minute)"
    assert [flatten(t["Arn"]) for t in rule["Properties"]["Targets"]] == [f"<{gates_id}.Arn>"]
    assert gates["ReservedConcurrentExecutions"] == 1
    # it reads the error-rate and latency alarms, and only those
    alarms = {
        key
        for key in resources(template, "AWS::CloudWatch::Alarm")
        if key.startswith(("AlarmsErrorRate", "AlarmsLatencyP95"))
    }
    assert len(alarms) == 2
    (describe,) = [s for s in role_statements(template, gates) if "cloudwatch:DescribeAlarms" in actions(s)]
    assert {ref.strip("<>").removesuffix(".Arn") for ref in resource_refs(describe)} == alarms
    named = flatten(gates["Environment"]["Variables"][c.ENV_ROLLOUT_ALARMS])
    assert all(f"<{alarm}>" in named for alarm in alarms) and "error_rate" in named and "latency_p95" in named
    assert flatten(template["Outputs"]["RolloutTable"]["Value"]) == f"<{table_id}>"


def test_the_five_alerts_are_alarms_that_notify_one_encrypted_topic(template: dict[str, Any]) -> None:
    from llm_gateway.alerts import ALERTS

    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) == len(ALERTS) == 5
    (topic_id,) = resources(template, "AWS::SNS::Topic")
    topic = resources(template, "AWS::SNS::Topic")[topic_id]["Properties"]
    assert "KmsMasterKeyId" in topic
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]
    by_metric = {}
    for alarm in alarms.values():
        properties = alarm["Properties"]
        names = {m["MetricStat"]["Metric"]["MetricName"] for m in properties.get("Metrics", []) if "MetricStat" in m}
        names.add(properties.get("MetricName", ""))
        by_metric[frozenset(names - {""})] = properties
    latency = by_metric[frozenset({c.METRIC_REQUEST_DURATION})]
    assert (latency["ExtendedStatistic"], latency["Threshold"]) == ("p95", 5.0)
    assert latency["Dimensions"] == [{"Name": "service", "Value": c.POWERTOOLS_SERVICE_NAME}]
    rate = by_metric[frozenset({c.METRIC_ERRORS, c.METRIC_REQUESTS})]
    assert rate["Threshold"] == 0.05 and any("errors / requests" in m.get("Expression", "") for m in rate["Metrics"])
    for metric, operator in (
        (c.METRIC_COST, "GreaterThanUpperThreshold"),
        (c.METRIC_FEEDBACK_SCORE, "LessThanLowerThreshold"),
        (c.METRIC_GUARD_TRIGGERS, "GreaterThanUpperThreshold"),
    ):
        baseline = by_metric[frozenset({metric})]
        assert baseline["ComparisonOperator"] == operator
        assert any("ANOMALY_DETECTION_BAND" in m.get("Expression", "") for m in baseline["Metrics"])


# ----------------------------------------------------------------------------- dashboard

SEARCH = re.compile(r"SEARCH\('\{(?P<schema>[^}]*)\}(?P<terms>[^']*)', '(?P<statistic>[^']+)'")
METRIC_NAME = re.compile(r'MetricName="(?P<name>[^"]+)"')


@pytest.fixture(scope="module")
def dashboard(template: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's body: its Fn::Join read as text, references as `<LogicalId[.Attr]>`."""
    (found,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    body: dict[str, Any] = json.loads(flatten(found["Properties"]["DashboardBody"]))
    return body


def graphed(dashboard: dict[str, Any]) -> list[tuple[str, str, frozenset[str], str]]:
    """(namespace, metric, dimension names, statistic) of every metric the graphs read, those in
    a SEARCH included (by its schema and `MetricName`)."""
    found = []
    for widget in dashboard["widgets"]:
        for line in widget["properties"].get("metrics", []):
            options = line[-1] if isinstance(line[-1], dict) else {}
            if isinstance(line[0], str):
                names = line[: -1 if options else None]
                found.append((names[0], names[1], frozenset(names[2::2]), options.get("stat", "Average")))
            for search in SEARCH.finditer(options.get("expression", "")):
                namespace, *dimensions = (part.strip() for part in search["schema"].split(","))
                (name,) = METRIC_NAME.findall(search["terms"])
                found.append((namespace, name, frozenset(dimensions), search["statistic"]))
    return found


def test_one_dashboard_named_after_the_stage_is_an_output(template: dict[str, Any]) -> None:
    dashboards = resources(template, "AWS::CloudWatch::Dashboard")
    assert len(dashboards) == 1
    ((logical_id, dashboard),) = dashboards.items()
    assert dashboard["Properties"]["DashboardName"] == c.resource_name("dev", "dashboard")
    assert template["Outputs"]["DashboardName"]["Value"] == {"Ref": logical_id}


def test_the_dashboard_shows_latency_and_first_token_p95_and_the_five_alarms(
    template: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    lines = graphed(dashboard)
    service = frozenset({"service"})
    assert (c.POWERTOOLS_METRICS_NAMESPACE, c.METRIC_REQUEST_DURATION, service, "p95") in lines
    # written with its labels only: a SEARCH over them, one line per label set
    ttft = [line for line in lines if line[1] == c.METRIC_TIME_TO_FIRST_TOKEN]
    assert "p95" in {statistic for *_, statistic in ttft}
    (alarm_widget,) = [w for w in dashboard["widgets"] if w["type"] == "alarm"]
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 5
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(f"<{logical_id}.Arn>" for logical_id in alarms)


def test_every_gateway_metric_on_the_dashboard_is_written_by_the_code_with_those_dimensions(
    dashboard: dict[str, Any],
) -> None:
    from tests.infrastructure.emitted_metrics import emitted_metrics

    written = emitted_metrics()
    shown = [line for line in graphed(dashboard) if line[0] == c.POWERTOOLS_METRICS_NAMESPACE]
    for _, name, dimensions, _ in shown:
        assert name in written, f"{name}: no metric of that name is written"
        assert dimensions in written[name], f"{name} is not written with the dimensions {sorted(dimensions)}"
    assert {name for _, name, _, _ in shown} >= {
        c.METRIC_REQUESTS,
        c.METRIC_REQUEST_DURATION,
        c.METRIC_TIME_TO_FIRST_TOKEN,
        c.METRIC_ERRORS,
        c.METRIC_COST,
        c.METRIC_TOKENS,
        c.METRIC_CACHE_LOOKUPS,
        c.METRIC_GUARD_TRIGGERS,
        c.METRIC_FEEDBACK_SCORE,
    }


def test_the_dashboard_graphs_the_errors_of_every_function_but_the_authorizer(
    template: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    errors = {
        line[3]
        for widget in dashboard["widgets"]
        for line in widget["properties"].get("metrics", [])
        if line[:3] == ["AWS/Lambda", "Errors", "FunctionName"]
    }
    functions = functions_by_folder(template)
    functions.pop(c.AUTHORIZER_FOLDER)  # built inside GatewayApi's TokenAuthorizer, which keeps it to itself
    assert errors == {f"<{logical_id}>" for logical_id, _ in functions.values()}


@pytest.mark.parametrize(
    ("secret", "readers"),
    [
        ("StoresMomentoApiKey", {"guard", "cache_lookup", "finish", c.STREAM_FOLDER, c.BATCH_WORK_FOLDER}),
        # guard, moderate: the judge; batch_work runs the whole chain
        ("StoresProviderKeys", {"invoke", "guard", "moderate", c.STREAM_FOLDER, c.BATCH_WORK_FOLDER, c.SHADOW_FOLDER}),
    ],
)
def test_only_the_functions_that_need_a_secret_read_it(
    template: dict[str, Any], secret: str, readers: set[str]
) -> None:
    (secret_id,) = [key for key in resources(template, "AWS::SecretsManager::Secret") if key.startswith(secret)]
    for folder, (_, properties) in functions_by_folder(template).items():
        statements = role_statements(template, properties)
        reads = any(
            f"<{secret_id}>" in resource_refs(s) and "secretsmanager:GetSecretValue" in actions(s) for s in statements
        )
        assert reads == (folder in readers), folder


def test_a_function_is_told_only_of_the_secrets_it_may_read(template: dict[str, Any]) -> None:
    # A function reads every secret whose ARN its environment names when it builds its dependencies
    # (provider keys, pseudonym key): one it may not read would fail every cold start with AccessDenied.
    secrets = resources(template, "AWS::SecretsManager::Secret")
    named = 0
    for folder, (_, properties) in functions_by_folder(template).items():
        statements = role_statements(template, properties)
        for variable in (c.ENV_PROVIDER_KEYS_SECRET, c.ENV_PSEUDONYM_SECRET):
            value = properties.get("Environment", {}).get("Variables", {}).get(variable)
            if value is None:
                continue
            named += 1
            (secret_id,) = [key for key in secrets if value == {"Ref": key}]
            assert any(
                f"<{secret_id}>" in resource_refs(s) and "secretsmanager:GetSecretValue" in actions(s)
                for s in statements
            ), (folder, variable)
    assert named >= 10  # the functions that read secrets are still told where they are


def test_every_function_on_the_aws_store_starts_with_the_settings_its_environment_gives(
    template: dict[str, Any],
) -> None:
    # Each function's environment (references resolved to placeholders, as at deploy) must pass the
    # settings check its cold start runs, and name the pseudonym key where it builds the dependencies
    from llm_gateway.aws.runtime import LambdaSettings

    checked = 0
    for folder, (_, properties) in functions_by_folder(template).items():
        variables = properties.get("Environment", {}).get("Variables", {})
        if variables.get(c.ENV_STORE) != "aws":
            continue
        environment = {k: v if isinstance(v, str) else f"{k.lower()}-at-deploy" for k, v in variables.items()}
        environment[c.ENV_MOMENTO_ENDPOINT] = "cell-1.example.momentohq.com"  # the operator's, per stage
        LambdaSettings.model_validate(environment)
        if folder not in {"review_ingest", c.BATCH_STATUS_FOLDER, c.ROLLOUT_GATES_FOLDER}:  # they read settings only
            assert c.ENV_PSEUDONYM_SECRET in environment, folder
        checked += 1
    assert checked >= 12


def test_flagged_items_go_through_an_encrypted_queue_with_dead_letters_into_the_review_table(
    template: dict[str, Any],
) -> None:
    queues = resources(template, "AWS::SQS::Queue")
    (queue_id,) = [key for key in queues if key.startswith("StoresReviewQueue")]
    (dead_id,) = [key for key in queues if key.startswith("StoresReviewDeadLetters")]
    queue = queues[queue_id]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True and queues[dead_id]["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"]["maxReceiveCount"] == c.REVIEW_QUEUE_RECEIVES
    assert dead_id in flatten(queue["RedrivePolicy"])
    (table,) = [t for key, t in resources(template, "AWS::DynamoDB::Table").items() if key.startswith("StoresReview")]
    assert table["Properties"]["KeySchema"] == [{"AttributeName": "item_id", "KeyType": "HASH"}]
    (index,) = table["Properties"]["GlobalSecondaryIndexes"]
    assert (index["IndexName"], [k["AttributeName"] for k in index["KeySchema"]]) == (
        "by_status",
        ["status", "created_sk"],
    )
    # Guard, moderate and the streaming function may send; only review_ingest consumes, in batches
    senders = set()
    for folder, (_, properties) in functions_by_folder(template).items():
        statements = role_statements(template, properties)
        if any("sqs:SendMessage" in actions(s) and f"<{queue_id}.Arn>" in resource_refs(s) for s in statements):
            senders.add(folder)
            environment = properties["Environment"]["Variables"]
            assert c.ENV_REVIEW_QUEUE_URL in environment and c.ENV_REVIEW_TABLE in environment
    assert senders == {"guard", "moderate", c.STREAM_FOLDER, c.BATCH_WORK_FOLDER}
    assert consumer_of(template, queue_id) == c.REVIEW_INGEST_FOLDER


def consumer_of(template: dict[str, Any], queue_id: str) -> str:
    """The function folder the queue's one event source mapping feeds, reporting per-item failures."""
    (mapping,) = [
        m
        for m in resources(template, "AWS::Lambda::EventSourceMapping").values()
        if queue_id in flatten(m["Properties"]["EventSourceArn"])
    ]
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    (folder,) = [
        folder
        for folder, (logical_id, _) in functions_by_folder(template).items()
        if logical_id in flatten(mapping["Properties"]["FunctionName"])
    ]
    return folder


def test_shadow_copies_go_from_the_finishing_functions_through_an_encrypted_queue_to_the_shadow_function(
    template: dict[str, Any],
) -> None:
    queues = resources(template, "AWS::SQS::Queue")
    (queue_id,) = [key for key in queues if key.startswith("StoresShadowQueue")]
    (dead_id,) = [key for key in queues if key.startswith("StoresShadowDeadLetters")]
    queue = queues[queue_id]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True and dead_id in flatten(queue["RedrivePolicy"])
    assert queue["VisibilityTimeout"] >= c.SHADOW_TIMEOUT_S  # a batch is never handed out twice at once
    (table_id,) = [key for key in resources(template, "AWS::DynamoDB::Table") if key.startswith("StoresShadowPairs")]
    senders, keepers, told = set(), {}, {}
    for folder, (_, properties) in functions_by_folder(template).items():
        statements = role_statements(template, properties)
        if any("sqs:SendMessage" in actions(s) and f"<{queue_id}.Arn>" in resource_refs(s) for s in statements):
            senders.add(folder)
        for statement in statements:
            if any(table_id in ref for ref in resource_refs(statement)):
                keepers.setdefault(folder, set()).update(actions(statement))
        environment = properties["Environment"]["Variables"]
        told[folder] = {v for v in (c.ENV_SHADOW_QUEUE_URL, c.ENV_SHADOW_TABLE) if v in environment}
    # the functions that finish a live request hand copies off; batch lines are never shadowed
    assert senders == {"finish", c.STREAM_FOLDER}
    assert keepers == {c.SHADOW_FOLDER: set(c.SHADOW_PAIR_ACTIONS)}
    assert {f for f, names in told.items() if c.ENV_SHADOW_QUEUE_URL in names} == senders
    assert {f for f, names in told.items() if c.ENV_SHADOW_TABLE in names} == {c.SHADOW_FOLDER}
    assert consumer_of(template, queue_id) == c.SHADOW_FOLDER
    assert flatten(template["Outputs"]["ShadowTable"]["Value"]) == f"<{table_id}>"


def test_no_function_has_a_wildcard_resource_except_for_xray(template: dict[str, Any]) -> None:
    for folder, (_, properties) in functions_by_folder(template).items():
        for statement in role_statements(template, properties):
            if "*" in resource_refs(statement):
                assert all(a.startswith("xray:") for a in actions(statement)), folder


# ----------------------------------------------------------------------------- cdk-nag


def test_cdk_nag_reports_no_unacknowledged_error(dev: Synthesized) -> None:
    errors = Annotations.from_stack(dev.stack).find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert errors == []
    # Synthesis raises on a violation anyway; the report may only hold the stack's own warnings.
    report = json.loads((dev.outdir / "validation-report.json").read_text())
    violations = [v for plugin in report["pluginReports"] for v in plugin["violations"]]
    assert not [v for v in violations if "AwsSolutions" in v["ruleName"] or v["severity"] == "error"]


def test_cdk_nag_is_on_in_every_synth(tmp_path: Any) -> None:
    # Given the real app with one resource nobody acknowledged, synthesis fails on the finding
    from cdk.app import build_app
    from tests.infrastructure.synth import SKIP_BUNDLING

    app, stack = build_app({c.CONTEXT_STAGE: "dev", **SKIP_BUNDLING}, outdir=str(tmp_path))
    sqs.Queue(stack, "Unacknowledged")
    with pytest.raises(RuntimeError, match="AwsSolutions-SQS3"):
        app.synth()


def test_prod_us_reserves_concurrency_retains_data_and_runs_in_us_east_1(tmp_path: Any) -> None:
    template = synthesize("prod-us", outdir=tmp_path).to_json()
    for folder in CHAIN_FOLDERS:
        assert functions_by_folder(template, "prod-us")[folder][1]["ReservedConcurrentExecutions"] == 100
    for table in resources(template, "AWS::DynamoDB::Table").values():
        assert table["DeletionPolicy"] == "Retain"
        assert table["Properties"]["DeletionProtectionEnabled"] is True
    _, stream = functions_by_folder(template, "prod-us")[c.STREAM_FOLDER]
    assert c.web_adapter_layer_arn("us-east-1") in stream["Layers"]


def test_synthesis_is_deterministic(template: dict[str, Any], tmp_path: Any) -> None:
    # Layer assets come from folders generated at synth time: their hashes (so the layer versions)
    # must depend on content only, or every deploy would publish new layers.
    assert synthesize("dev", outdir=tmp_path).to_json() == template


# ----------------------------------------------------------------------------- batch jobs


def test_the_batch_bucket_is_private_encrypted_versioned_and_expires_what_it_holds(template: dict[str, Any]) -> None:
    (bucket_id, bucket) = next(
        (key, b) for key, b in resources(template, "AWS::S3::Bucket").items() if key.startswith("BatchBucket")
    )
    properties = bucket["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    encryption = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = {r.get("Prefix"): r for r in properties["LifecycleConfiguration"]["Rules"]}
    assert rules[c.BATCH_IN_PREFIX]["ExpirationInDays"] == c.BATCH_IN_DAYS
    assert rules[c.BATCH_OUT_PREFIX]["ExpirationInDays"] == c.BATCH_OUT_DAYS
    assert rules[None]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}
    (policy,) = [
        p
        for p in resources(template, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # New .jsonl objects under batches/in/ notify batch_submit, and nothing else does
    (notification,) = resources(template, "Custom::S3BucketNotifications").values()
    (target,) = notification["Properties"]["NotificationConfiguration"]["LambdaFunctionConfigurations"]
    submit_id, _ = functions_by_folder(template)[c.BATCH_SUBMIT_FOLDER]
    assert target["LambdaFunctionArn"] == {"Fn::GetAtt": [submit_id, "Arn"]}
    assert target["Events"] == ["s3:ObjectCreated:*"]
    assert {r["Name"]: r["Value"] for r in target["Filter"]["Key"]["FilterRules"]} == {
        "prefix": c.BATCH_IN_PREFIX,
        "suffix": ".jsonl",
    }


def test_the_batch_functions_reach_only_their_prefixes_tables_and_workflow(template: dict[str, Any]) -> None:
    functions = functions_by_folder(template)
    bucket_id = next(key for key in resources(template, "AWS::S3::Bucket") if key.startswith("BatchBucket"))
    batch_machine_id, _ = state_machine(template, "batch")
    for folder, expected in (
        (c.BATCH_SUBMIT_FOLDER, {f"<{bucket_id}.Arn>/{c.BATCH_IN_PREFIX}*": {"s3:GetObject", "s3:GetObjectVersion"}}),
        (
            c.BATCH_WORK_FOLDER,
            {
                f"<{bucket_id}.Arn>/{c.BATCH_IN_PREFIX}*": {"s3:GetObject", "s3:GetObjectVersion"},
                f"<{bucket_id}.Arn>/{c.BATCH_OUT_PREFIX}*": {"s3:PutObject"},
            },
        ),
    ):
        statements = role_statements(template, functions[folder][1])
        on_s3 = {
            ref: set(actions(s))
            for s in statements
            for ref in resource_refs(s)
            if any(a.startswith("s3:") for a in actions(s))
        }
        assert on_s3 == expected, folder
        starts = [s for s in statements if "states:StartExecution" in actions(s)]
        if folder == c.BATCH_SUBMIT_FOLDER:
            assert [resource_refs(s) for s in starts] == [[f"<{batch_machine_id}>"]]
        else:
            assert not starts
    # Only the batch functions touch the job table (batch_status reads it); only batch_submit the
    # idempotency records
    tables = resources(template, "AWS::DynamoDB::Table")
    jobs = next(key for key in tables if key.startswith("StoresBatchJobs"))
    idempotency = next(key for key in tables if key.startswith("StoresIdempotency"))
    for folder, (_, properties) in functions.items():
        refs = {ref for s in role_statements(template, properties) for ref in resource_refs(s)}
        batch_folders = (c.BATCH_SUBMIT_FOLDER, c.BATCH_WORK_FOLDER, c.BATCH_STATUS_FOLDER)
        assert any(jobs in ref for ref in refs) == (folder in batch_folders), folder
        assert any(idempotency in ref for ref in refs) == (folder == c.BATCH_SUBMIT_FOLDER), folder


def test_the_batch_workflow_is_standard_and_loops_work_wait_until_done(template: dict[str, Any]) -> None:
    _, machine = state_machine(template, "batch")
    assert machine["Properties"]["StateMachineType"] == "STANDARD"
    assert machine["Properties"]["LoggingConfiguration"]["IncludeExecutionData"] is False
    definition = state_machine_definition(template, "batch")
    states = definition["States"]
    assert definition["StartAt"] == "start"
    assert states["start"]["Next"] == "work" and states["work"]["Next"] == "finished"
    (done,) = states["finished"]["Choices"]
    assert done == {"Variable": "$.done", "BooleanEquals": True, "Next": "done"}
    assert states["finished"]["Default"] == "wait"
    assert states["wait"] == {"Type": "Wait", "SecondsPath": "$.wait_s", "Next": "work"}
    retried = {e for r in states["work"]["Retry"] for e in r["ErrorEquals"]}
    assert {"States.Timeout", "States.TaskFailed", "Lambda.ServiceException"} <= retried
    submit = functions_by_folder(template)[c.BATCH_WORK_FOLDER][1]
    assert submit["Timeout"] == c.BATCH_WORK_TIMEOUT_S
