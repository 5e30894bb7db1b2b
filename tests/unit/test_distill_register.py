"""`distill register`'s edit of the operator's configuration file: the student goes in as a model
and into the tenant's `allowed_models`, comments and layout kept, checked by reading it back; a
layout that cannot be edited in place is left alone, with the lines to add."""

from __future__ import annotations

import pytest

from llm_gateway.config import ModelConfig, parse_config
from llm_gateway.distill.register import RegistrationByHand, register

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
