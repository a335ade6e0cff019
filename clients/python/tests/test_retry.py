"""Request ids and retries: a mutation gets one request id per logical call, reused by every
retry, so a retry after a lost answer returns the first result instead of applying twice;
reads are retried; mutations without a request id are not; one deadline bounds them all."""

from __future__ import annotations

import time
import uuid
from typing import Any, List

import grpc
import pytest

import custops
from custops.feedback.v1 import feedback_service_pb2 as fb
from custops.loyalty.v1 import loyalty_service_pb2 as ly
from custops.profiles.v1 import profiles_service_pb2 as pf

from support import create_customer, create_program, enrol, grant, member_ref, purchase, unique

FAST = custops.RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.05)


class Injected(grpc.RpcError):
    """What grpcio raises when a call fails with `code` and no details (UNAVAILABLE: the
    connection dropped)."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "injected by the test"

    def trailing_metadata(self) -> tuple:
        return ()


class Sabotage(grpc.UnaryUnaryClientInterceptor):
    """Fails the first `failures` calls of `method` with `code`: after the server answered
    (`after_server=True`: the answer is lost on the way back) or before sending."""

    def __init__(
        self,
        method: str,
        failures: int = 1,
        after_server: bool = True,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
    ) -> None:
        self.method = method
        self.code = code
        self.failures = failures
        self.after_server = after_server
        self.requests: List[Any] = []
        self.lost: List[Any] = []

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        if not client_call_details.method.endswith("/" + self.method):
            return continuation(client_call_details, request)
        self.requests.append(request)
        if len(self.requests) > self.failures:
            return continuation(client_call_details, request)
        if self.after_server:
            self.lost.append(continuation(client_call_details, request).result())
        raise Injected(self.code)


def connect(running_suite, sabotage: Sabotage, **kwargs: Any) -> custops.Suite:
    return running_suite.connect(interceptors=[sabotage], retry=FAST, **kwargs)


def test_a_retry_after_a_lost_answer_reuses_the_request_id_and_gets_the_first_result(
    running_suite, suite: custops.Suite
) -> None:
    member_id = enrol(suite, create_program(suite), create_customer(suite))
    sabotage = Sabotage("EarnPoints")
    request = grant(member_id, 10)  # no request id: the package makes one
    with connect(running_suite, sabotage) as flaky:
        answer = flaky.loyalty.EarnPoints(request)

    assert len(sabotage.requests) == 2
    first_id, second_id = (r.request_id for r in sabotage.requests)
    assert first_id and first_id == second_id
    assert request.request_id == ""  # the caller's message is not changed
    (lost,) = sabotage.lost
    assert answer == lost  # the server answered the retry with its first answer
    assert answer.member.balances.available_points == 10
    entries = suite.loyalty.ListLedgerEntries(ly.ListLedgerEntriesRequest(member=member_ref(member_id)))
    assert [e.ledger_entry_id for e in entries.ledger_entries] == [lost.ledger_entry.ledger_entry_id]


def test_each_logical_call_gets_its_own_request_id(running_suite, suite: custops.Suite) -> None:
    member_id = enrol(suite, create_program(suite), create_customer(suite))
    sabotage = Sabotage("EarnPoints", failures=0)
    with connect(running_suite, sabotage) as clients:
        clients.loyalty.EarnPoints(grant(member_id, 1))
        clients.loyalty.EarnPoints(grant(member_id, 1))
    ids = [r.request_id for r in sabotage.requests]
    assert len(ids) == 2 and ids[0] != ids[1]
    member = suite.loyalty.GetMember(ly.GetMemberRequest(member_id=member_id)).member
    assert member.balances.available_points == 2


def test_a_mutation_without_a_request_id_is_not_retried(running_suite, suite: custops.Suite) -> None:
    customer_id = create_customer(suite)
    sabotage = Sabotage("RecordActivity", after_server=False)
    with connect(running_suite, sabotage) as flaky:
        with pytest.raises(custops.Unavailable) as caught:
            flaky.profiles.RecordActivity(purchase(customer_id, unique("order"), 100))
    assert caught.value.attempts == 1
    assert len(sabotage.requests) == 1


def test_a_read_is_retried(running_suite, suite: custops.Suite) -> None:
    customer_id = create_customer(suite)
    sabotage = Sabotage("GetCustomer", failures=2, after_server=False)
    with connect(running_suite, sabotage) as flaky:
        got = flaky.profiles.GetCustomer(pf.GetCustomerRequest(customer_id=customer_id))
    assert got.customer.customer_id == customer_id
    assert len(sabotage.requests) == 3


def test_one_deadline_bounds_every_attempt(running_suite, suite: custops.Suite) -> None:
    sabotage = Sabotage("GetCustomer", failures=10**6, after_server=False)
    patient = custops.RetryPolicy(max_attempts=10**6, initial_backoff=0.02, max_backoff=0.05)
    with running_suite.connect(interceptors=[sabotage], retry=patient) as flaky:
        started = time.monotonic()
        with pytest.raises(custops.Unavailable) as caught:
            flaky.profiles.GetCustomer(pf.GetCustomerRequest(customer_id=create_customer(suite)), timeout=0.5)
        elapsed = time.monotonic() - started
    assert caught.value.attempts > 2
    assert elapsed < 1.5


def test_a_retry_policy_of_one_attempt_never_retries(running_suite, suite: custops.Suite) -> None:
    sabotage = Sabotage("GetCustomer", after_server=False)
    with running_suite.connect(interceptors=[sabotage], retry=custops.RetryPolicy.never()) as flaky:
        with pytest.raises(custops.Unavailable):
            flaky.profiles.GetCustomer(pf.GetCustomerRequest(customer_id=create_customer(suite)))
    assert len(sabotage.requests) == 1


def test_aborted_is_retried_unless_the_request_sent_an_etag(running_suite, suite: custops.Suite) -> None:
    member_id = enrol(suite, create_program(suite), create_customer(suite))
    conflict = Sabotage("EarnPoints", after_server=False, code=grpc.StatusCode.ABORTED)
    with connect(running_suite, conflict) as flaky:
        flaky.loyalty.EarnPoints(grant(member_id, 3))
    assert len(conflict.requests) == 2  # a lock conflict: sent again, applied once

    stale = Sabotage("AssignTicket", after_server=False, code=grpc.StatusCode.ABORTED)
    request = fb.AssignTicketRequest(ticket_id=str(uuid.uuid4()), assignee_id="agent-7", etag="3")
    with connect(running_suite, stale) as flaky:
        with pytest.raises(custops.Aborted) as caught:
            flaky.feedback.AssignTicket(request)
    assert caught.value.attempts == 1 and len(stale.requests) == 1
