"""The metrics the gateway's code writes, read from its source: every `metrics.count(...)` and
`metrics.observe(...)` call on the metrics port, by name, with the CloudWatch dimension sets
`aws.observability.PowertoolsMetrics` writes it with (its labels plus Powertools' `service`, and
`service` alone for the service-level copies in `SERVICE_LEVEL` or a call without labels)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from llm_gateway.aws.observability import SERVICE_LEVEL

CODE = Path(__file__).resolve().parents[2] / "layers" / "core" / "python" / "llm_gateway"
_RECORDERS = ("count", "observe")

DimensionSets = dict[str, set[frozenset[str]]]


def _on_the_port(call: ast.Call) -> bool:
    """`metrics.count(...)`, `deps.metrics.observe(...)`, ...: a call on the metrics port."""
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr not in _RECORDERS:
        return False
    receiver = func.value
    return (isinstance(receiver, ast.Name) and receiver.id == "metrics") or (
        isinstance(receiver, ast.Attribute) and receiver.attr == "metrics"
    )


def _dict_keys(node: ast.expr) -> set[str] | None:
    """The keys of a dict literal whose keys are all strings."""
    if not isinstance(node, ast.Dict):
        return None
    keys = set()
    for key in node.keys:
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            return None
        keys.add(key.value)
    return keys


def _labels(call: ast.Call, scope: ast.AST) -> set[str]:
    """The call's label names; `**labels` is read from a dict literal assigned in its function."""
    names = set()
    for keyword in call.keywords:
        if keyword.arg is not None:
            names.add(keyword.arg)
            continue
        keys = _dict_keys(keyword.value)
        if keys is None and isinstance(keyword.value, ast.Name):
            keys = _assigned_dict_keys(scope, keyword.value.id)
        if keys is None:
            raise ValueError(f"line {call.lineno}: labels the scan cannot read ({ast.unparse(keyword.value)})")
        names |= keys
    return names


def _assigned_dict_keys(scope: ast.AST, name: str) -> set[str] | None:
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return _dict_keys(node.value)
    return None


def emitted_metrics(root: Path = CODE) -> DimensionSets:
    """Metric name -> the dimension sets it is written with."""
    found: DimensionSets = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        for function in functions:
            for call in ast.walk(function):
                if not (isinstance(call, ast.Call) and _on_the_port(call) and call.args):
                    continue
                name = call.args[0]
                if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                    raise ValueError(f"{path}:{call.lineno}: a metric name the scan cannot read")
                labels = _labels(call, function)
                found[name.value].add(frozenset({"service", *labels}))
                if not labels or name.value in SERVICE_LEVEL:
                    found[name.value].add(frozenset({"service"}))
    return dict(found)
