"""What makes a caller's JSON schema safe to hold against a model's answer, checked when the
request arrives (`schema_refusal`) and again before each check.

A schema is refused when it is too deep or too large, names anything outside itself (`$ref` or
`$dynamicRef` not starting with `#`, a `$schema` other than Draft 2020-12, a nested `$id`), has a
pattern RE2 cannot run, or refers back to itself without descending into the answer (`{"$ref": "#"}`:
a check that could never end). Patterns run on RE2 (linear time in the text; the GIL is released
while it matches); ECMA-262's `\\uXXXX` escapes are rewritten to RE2's `\\x{XXXX}`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import re2

MAX_SCHEMA_DEPTH = 64  # nested objects and arrays in the schema document
MAX_SCHEMA_NODES = 10_000  # every object, array and value in the schema document
MAX_IN_PLACE_CHAIN = 64  # subschemas applied to one value one inside another (allOf, $ref, ...)
MAX_PATTERNS = 128  # distinct patterns in one schema (RE2's own cache holds 128)
MAX_PATTERN_PROGRAM = 200_000  # RE2 instructions, all distinct patterns together
REGEX_MAX_MEM = 1 << 20  # RE2's memory budget per pattern: bounds compile time (~20 ms at most)
MAX_ANSWER_DEPTH = 64  # nested arrays and objects in an answer
DIALECTS = {"https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2020-12/schema#"}

Path = tuple[str | int, ...]

# Subschema keywords of Draft 2020-12: applied to the same value (in place), to parts of it
# (descending), or not applied at all (reached only through a `$ref`).
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas",)
_DESCENDING_ONE = (
    "additionalProperties",
    "unevaluatedProperties",
    "items",
    "contains",
    "propertyNames",
    "unevaluatedItems",
)
_DESCENDING_LIST = ("prefixItems",)
_DESCENDING_MAP = ("properties", "patternProperties")
_UNAPPLIED_ONE = ("contentSchema",)
_UNAPPLIED_MAP = ("$defs", "definitions")
_REFERENCES = ("$ref", "$dynamicRef")


class PatternRefused(ValueError):
    """A pattern RE2 cannot compile, or one too large for the gateway's budget."""


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = REGEX_MAX_MEM
    options.log_errors = False  # RE2 would write the caller's pattern to stderr
    return options


_OPTIONS = _options()
_ECMA_UNICODE_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|u\{([0-9A-Fa-f]{1,6})\}|.)", re.DOTALL)


def _to_re2_syntax(pattern: str) -> str:
    """ECMA-262's `\\uXXXX` and `\\u{X...}` as RE2's `\\x{...}`; every other escape is kept."""

    def rewrite(match: re.Match[str]) -> str:
        digits = match.group(1) or match.group(2)
        return f"\\x{{{digits}}}" if digits else match.group(0)

    return _ECMA_UNICODE_ESCAPE.sub(rewrite, pattern) if "\\u" in pattern else pattern


@functools.lru_cache(maxsize=MAX_PATTERNS)
def compile_pattern(pattern: str) -> Any:
    """The RE2 regex for a JSON Schema pattern (cached); `PatternRefused` saying why when RE2 cannot
    run it (backreferences, lookaround, `\\Z`, a program over the memory budget)."""
    try:
        return re2.compile(_to_re2_syntax(pattern), _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid pattern"
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        if "too large" in reason:
            reason += f" (over the {REGEX_MAX_MEM >> 20} MiB budget: use smaller repetition counts)"
        else:
            reason += " (RE2 syntax: no backreferences, lookaround or \\Z)"
        raise PatternRefused(reason) from None


# Possessive quantifiers: a string token is matched once, never backtracked into.
_JSON_TOKENS = re.compile(r'[\[\]{}]|"(?:[^"\\]++|\\.)*+"|"', re.DOTALL)


def json_too_deep(text: str, limit: int = MAX_ANSWER_DEPTH) -> bool:
    """True when JSON text nests arrays and objects more than `limit` deep, found without parsing
    (a parser would recurse once per level). Strings are skipped; an unterminated one ends the scan,
    as it ends a parser."""
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        first = text[token.start()]
        if first in "[{":
            depth += 1
            if depth > limit:
                return True
        elif first in "]}":
            depth -= 1
        elif token.end() - token.start() == 1:  # a quote that opens no complete string
            return False
    return False


def pointer(path: Path) -> str:
    """`path` as a JSON pointer (`/properties/name`), `(root)` for the root."""
    if not path:
        return "(root)"
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def shape_problem(schema: Any) -> str | None:
    """Too deep or too many nodes, found without recursion."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            return f"it has more than {MAX_SCHEMA_NODES} nodes"
        if isinstance(node, dict | list):
            if depth > MAX_SCHEMA_DEPTH:
                return f"it nests more than {MAX_SCHEMA_DEPTH} levels deep"
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return None


def _resolve_pointer(root: Any, fragment: str) -> Path | None:
    """The location a `#/...` fragment names in `root`, or None."""
    node: Any = root
    path: Path = ()
    tokens = unquote(fragment).split("/")[1:] if fragment else []
    for raw in tokens:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node, path = node[token], (*path, token)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node, path = node[int(token)], (*path, int(token))
        else:
            return None
    return path


def _children(schema: dict[str, Any], path: Path) -> Iterator[tuple[bool, Path, Any]]:
    """(in place?, location, subschema) for each subschema of `schema`."""
    for in_place, ones, lists, maps in (
        (True, _IN_PLACE_ONE, _IN_PLACE_LIST, _IN_PLACE_MAP),
        (False, _DESCENDING_ONE, _DESCENDING_LIST, _DESCENDING_MAP),
        (False, _UNAPPLIED_ONE, (), _UNAPPLIED_MAP),
    ):
        for key in ones:
            if key in schema:
                yield in_place, (*path, key), schema[key]
        for key in lists:
            if isinstance(schema.get(key), list):
                yield from ((in_place, (*path, key, i), s) for i, s in enumerate(schema[key]))
        for key in maps:
            if isinstance(schema.get(key), dict):
                yield from ((in_place, (*path, key, name), s) for name, s in schema[key].items())


class _Walk:
    """One pass over the schema's subschemas, collecting what each one applies to the same value."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.schemas: set[Path] = set()
        self.in_place: dict[Path, list[Path]] = {}
        self.anchors: dict[str, Path] = {}
        self.references: list[tuple[Path, str, str]] = []
        self.patterns: dict[str, Path] = {}

    def run(self) -> str | None:
        stack: list[tuple[Path, Any]] = [((), self.root)]
        while stack:
            path, node = stack.pop()
            self.schemas.add(path)
            if not isinstance(node, dict):
                continue
            problem = self._keywords(path, node)
            if problem is not None:
                return problem
            for in_place, child_path, child in _children(node, path):
                if in_place:
                    self.in_place.setdefault(path, []).append(child_path)
                stack.append((child_path, child))
        return self._references_problem() or self._patterns_problem() or _cycle_problem(self.in_place)

    def _keywords(self, path: Path, node: dict[str, Any]) -> str | None:
        dialect = node.get("$schema", "")
        if "$schema" in node and (path or not isinstance(dialect, str) or dialect not in DIALECTS):
            return f"$schema at {pointer(path)}: only Draft 2020-12, and only at the root, is accepted"
        if "$id" in node and path:
            return f"$id at {pointer(path)}: only the root may have an $id"
        for key in ("$anchor", "$dynamicAnchor"):
            if isinstance(node.get(key), str):
                self.anchors[node[key]] = path
        for keyword in _REFERENCES:
            ref = node.get(keyword)
            if isinstance(ref, str):
                if not ref.startswith("#"):
                    return (
                        f"{keyword} {ref[:100]!r} at {pointer(path)}: only references inside the schema "
                        "(starting with #) are accepted; nothing is fetched"
                    )
                self.references.append((path, keyword, ref))
        if isinstance(node.get("pattern"), str):
            self.patterns.setdefault(node["pattern"], (*path, "pattern"))
        if isinstance(node.get("patternProperties"), dict):
            for name in node["patternProperties"]:
                self.patterns.setdefault(name, (*path, "patternProperties", name))
        return None

    def _references_problem(self) -> str | None:
        """Each reference must name a subschema of this schema (a pointer into `$defs`, `properties`,
        ... or an `$anchor`); none may point into data such as `const` or an unknown keyword."""
        for path, keyword, ref in self.references:
            fragment = ref[1:]
            if fragment[:1] not in ("", "/"):
                target = self.anchors.get(fragment)
            else:
                found = _resolve_pointer(self.root, fragment)
                target = found if found in self.schemas else None
            if target is None:
                return f"{keyword} {ref[:100]!r} at {pointer(path)} names no subschema of this schema (use $defs)"
            self.in_place.setdefault(path, []).append(target)
        return None

    def _patterns_problem(self) -> str | None:
        if len(self.patterns) > MAX_PATTERNS:
            return f"it has more than {MAX_PATTERNS} distinct patterns"
        program = 0
        for pattern, path in self.patterns.items():
            try:
                program += compile_pattern(pattern).programsize
            except PatternRefused as exc:
                return f"pattern {pattern[:100]!r} at {pointer(path)} cannot run on RE2: {exc}"
            if program > MAX_PATTERN_PROGRAM:
                return f"its patterns together are too large for RE2 (over {MAX_PATTERN_PROGRAM} instructions)"
        return None


def _cycle_problem(edges: dict[Path, list[Path]]) -> str | None:
    """A loop of subschemas applied in place (a check that would never end), or a chain too long."""
    chain: dict[Path, int] = {}  # location -> longest in-place chain from it
    too_long = f"subschemas apply inside one another more than {MAX_IN_PLACE_CHAIN} times"
    for start in edges:
        if start in chain:
            continue
        on_path, on_path_set = [start], {start}
        iters = [iter(edges.get(start, ()))]
        while iters:
            child = next(iters[-1], None)
            if child is None:
                node = on_path.pop()
                on_path_set.discard(node)
                iters.pop()
                chain[node] = 1 + max((chain[c] for c in edges.get(node, ())), default=0)
                if chain[node] > MAX_IN_PLACE_CHAIN:
                    return f"{too_long} (from {pointer(node)})"
            elif child in on_path_set:
                loop = " -> ".join(pointer(p) for p in [*on_path[on_path.index(child) :], child])
                return f"it refers back to itself without descending into the answer ({loop}): a check that never ends"
            elif child not in chain:
                if len(on_path) >= MAX_IN_PLACE_CHAIN:
                    return f"{too_long} (from {pointer(start)})"
                on_path.append(child)
                on_path_set.add(child)
                iters.append(iter(edges.get(child, ())))
    return None


def schema_refusal(schema: Any) -> str | None:
    """Why the gateway will not hold answers against `schema`, or None when it will."""
    problem = shape_problem(schema)
    if problem is not None or not isinstance(schema, dict):
        return problem
    return _Walk(schema).run()
