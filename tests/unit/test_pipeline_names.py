"""Every string in `pipeline.py` that names code resolves to it, so a rename fails here, not on AWS.

The chain definition names step functions as "module:function", handler folders, exit fields and
error classes as strings (the CDK app reads it without importing the steps).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from llm_gateway import errors
from llm_gateway.contracts import GatewayState
from llm_gateway.pipeline import CAUGHT_ERRORS, FAILED, FINISH, INVOKE_POLICY, REST_INVOKE_POLICY, STEPS, Step

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
CORE = Path(__file__).resolve().parents[2] / "layers" / "core" / "python" / "llm_gateway"


@pytest.mark.parametrize("step", [*STEPS, FINISH, FAILED], ids=lambda step: step.name)
def test_each_step_names_a_function_in_a_module_named_for_it_and_a_handler_folder(step: Step) -> None:
    module_name, _, function_name = step.function.partition(":")
    module = importlib.import_module(module_name)
    function = getattr(module, function_name)
    assert callable(function) and list(inspect.signature(function).parameters)[:2] == ["state", "deps"]
    assert not module.__file__ or not module.__file__.endswith("__init__.py"), "step code lives in a module"
    handler = FUNCTIONS / step.handler / "handler.py"
    assert handler.is_file()
    assert function_name in handler.read_text(), f"functions/{step.handler} does not run {function_name}"


@pytest.mark.parametrize("step", [s for s in STEPS if s.exit is not None], ids=lambda step: step.name)
def test_each_exit_reads_a_field_of_the_state_the_step_writes(step: Step) -> None:
    assert step.exit is not None
    assert step.name in GatewayState.model_fields
    result_type = GatewayState.model_fields[step.name].annotation
    assert step.exit.field in str(result_type) or any(
        step.exit.field in getattr(arg, "model_fields", {}) for arg in getattr(result_type, "__args__", ())
    )


def test_every_error_name_the_chain_catches_or_retries_is_an_error_class() -> None:
    names = set(CAUGHT_ERRORS)
    for policy in (INVOKE_POLICY, REST_INVOKE_POLICY):
        names |= set(policy.retry_on) | set(policy.never_retry)
    for name in sorted(names):
        found = getattr(errors, name, None)
        assert isinstance(found, type) and issubclass(found, Exception), name


def test_no_package_init_holds_logic() -> None:
    # A package's __init__ names what is inside (an exception class at most): code lives in modules
    # named for it, so go-to-definition and `pipeline.STEPS` point at the same file.
    for init in sorted(CORE.rglob("__init__.py")):
        package = ".".join(("llm_gateway", *init.parent.relative_to(CORE).parts))
        module = importlib.import_module(package)
        own = [v for v in vars(module).values() if getattr(v, "__module__", None) == package]
        logic = [
            v.__name__ for v in own if inspect.isfunction(v) or (inspect.isclass(v) and not issubclass(v, Exception))
        ]
        assert not logic, f"{package} defines {logic} in its __init__.py"
