"""A student that met its tenant's bar, written into the configuration file
(`llm-gateway distill register`): a pinned model (`lifecycle: candidate`) served by the local
endpoint from its weights, and allowed to the tenant by name.

The file is the operator's, comments and layout included, so it is edited, not rewritten: the
model goes in as one line at the top of the `models` block, and the tenant's `allowed_models`
gains the name (a flow list in place of the one it had, or a new line). The edit is checked by
reading the result back: it must parse to the former configuration plus exactly these changes,
and validate; a file laid out so that this cannot be done in place (a flow-style `models` or
tenant) is left untouched and the lines to add are given instead.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from ..config import ModelConfig, parse_config
from ..errors import ConfigError


class RegistrationByHand(ValueError):
    """The configuration's layout cannot be edited in place; the message gives the lines to add."""


def _key(mapping: yaml.MappingNode, name: str) -> tuple[yaml.Node, yaml.Node] | None:
    for key, value in mapping.value:
        if isinstance(key, yaml.ScalarNode) and key.value == name:
            return key, value
    return None


def _block(node: yaml.Node | None) -> yaml.MappingNode | None:
    """`node` when it is a block mapping with entries (lines can be inserted before its first key)."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return node
    return None


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _flow(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _insert_first(text: str, mapping: yaml.MappingNode, line: str) -> Edit:
    """An edit putting `line` before the mapping's first key, at its indentation."""
    first = mapping.value[0][0].start_mark
    at = _line_start(text, first.index)
    return at, at, " " * first.column + line + "\n"


Edit = tuple[int, int, str]  # replace text[start:end] with this


def _edits(text: str, root: yaml.MappingNode, name: str, entry: dict[str, Any], tenant: str) -> list[Edit]:
    models = _key(root, "models")
    block = _block(models[1] if models else None)
    if block is None:
        raise RegistrationByHand("the configuration's `models` is not a block mapping with models")
    edits = [_insert_first(text, block, f"{_flow(name)}: {_flow(entry)}")]
    tenants = _key(root, "tenants")
    tenant_node = _key(tenants[1], tenant) if tenants and isinstance(tenants[1], yaml.MappingNode) else None
    policy = _block(tenant_node[1] if tenant_node else None)
    if policy is None:
        raise RegistrationByHand(f"tenant {tenant} is not a block mapping in the configuration")
    allowed = _key(policy, "allowed_models")
    if allowed is None:
        edits.append(_insert_first(text, policy, f"allowed_models: {_flow([name])}"))
        return edits
    listed = allowed[1]
    if not isinstance(listed, yaml.SequenceNode):
        raise RegistrationByHand(f"tenant {tenant}'s `allowed_models` is not a list")
    names = [item.value for item in listed.value if isinstance(item, yaml.ScalarNode)]
    end = listed.value[-1].end_mark.index if listed.value and not listed.flow_style else listed.end_mark.index
    edits.append((listed.start_mark.index, end, _flow([*names, name])))
    return edits


def register(text: str, name: str, model: ModelConfig, tenant: str) -> str:
    """The configuration text with `model` added as `name` and allowed to `tenant`.

    ValueError when the name is taken or the tenant unknown; `RegistrationByHand` (with the lines
    to add) when the file cannot be edited in place."""
    before = yaml.safe_load(text)
    config = parse_config(text)
    if name in config.models:
        raise ValueError(f"the configuration has a model named {name} already")
    if tenant not in config.tenants:
        raise ValueError(f"the configuration has no tenant {tenant}")
    entry = model.model_dump(mode="json", exclude_defaults=True)
    by_hand = (
        f"add under `models:`\n  {_flow(name)}: {_flow(entry)}\nand {_flow(name)} to tenant {tenant}'s allowed_models"
    )
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        raise RegistrationByHand(by_hand)
    try:
        edits = _edits(text, root, name, entry, tenant)
    except RegistrationByHand as exc:
        raise RegistrationByHand(f"{exc}: {by_hand}") from None
    edited = text
    for start, end, replacement in sorted(edits, reverse=True):
        edited = edited[:start] + replacement + edited[end:]
    expected = copy.deepcopy(before)
    expected["models"] = {**expected["models"], name: entry}
    policy = expected["tenants"][tenant]
    policy["allowed_models"] = [*(policy.get("allowed_models") or []), name]
    try:
        same = yaml.safe_load(edited) == expected
        parse_config(edited)
    except (yaml.YAMLError, ValueError, ConfigError):
        same = False
    if not same:
        raise RegistrationByHand(f"the configuration's layout could not be edited in place: {by_hand}")
    return edited
