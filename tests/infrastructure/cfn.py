"""Reading a synthesized CloudFormation template: resources by type, functions, policies, definitions."""

from __future__ import annotations

import json
from typing import Any

from cdk import constants as c

Resources = dict[str, dict[str, Any]]


def resources(template: dict[str, Any], type_: str) -> Resources:
    return {key: value for key, value in template["Resources"].items() if value["Type"] == type_}


def flatten(value: Any) -> str:
    """A string-valued intrinsic as text; references become `<LogicalId>` or `<LogicalId.Attr>`."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(flatten(part) for part in parts)
    if "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    if "Ref" in value:
        return f"<{value['Ref']}>"
    return json.dumps(value)


def state_machine(template: dict[str, Any], name: str = "chain") -> tuple[str, dict[str, Any]]:
    """(logical id, resource) of the chain's state machine (or the one whose name ends with `name`)."""
    (found,) = [
        (logical_id, m)
        for logical_id, m in resources(template, "AWS::StepFunctions::StateMachine").items()
        if m["Properties"]["StateMachineName"].endswith(f"-{name}")
    ]
    return found


def state_machine_definition(template: dict[str, Any], name: str = "chain") -> dict[str, Any]:
    """The definition of the chain's state machine (or the one whose name ends with `name`)."""
    _, machine = state_machine(template, name)
    definition: dict[str, Any] = json.loads(flatten(machine["Properties"]["DefinitionString"]))
    return definition


def functions_by_folder(template: dict[str, Any], stage: str = "dev") -> dict[str, tuple[str, dict[str, Any]]]:
    """Function folder -> (logical id, properties), from the stage's function names."""
    prefix = c.resource_name(stage, "")
    found = {}
    for logical_id, resource in resources(template, "AWS::Lambda::Function").items():
        name = resource["Properties"].get("FunctionName")  # CDK's own helper functions have none
        if isinstance(name, str) and name.startswith(prefix):
            found[name.removeprefix(prefix).replace("-", "_")] = (logical_id, resource["Properties"])
    return found


def role_statements(template: dict[str, Any], function_properties: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of the inline policies attached to a function's role."""
    role = function_properties["Role"]["Fn::GetAtt"][0]
    statements = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def resource_refs(statement: dict[str, Any]) -> list[str]:
    resource = statement["Resource"]
    return [flatten(item) for item in (resource if isinstance(resource, list) else [resource])]


def resource_path(template: dict[str, Any], resource_id: str | dict[str, Any]) -> str:
    """The REST path of an `AWS::ApiGateway::Resource` (a logical id or a `Ref` to one), from its
    parents' path parts: `/v1/batches/{batch_id}`."""
    parts: list[str] = []
    current: Any = resource_id
    while isinstance(current, str) or "Ref" in current:
        logical_id = current if isinstance(current, str) else current["Ref"]
        properties = template["Resources"][logical_id]["Properties"]
        parts.insert(0, properties["PathPart"])
        current = properties["ParentId"]  # the API's root: Fn::GetAtt [RestApi, RootResourceId]
    return "/" + "/".join(parts)


def api_methods(template: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, REST path) -> the method's properties."""
    return {
        (m["Properties"]["HttpMethod"], resource_path(template, m["Properties"]["ResourceId"])): m["Properties"]
        for m in resources(template, "AWS::ApiGateway::Method").values()
    }
