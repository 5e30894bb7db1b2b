"""Every problem of a configuration file in one pass, one plain line each (`llm-gateway check-config`).

`load_config` stops at the first layer that fails: the cross-references (a route naming a model
that is not configured) are checked only once every field parses. Here the fields' problems come
first, then the cross-references of every tenant, each without the settings that failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .config import GatewayConfig, TenantConfig, reference_problems

# pydantic's words for the commonest problems, in the configuration's
_PLAIN = {"extra_forbidden": "unknown setting", "missing": "missing (required)"}
_PREFIXES = ("Value error, ", "Assertion failed, ")


def config_problems(path: Path) -> list[str]:
    """`location: problem` for each problem of the file at `path`; empty when it is valid."""
    try:
        text = path.read_text()
    except OSError as exc:
        return [f"(file): cannot read it: {exc.strerror}"]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "(file)" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}"
        return [f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]
    if not isinstance(data, dict):
        return ["(top level): must be a mapping of settings"]
    try:
        GatewayConfig.model_validate(data)
    except ValidationError as exc:
        # An error at the top level (loc ()) is the cross-references': they are recomputed below
        # for every tenant, whether or not the rest of the file parses.
        errors = [error for error in exc.errors() if error["loc"]]
        return [_line(error) for error in errors] + _references(data, errors)
    return []


def _line(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"])
    message = _PLAIN.get(error["type"], error["msg"])
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    return f"{location}: {message}"


def _references(data: dict[str, Any], errors: list[Any]) -> list[str]:
    models, tenants = data.get("models"), data.get("tenants")
    if not isinstance(models, dict) or not isinstance(tenants, dict):
        return []
    parsed = {}
    for name, raw in tenants.items():
        tenant = _tenant_without_failures(raw, [e["loc"][2:] for e in errors if e["loc"][:2] == ("tenants", name)])
        if tenant is not None:
            parsed[str(name)] = tenant
    return reference_problems({str(model) for model in models}, parsed)


def _tenant_without_failures(raw: Any, failed: list[tuple[Any, ...]]) -> TenantConfig | None:
    """The tenant without the settings that failed (a failing route: that route only), or None
    when even that does not parse."""
    if not isinstance(raw, dict):
        return None
    kept = dict(raw)
    for loc in failed:
        if len(loc) >= 2 and loc[0] == "routes" and isinstance(kept.get("routes"), dict):
            kept["routes"] = {k: v for k, v in kept["routes"].items() if k != loc[1]}
        elif loc:
            kept.pop(loc[0], None)
    try:
        return TenantConfig.model_validate(kept)
    except ValidationError:
        return None
