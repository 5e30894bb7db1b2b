"""`distill register`'s edit of the operator's configuration file: the student goes in as a model
and into the tenant's `allowed_models`, comments and layout kept, checked by reading it back; a
layout that cannot be edited in place is left alone, with the lines to add."""

from __future__ import annotations

import pytest

from llm_gateway.config import ModelConfig, parse_config
from llm_gateway.distill.register import RegistrationByHand, register, student_problem
from llm_gateway.errors import ConfigError

STUDENT = ModelConfig(provider="sagemaker", endpoint="local", weights="/students/v1", lifecycle="candidate")

BLOCK = """# the operator's comment stays
storage_path: /tmp/gw.db
models:
  # the teacher
  teacher: {provider: echo, allows_training: true}
  small:
    provider: echo   # a trailing comment
tenants:
  acme:
    demo: true
    routes:
      support: {model: teacher}
  globex:
    demo: true
    allowed_models:
      - small
    routes: {default: {model: small}}
"""


def test_the_student_is_added_and_allowed_with_everything_else_kept() -> None:
    edited = register(BLOCK, "student-v1", STUDENT, "acme")
    config = parse_config(edited)
    assert config.models["student-v1"] == STUDENT
    assert config.tenants["acme"].allowed_models == ["student-v1"]
    assert config.tenants["globex"].allowed_models == ["small"]
    # every line of the file is still there, comments included; two lines were added
    assert [line for line in edited.splitlines() if line in BLOCK.splitlines()] == BLOCK.splitlines()
    assert len(edited.splitlines()) == len(BLOCK.splitlines()) + 2


@pytest.mark.parametrize(
    ("listed", "after"),
    [
        ("    allowed_models:\n      - small\n", ["small", "student-v1"]),
        ("    allowed_models: [small]\n", ["small", "student-v1"]),
        ("    allowed_models: []\n", ["student-v1"]),
    ],
)
def test_an_existing_allowed_models_list_gains_the_name(listed: str, after: list[str]) -> None:
    text = BLOCK.replace("    allowed_models:\n      - small\n", listed)
    edited = register(text, "student-v1", STUDENT, "globex")
    config = parse_config(edited)
    assert config.tenants["globex"].allowed_models == after
    assert config.tenants["globex"].routes["default"].model == "small"


def test_a_taken_name_an_unknown_tenant_and_a_flow_layout_are_refused() -> None:
    with pytest.raises(ValueError, match="named teacher already"):
        register(BLOCK, "teacher", STUDENT, "acme")
    with pytest.raises(ValueError, match="no tenant initech"):
        register(BLOCK, "student-v1", STUDENT, "initech")
    flow = "models: {teacher: {provider: echo}}\ntenants: {acme: {demo: true, routes: {d: {model: teacher}}}}\n"
    with pytest.raises(RegistrationByHand, match="add under `models:`") as by_hand:
        register(flow, "student-v1", STUDENT, "acme")
    assert '"weights": "/students/v1"' in str(by_hand.value)


def test_a_hostile_model_name_is_written_as_data() -> None:
    name = 'x: {provider: openai}\n  evil: "'
    edited = register(BLOCK, name, STUDENT, "acme")
    config = parse_config(edited)
    assert config.models[name] == STUDENT and "evil" not in config.models


def test_a_tenant_that_is_an_alias_of_another_is_left_to_the_operator() -> None:
    # Given acme's policy anchored and reused by globex: editing acme's lines would allow globex too
    shared = BLOCK.replace("  acme:\n", "  acme: &policy\n").replace(
        "  globex:\n    demo: true\n    allowed_models:\n      - small\n    routes: {default: {model: small}}\n",
        "  globex: *policy\n",
    )
    assert parse_config(shared).tenants["globex"] == parse_config(shared).tenants["acme"]
    with pytest.raises(RegistrationByHand, match="add under `models:`"):
        register(shared, "student-v1", STUDENT, "acme")


def test_crlf_line_endings_and_the_comments_of_a_block_list_are_kept() -> None:
    # Given a file written on Windows whose tenant lists its models one a line, with comments
    text = BLOCK.replace("      - small\n", "      - small  # the cheap one\n      # more to come\n")
    edited = register(text.replace("\n", "\r\n"), "student-v1", STUDENT, "globex")
    assert edited.count("\n") == edited.count("\r\n") == text.count("\n") + 2  # every line ends as the file's do
    assert all(line in edited.splitlines() for line in text.splitlines())  # nothing of the operator's removed
    assert parse_config(edited).tenants["globex"].allowed_models == ["small", "student-v1"]


def test_a_flow_list_over_several_lines_keeps_its_comments() -> None:
    listed = "    allowed_models: [\n      small,  # the cheap one\n    ]\n"
    edited = register(BLOCK.replace("    allowed_models:\n      - small\n", listed), "student-v1", STUDENT, "globex")
    assert "# the cheap one" in edited
    assert parse_config(edited).tenants["globex"].allowed_models == ["small", "student-v1"]


def test_a_text_that_is_not_one_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected a single document"):
        register(BLOCK + "---\n" + BLOCK, "student-v1", STUDENT, "acme")


@pytest.mark.parametrize(
    ("change", "name", "said"),
    [
        ({"lifecycle": "live"}, "student-v1", "lifecycle is live, not candidate"),
        ({"allows_training": True}, "student-v1", "a student is never a teacher"),
        ({"weights": "students/v1"}, "student-v1", "not an absolute path"),
        ({}, "support", "a route named support"),
    ],
)
def test_only_a_candidate_student_under_a_free_name_may_be_registered(
    change: dict[str, object], name: str, said: str
) -> None:
    problem = student_problem(STUDENT.model_copy(update=change), name, ["support"])
    assert problem is not None and said in problem
    assert student_problem(STUDENT, "student-v1", ["support"]) is None
