"""What the router and /healthz say about a supervised model endpoint while it is down."""

from __future__ import annotations

from llm_gateway.cli.supervisor import Backoff, describe_exit
from llm_gateway.model_endpoint import EndpointHealth, endpoint_down


def test_the_503_says_the_endpoint_is_restarting_why_and_when() -> None:
    error = endpoint_down(EndpointHealth("restarting", 1, 1, "signal SIGSEGV", next_restart_in_s=1.2))
    assert (error.status, error.code, error.retry_after_s) == (503, "model_endpoint_restarting", 1.2)
    assert error.message == (
        "The local model endpoint is restarting after signal SIGSEGV; the next start is in 2 s. Retry shortly."
    )
    starting = endpoint_down(EndpointHealth("restarting", 2, 1, "signal SIGKILL"))
    assert "it is starting now" in starting.message and starting.retry_after_s == 1.0


def test_a_crash_loop_is_named_as_one() -> None:
    looping = EndpointHealth("restarting", 5, 4, "exit status 1", next_restart_in_s=8.0)
    assert looping.crash_loop
    assert endpoint_down(looping).message == (
        "The local model endpoint keeps crashing (4 exits in a row, the last: exit status 1); the next start is in 8 s."
    )
    assert looping.as_json() == {
        "state": "restarting",
        "restarts": 5,
        "last_exit": "exit status 1",
        "consecutive_exits": 4,
        "crash_loop": True,
        "next_restart_in_s": 8.0,
    }


def test_exits_read_as_a_signal_name_or_a_status() -> None:
    assert describe_exit(-11) == "signal SIGSEGV"
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(3) == "exit status 3"


def test_the_restart_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(0.5, 4.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
