"""jsonschema's Draft 2020-12 validator, extended (`jsonschema.validators.extend`) to hold answers
against caller schemas safely:

- `pattern`, `patternProperties`, and the property matching of `additionalProperties` and
  `unevaluatedProperties` run on RE2 (`schema_safety.compile_pattern`), never on Python's `re`;
- `uniqueItems` runs in linear time;
- every keyword evaluation and every regex search is charged to a budget per check: past it the
  check stops with `CheckAborted` (a bounded check, never an endless one);
- references resolve only inside the schema: the registry retrieves nothing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import referencing
import referencing.exceptions
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError

from .schema_safety import PatternRefused, compile_pattern

MAX_CHECK_STEPS = 100_000  # keyword evaluations in one check (a 3,000-object answer takes ~36,000)
MAX_REGEX_WORK = 200_000_000  # sum of text length x RE2 program size over one check's searches

Keyword = Callable[[Any, Any, Any, dict[str, Any]], Iterator[ValidationError] | None]


class CheckAborted(Exception):
    """The answer could not be checked within the gateway's bounds."""


class _Budget:
    __slots__ = ("regex_work", "steps")

    def __init__(self) -> None:
        self.steps = MAX_CHECK_STEPS
        self.regex_work = MAX_REGEX_WORK


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("schema_check_budget", default=None)


def _spend() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.steps -= 1
        if budget.steps < 0:
            raise CheckAborted(f"it takes more than {MAX_CHECK_STEPS} steps")


def _matches(pattern: str, text: str) -> bool:
    try:
        regex = compile_pattern(pattern)
    except PatternRefused as exc:  # refused when the request arrived; kept out of the check all the same
        raise CheckAborted(f"pattern {pattern[:100]!r} cannot run on RE2 ({exc})") from None
    budget = _BUDGET.get()
    if budget is not None:
        budget.regex_work -= len(text) * regex.programsize
        if budget.regex_work < 0:
            raise CheckAborted("its patterns would take too long on this answer")
    return regex.search(text) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _matches(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """The properties neither `properties` nor `patternProperties` of `schema` name."""
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    return [k for k in instance if k not in properties and not any(_matches(p, k) for p in patterns)]


def _additional_properties(validator: Any, aP: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    # jsonschema's own keyword, with `_additional` in place of `find_additional_properties` (`re`).
    if not validator.is_type(instance, "object"):
        return
    extras = set(_additional(instance, schema))
    if validator.is_type(aP, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], aP, path=extra)
    elif not aP and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            error = "Additional properties are not allowed (%s %s unexpected)"
            yield ValidationError(error % extras_msg(sorted(extras, key=str)))


def extras_msg(extras: list[str]) -> tuple[str, str]:
    """jsonschema's wording for extra properties: "'a', 'b'" and "were"."""
    return ", ".join(repr(extra) for extra in extras), "was" if len(extras) == 1 else "were"


def _is_valid(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> list[str]:
    """jsonschema's `find_evaluated_property_keys_by_schema`, matching `patternProperties` on RE2."""
    _spend()
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[str] = []
    for keyword in ("$ref", "$dynamicRef"):
        ref = schema.get(keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            evolved = validator.evolve(schema=resolved.contents, _resolver=resolved.resolver)
            keys += _evaluated_keys(evolved, instance, resolved.contents)
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys += properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if (subschema := schema.get(keyword)) is not None:
            keys += (k for k, v in instance.items() if _is_valid(validator.descend(v, subschema)))
    for pattern in schema.get("patternProperties", ()):
        keys += (k for k in instance if _matches(pattern, k))
    for name, subschema in schema.get("dependentSchemas", {}).items():
        if name in instance:
            keys += _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _is_valid(validator.descend(instance, subschema)):
                keys += _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unevaluated_properties(
    validator: Any, uP: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = set(_evaluated_keys(validator, instance, schema))
    unevaluated = [
        k for k in instance if k not in evaluated and not _is_valid(validator.descend(instance[k], uP, path=k))
    ]
    if unevaluated and uP is False:
        error = "Unevaluated properties are not allowed (%s %s unexpected)"
        yield ValidationError(error % extras_msg(sorted(unevaluated, key=str)))
    elif unevaluated:
        error = "Unevaluated properties are not valid under the given schema (%s %s unevaluated and invalid)"
        yield ValidationError(error % extras_msg(unevaluated))


def _canonical(value: Any) -> Any:
    """A hashable form equal exactly when jsonschema's `equal` holds (1 == 1.0, True != 1)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def _unique_items(validator: Any, unique: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    # jsonschema compares every pair of objects (quadratic); one set of canonical forms is linear.
    if unique and validator.is_type(instance, "array") and len({_canonical(v) for v in instance}) < len(instance):
        yield ValidationError(f"{instance!r} has non-unique elements")


def _counted(keyword: Keyword) -> Keyword:
    def counted(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError] | None:
        _spend()
        return keyword(validator, value, instance, schema)

    return counted


_REPLACED: dict[str, Keyword] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "unevaluatedProperties": _unevaluated_properties,
    "uniqueItems": _unique_items,
}
SafeValidator = validators.extend(
    Draft202012Validator,
    validators={k: _counted(_REPLACED.get(k, v)) for k, v in Draft202012Validator.VALIDATORS.items()},
)


def _retrieve_nothing(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_retrieve_nothing)  # type: ignore[call-arg]


def _re2_regex(instance: object) -> bool:
    if isinstance(instance, str):
        compile_pattern(instance)
    return True


# Of the meta-schema's formats, only `regex` (on `pattern` and `patternProperties`) is checked: by
# RE2, not `re`. (`uri-reference` on `$ref` is `schema_safety`'s: only `#...` passes.)
SCHEMA_FORMATS = FormatChecker(formats=())
SCHEMA_FORMATS.checks("regex", raises=PatternRefused)(_re2_regex)


def meta_schema_problem(schema: Any) -> str | None:
    """The first way `schema` breaks the Draft 2020-12 meta-schema, or None. Run it on schemas
    `schema_safety` cleared: their depth is bounded."""
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=SCHEMA_FORMATS, registry=NO_RETRIEVAL)
    try:
        error = next(iter(meta.iter_errors(schema)), None)
    except RecursionError:
        return "it nests too deeply to check"
    return None if error is None else str(error.message)


def bounded_errors(schema: dict[str, Any], value: Any) -> list[ValidationError]:
    """Every way `value` breaks `schema` (already cleared by `schema_safety.schema_refusal`), or
    `CheckAborted` when the check would exceed its bounds (steps, regex work, recursion)."""
    # Without `$schema`, jsonschema keeps this class for every subschema (it would switch to the
    # stock Draft 2020-12 class, whose `pattern` uses `re`, on meeting the dialect's URI again).
    schema = {k: v for k, v in schema.items() if k != "$schema"}
    token = _BUDGET.set(_Budget())
    try:
        return list(SafeValidator(schema, registry=NO_RETRIEVAL).iter_errors(value))
    except RecursionError:
        raise CheckAborted("its references nest too deeply for this answer") from None
    except referencing.exceptions.Unresolvable as exc:
        raise CheckAborted(f"a reference does not resolve ({str(exc)[:100]})") from None
    finally:
        _BUDGET.reset(token)
