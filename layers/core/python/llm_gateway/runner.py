"""Runs `pipeline.STEPS` in-process: the same step functions the Lambdas call, no hops between them."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from .contracts import GatewayState
from .deps import Deps
from .errors import GatewayError, InternalError
from .finish import finish_step, record_failure
from .pipeline import STEPS, Step

StepFunction = Callable[[GatewayState, Deps], Any]


def load_step(step: Step) -> StepFunction:
    """Import a step's function from its `module:function` path."""
    module_name, _, function_name = step.function.partition(":")
    function: StepFunction = getattr(importlib.import_module(module_name), function_name)
    return function


class InProcessRunner:
    """Walks the chain for one request; exits early on `blocked` and cache `hit`, then finishes."""

    def __init__(self, deps: Deps, steps: tuple[Step, ...] = STEPS) -> None:
        self.deps = deps
        self._steps = [(step, load_step(step)) for step in steps]

    def run(self, state: GatewayState, *, stop_before: str | None = None, start_at: str | None = None) -> GatewayState:
        """Run the steps (all, or from `start_at` and/or up to `stop_before`) and, unless stopped
        early, finish.

        A `GatewayError` is recorded as a failed request and raised again for the caller to map.
        """
        started = start_at is None
        try:
            for step, function in self._steps:
                started = started or step.name == start_at
                if not started:
                    continue
                if step.name == stop_before:
                    return state
                started_at = time.perf_counter()
                result = function(state, self.deps)
                state.timings_ms[step.name] = round((time.perf_counter() - started_at) * 1000, 3)
                setattr(state, step.name, result)
                if step.exit is not None and step.exit.taken(result):
                    break
            state.finish = finish_step(state, self.deps)
        except GatewayError as error:
            self.fail(state, error)
            raise
        except Exception:
            self.fail(state, InternalError("The gateway failed to process the request."))
            raise
        return state

    def fail(self, state: GatewayState, error: GatewayError) -> None:
        record_failure(state, self.deps, error)

    def steps_walked(self, state: GatewayState) -> list[str]:
        """Names of the steps whose results are in `state`, in chain order (for tests and traces)."""
        names = [step.name for step, _ in self._steps if getattr(state, step.name) is not None]
        return [*names, "finish"] if state.finish is not None else names
