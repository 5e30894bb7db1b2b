"""A student that met its tenant's bar, written into the configuration file
(`llm-gateway distill register`): a pinned model (`lifecycle: candidate`) served by the local
endpoint from its weights, and allowed to the tenant by name.

The file is the operator's, comments and layout included, so it is edited, not rewritten: the
model goes in as one line at the top of the `models` block, and the tenant's `allowed_models`
gains the name (a flow list in place of the one it had, or a new line). The edit is checked by
reading the result back: it must parse to the former configuration plus exactly these changes,
and validate; a file laid out so that this cannot be done in place (a flow-style `models` or
tenant, a tenant that is an alias of another) is left untouched and the lines to add are given
instead. The edits only insert text (the operator's comments stay), with the file's own line ending.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Collection
from pathlib import Path
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


def _newline(text: str) -> str:
    """The file's line ending (CRLF kept in a file written on Windows)."""
    return "\r\n" if "\r\n" in text else "\n"


def _insert_first(text: str, mapping: yaml.MappingNode, line: str) -> Edit:
    """An edit putting `line` before the mapping's first key, at its indentation."""
    first = mapping.value[0][0].start_mark
    at = _line_start(text, first.index)
    return at, at, " " * first.column + line + _newline(text)


def _append_item(text: str, listed: yaml.SequenceNode, name: str) -> Edit:
    """An edit adding `name` at the end of a list, inserting only (the items' comments stay): after
    the last item of a flow list (or inside an empty one), or as a line of its own after the last
    item's line of a block list, at its dash's indentation."""
    if listed.flow_style:
        if listed.value:
            at = listed.value[-1].end_mark.index
            return at, at, f", {_flow(name)}"
        at = text.rfind("]", 0, listed.end_mark.index)
        return at, at, _flow(name)
    last = listed.value[-1]
    start = _line_start(text, last.start_mark.index)
    before = text[start : last.start_mark.index]
    dash = len(before) - len(before.lstrip(" "))
    if not before.lstrip(" ").startswith("-"):
        raise RegistrationByHand("the tenant's `allowed_models` list is not laid out one item a line")
    end = text.find("\n", last.end_mark.index)
    newline = _newline(text)
    if end < 0:  # the last line of a file without a final line break
        return len(text), len(text), f"{newline}{' ' * dash}- {_flow(name)}"
    return end + 1, end + 1, f"{' ' * dash}- {_flow(name)}{newline}"


def _unshared(value: Any) -> Any:
    """A copy of loaded YAML in which an alias is a copy of its anchor, not the same object: the
    expected result of an edit changes only the node the edit touched."""
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return value


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
    edits.append(_append_item(text, listed, name))
    return edits


def register(text: str, name: str, model: ModelConfig, tenant: str) -> str:
    """The configuration text with `model` added as `name` and allowed to `tenant`.

    ConfigError when the text is not one valid configuration; ValueError when the name is taken or
    the tenant unknown; `RegistrationByHand` (with the lines to add) when the file cannot be edited
    in place."""
    config = parse_config(text)  # first: a file that is not one valid configuration is a ConfigError
    before = yaml.safe_load(text)
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
    expected = _unshared(before)
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


# --------------------------------------------------------------------------- what may be registered


def student_problem(model: ModelConfig, name: str, routes: Collection[str]) -> str | None:
    """Why `model` may not be registered as `name` for a tenant with `routes` (None: it may): a
    student goes in as a candidate, never a teacher, its weights an absolute path, under a name no
    route of the tenant takes (a request for it would reach the route, never the student)."""
    if model.lifecycle != "candidate":
        return f"its lifecycle is {model.lifecycle}, not candidate"
    if model.allows_training:
        return "it says allows_training: true (a student is never a teacher)"
    if model.weights is not None and not Path(model.weights).is_absolute():
        return f"its weights {model.weights} are not an absolute path"
    if name in routes:
        return f"the tenant has a route named {name}"
    return None


# --------------------------------------------------------------------------- writing the file


def write_in_place(path: Path, original: bytes, edited: str) -> None:
    """Replace the configuration file at `path` (the file a symlink names, not the link) with
    `edited`, in one rename, keeping its mode (and owner where allowed). ConfigError, with the file
    untouched, when it is no longer `original` (someone changed it meanwhile) or cannot be written."""
    real = path.resolve()
    try:
        descriptor, staged = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".registering")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write beside it ({exc.strerror or exc}); nothing changed") from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(edited.encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
        kept = real.stat()
        os.chmod(staged, stat.S_IMODE(kept.st_mode))
        with contextlib.suppress(OSError):  # only root may give a file away
            os.chown(staged, kept.st_uid, kept.st_gid)
        if real.read_bytes() != original:
            raise ConfigError(f"{path} changed while the student was being registered: nothing written, run it again")
        os.replace(staged, real)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be written ({exc.strerror or exc}); nothing changed") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
