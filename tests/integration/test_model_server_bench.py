"""`python -m model_server.bench` runs on the CPU with the tiny shape and prints every section's row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_server.bench.__main__ import main


def test_the_bench_prints_each_mode_against_the_roofline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["--shape", "tiny", "--skip", "compile,speculative", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("# torch engine on ") and "| measurement | tok/s |" in table
    rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
    assert table.count("\n| ") == 1 + len(rows) == 11  # the header, then a line per row as it was measured
    assert not [name for name in rows if "failed" in name]
    for name in ("plain transformers generate", "engine, float32", "int8 weight-only", "int4 weight-only"):
        assert rows[name]["tok_s"] > 0 and rows[name]["roofline_share"] > 0
    assert rows["8 concurrent requests (aggregate, incl. prefill)"]["tok_s"] > 0
    assert rows["256-token shared prefix, reused"]["note"].startswith("256 positions reused")
    assert rows["256-token shared prefix, other tenant"]["note"].startswith("0 positions reused")
    assert rows["int4 weight-only"]["seconds"] > 0


def test_unknown_sections_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--skip", "warp"])
    assert exit_info.value.code == 2 and "unknown sections: warp" in capsys.readouterr().err
