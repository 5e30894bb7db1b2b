"""The README's "Talk to it" examples run as written once the reader did what the section says:
the key `serve` printed is exported as KEY before curl reads `$KEY`, and the Python example uses
no name it does not define."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def talk_to_it() -> str:
    return README.read_text().split("## Talk to it", 1)[1].split("\n## ", 1)[0]


def test_the_key_is_exported_before_curl_reads_it() -> None:
    section = talk_to_it()
    assert "export KEY=" in section
    assert section.index("export KEY=") < section.index("$KEY")


def test_the_python_example_defines_every_name_it_uses() -> None:
    [code] = re.findall(r"```python\n(.*?)```", talk_to_it(), flags=re.S)
    tree = ast.parse(code)
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            defined |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    assert used <= defined, used - defined
