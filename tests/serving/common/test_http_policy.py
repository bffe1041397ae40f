"""The client policy against hostile servers on 127.0.0.1: a deadline per call and per command,
a size cap while streaming, retries only for idempotent calls and only within the deadline.

Times are asserted as generous ceilings relative to the budget (never exact timings); memory as
the bytes the server managed to send before the client hung up, against what it tried to send.
"""

from __future__ import annotations

import contextlib
import time

import psutil
import pytest
import requests

from serving.common.deadline import Deadline, DeadlineExceeded
from serving.common.http_policy import ClientPolicy, ResponseTooLarge, make_session
from tests.fixtures.http_servers import (
    always,
    endless,
    hostile_server,
    response,
    script,
    silent,
    trickle,
)
from tests.fixtures.serving import free_port

SLACK_S = 1.5  # thread start-up and socket shutdown on a loaded two-core machine


def _elapsed(fn) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        fn()
    except BaseException as err:  # noqa: BLE001 - returned for the test to inspect
        return time.monotonic() - start, err
    return time.monotonic() - start, None


def test_a_silent_server_costs_one_call_budget_not_retries_times_timeouts():
    policy = ClientPolicy(call_s=1.0, retries=3, backoff_s=0.2)
    with hostile_server(silent) as server:
        took, err = _elapsed(lambda: make_session(policy).get(server.url + "/x", timeout=30))
    assert isinstance(err, DeadlineExceeded) and "1 s deadline" in str(err)
    assert took < policy.call_s + SLACK_S


@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers"])
def test_a_trickling_server_is_stopped_at_the_deadline(headers):
    policy = ClientPolicy(call_s=1.5, retries=2)
    with hostile_server(trickle(0.2, headers=headers)) as server:
        took, err = _elapsed(lambda: make_session(policy).get(server.url, timeout=1.0))
        assert server.sent > 3  # it did trickle: each byte came well within the read timeout
    assert isinstance(err, DeadlineExceeded)
    assert took < policy.call_s + SLACK_S


def test_the_command_deadline_bounds_all_calls_together():
    policy = ClientPolicy(call_s=30.0, command=Deadline(1.5), retries=0)
    session = make_session(policy)
    with hostile_server(silent) as server:

        def two_calls() -> None:
            for _ in range(2):
                with contextlib.suppress(DeadlineExceeded):
                    session.get(server.url)

        took, _ = _elapsed(two_calls)
        with pytest.raises(DeadlineExceeded):
            session.get(server.url)  # nothing left: refused before connecting
    assert took < 1.5 + SLACK_S


def test_a_3_gb_answer_is_stopped_at_the_cap_while_it_streams():
    cap = 8 * 1024 * 1024
    process = psutil.Process()
    before = process.memory_info().rss
    with hostile_server(endless(3 * 1024**3)) as server:
        session = make_session(ClientPolicy(call_s=60, max_response_bytes=cap))
        took, err = _elapsed(lambda: session.get(server.url))
        time.sleep(0.2)
        sent = server.sent
    assert isinstance(err, ResponseTooLarge) and f"limit is {cap} bytes" in str(err)
    assert sent < 3 * 1024**3 / 20  # stopped early: a small share of the 3 GB left the server
    assert process.memory_info().rss - before < 20 * cap
    assert took < 30


def test_a_declared_oversize_answer_is_refused_before_its_body_is_read():
    cap = 1024 * 1024
    with hostile_server(endless(3 * 1024**3, declare=True)) as server:
        session = make_session(ClientPolicy(call_s=30, max_response_bytes=cap))
        with pytest.raises(ResponseTooLarge, match="declared 3221225472 bytes"):
            session.get(server.url)


def test_a_streaming_caller_is_capped_while_it_iterates():
    cap = 4 * 1024 * 1024
    with hostile_server(endless(3 * 1024**3)) as server:
        session = make_session(ClientPolicy(call_s=60, max_response_bytes=cap))
        answer = session.get(server.url, stream=True)
        read = 0
        with pytest.raises(ResponseTooLarge):
            for chunk in answer.iter_content(chunk_size=65536):
                read += len(chunk)
    assert read <= cap


def test_503_forever_is_retried_with_back_off_then_answered_not_raised():
    policy = ClientPolicy(call_s=20, retries=2, backoff_s=0.05)
    with hostile_server(always(503, b'{"error": "busy"}')) as server:
        answer = make_session(policy).get(server.url)
        assert answer.status_code == 503 and answer.json() == {"error": "busy"}
        assert len(server.requests) == policy.retries + 1


def test_a_retry_after_beyond_the_deadline_is_not_waited_for():
    policy = ClientPolicy(call_s=2.0, retries=3)
    with hostile_server(always(503, headers={"Retry-After": "120"})) as server:
        took, _ = _elapsed(lambda: make_session(policy).get(server.url))
        assert len(server.requests) == 1
    assert took < policy.call_s


def test_a_short_retry_after_is_honoured():
    ok = response(200, b"{}")
    with hostile_server(script(response(503, headers={"Retry-After": "1"}), ok)) as server:
        took, err = _elapsed(lambda: make_session(ClientPolicy(call_s=10)).get(server.url))
        assert err is None and len(server.requests) == 2
    assert 0.9 < took < 10


def test_only_idempotent_calls_are_retried():
    with hostile_server(always(503)) as server:
        make_session(ClientPolicy(call_s=10, backoff_s=0.01)).post(server.url, data=b"x")
        assert len(server.requests) == 1  # a POST that may have done something is not repeated
    declared = ClientPolicy(call_s=10, backoff_s=0.01, retries=2, idempotent={"GET", "POST"})
    with hostile_server(always(503)) as server:
        make_session(declared).post(server.url, data=b"x")
        assert len(server.requests) == 3  # a client whose POSTs are pure computations says so


def test_an_unreachable_server_is_retried_within_the_deadline():
    policy = ClientPolicy(call_s=3.0, retries=2, backoff_s=0.05)
    took, err = _elapsed(lambda: make_session(policy).get(f"http://127.0.0.1:{free_port()}/"))
    assert isinstance(err, requests.ConnectionError)
    assert not isinstance(err, DeadlineExceeded) and took < policy.call_s
