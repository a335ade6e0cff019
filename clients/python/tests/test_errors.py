"""Failed calls come back as one exception class per gRPC code, with the service's
google.rpc details decoded: BadRequest field violations, ErrorInfo reason/domain/metadata,
PreconditionFailure violations."""

from __future__ import annotations

import uuid

import pytest

import custops
from custops.loyalty.v1 import loyalty_service_pb2 as ly
from custops.profiles.v1 import customer_pb2, identity_pb2
from custops.profiles.v1 import profiles_service_pb2 as pf
from custops.segmentation.v1 import rule_pb2, segment_pb2
from custops.segmentation.v1 import segmentation_service_pb2 as sg

from support import create_customer, create_program, enrol, grant, member_ref, unique


def customer_with_email(email: str) -> pf.CreateCustomerRequest:
    return pf.CreateCustomerRequest(
        customer=customer_pb2.Customer(
            given_name="Mei",
            identities=[identity_pb2.Identity(identity_type=identity_pb2.IDENTITY_TYPE_EMAIL, value=email)],
        )
    )


def test_a_bad_field_is_invalid_argument_naming_it(suite: custops.Suite) -> None:
    with pytest.raises(custops.InvalidArgument) as caught:
        suite.profiles.CreateCustomer(customer_with_email("not an e-mail"))
    error = caught.value
    assert error.code.name == "INVALID_ARGUMENT"
    assert "customer.identities[0].value" in error.fields
    violation = error.violation("customer.identities[0].value")
    assert violation is not None and violation.description
    assert error.method == "/custops.profiles.v1.ProfilesService/CreateCustomer"
    assert error.attempts == 1  # a bad request is never retried
    assert isinstance(error, custops.CustopsError)


def test_every_bad_field_of_one_request_is_named(suite: custops.Suite) -> None:
    request = pf.CreateCustomerRequest(
        customer=customer_pb2.Customer(
            identities=[
                identity_pb2.Identity(identity_type=identity_pb2.IDENTITY_TYPE_EMAIL, value="bad"),
                identity_pb2.Identity(identity_type=identity_pb2.IDENTITY_TYPE_PHONE, value="12"),
            ]
        )
    )
    with pytest.raises(custops.InvalidArgument) as caught:
        suite.profiles.CreateCustomer(request)
    assert caught.value.fields == ["customer.identities[0].value", "customer.identities[1].value"]


def test_both_bad_paging_fields_are_named(suite: custops.Suite) -> None:
    with pytest.raises(custops.InvalidArgument) as caught:
        suite.profiles.ListCustomers(pf.ListCustomersRequest(page_size=-1, page_token="not a token"))
    assert sorted(caught.value.fields) == ["page_size", "page_token"]


def test_a_taken_identity_is_already_exists_with_its_holder(suite: custops.Suite) -> None:
    email = f"{unique('taken')}@example.com"
    holder = suite.profiles.CreateCustomer(customer_with_email(email)).customer.customer_id
    with pytest.raises(custops.AlreadyExists) as caught:
        suite.profiles.CreateCustomer(customer_with_email(email.upper()))
    error = caught.value
    assert not isinstance(error, custops.RequestIdReused)
    assert error.reason == "IDENTITY_TAKEN"
    assert error.metadata["customer_id"] == holder
    assert error.metadata["field"] == "customer.identities[0]"


def test_redeeming_more_than_the_balance_is_failed_precondition_with_the_shortfall(
    suite: custops.Suite,
) -> None:
    member_id = enrol(suite, create_program(suite), create_customer(suite))
    suite.loyalty.EarnPoints(grant(member_id, 30))
    with pytest.raises(custops.FailedPrecondition) as caught:
        suite.loyalty.RedeemPoints(ly.RedeemPointsRequest(member=member_ref(member_id), points=100, reason="tv"))
    error = caught.value
    assert error.error_info is not None
    assert error.error_info.domain == "custops.loyalty"
    assert error.reason == "INSUFFICIENT_POINTS"
    assert error.metadata["shortfall"] == "70"
    assert error.metadata["available_points"] == "30"
    assert error.metadata["requested_points"] == "100"


def test_a_request_id_reused_for_another_request_is_refused_and_a_replay_answers_the_first(
    suite: custops.Suite,
) -> None:
    member_id = enrol(suite, create_program(suite), create_customer(suite))
    request_id = custops.new_request_id()
    first = suite.loyalty.EarnPoints(grant(member_id, 5, request_id=request_id))
    assert first.ledger_entry.request_id == request_id

    replay = suite.loyalty.EarnPoints(grant(member_id, 5, request_id=request_id))
    assert replay == first  # the first answer, byte for byte: no second entry

    with pytest.raises(custops.RequestIdReused) as caught:
        suite.loyalty.EarnPoints(grant(member_id, 6, request_id=request_id))
    error = caught.value
    assert isinstance(error, custops.AlreadyExists)
    assert error.reason == "REQUEST_ID_REUSED"
    assert error.request_id == request_id
    member = suite.loyalty.GetMember(ly.GetMemberRequest(member_id=member_id)).member
    assert member.balances.available_points == 5


def test_deleting_a_referenced_segment_lists_the_referrers_as_precondition_failures(
    suite: custops.Suite,
) -> None:
    base = suite.segmentation.CreateSegment(
        sg.CreateSegmentRequest(
            segment=segment_pb2.Segment(display_name=unique("VIP"), kind=segment_pb2.SEGMENT_KIND_STATIC)
        )
    ).segment.segment_id
    referrer = suite.segmentation.CreateSegment(
        sg.CreateSegmentRequest(
            segment=segment_pb2.Segment(
                display_name=unique("Not VIP"),
                kind=segment_pb2.SEGMENT_KIND_RULE,
                rule=rule_pb2.Condition(
                    **{"not": rule_pb2.NotCondition(
                        condition=rule_pb2.Condition(segment=rule_pb2.SegmentReference(segment_id=base))
                    )}
                ),
            )
        )
    ).segment.segment_id
    with pytest.raises(custops.FailedPrecondition) as caught:
        suite.segmentation.DeleteSegment(sg.DeleteSegmentRequest(segment_id=base))
    violations = caught.value.precondition_violations
    assert [(v.type, v.subject) for v in violations] == [("SEGMENT_REFERENCED", f"segments/{referrer}")]


def test_an_unknown_customer_is_not_found(suite: custops.Suite) -> None:
    with pytest.raises(custops.NotFound):
        suite.profiles.GetCustomer(pf.GetCustomerRequest(customer_id=str(uuid.uuid4())))
