"""A customer's journey across the four services, through the `custops` package alone:
created in profiles, a purchase that moves them into a segment, points earned and redeemed
in loyalty, a survey answered in feedback that loyalty rewards."""

from __future__ import annotations

import pytest

import custops
from custops.feedback.v1 import feedback_service_pb2 as fb
from custops.feedback.v1 import invitation_pb2, response_pb2, touchpoint_pb2
from custops.loyalty.v1 import ledger_pb2
from custops.loyalty.v1 import loyalty_service_pb2 as ly
from custops.segmentation.v1 import rule_pb2, segment_pb2
from custops.segmentation.v1 import segmentation_service_pb2 as sg

from support import (
    cny,
    create_active_survey,
    create_customer,
    create_program,
    enrol,
    eventually,
    member_ref,
    purchase,
    unique,
)


def buyers_segment(suite: custops.Suite) -> str:
    """A rule segment: customers with at least one purchase."""
    segment = segment_pb2.Segment(
        display_name=unique("Buyers"),
        kind=segment_pb2.SEGMENT_KIND_RULE,
        rule=rule_pb2.Condition(
            predicate=rule_pb2.Predicate(
                field="purchase.count",
                operator=rule_pb2.OPERATOR_GREATER_OR_EQUAL,
                values=[rule_pb2.Value(integer_value=1)],
            )
        ),
    )
    return suite.segmentation.CreateSegment(sg.CreateSegmentRequest(segment=segment)).segment.segment_id


def is_member(suite: custops.Suite, segment_id: str, customer_id: str) -> bool:
    return suite.segmentation.CheckMembership(
        sg.CheckMembershipRequest(segment_id=segment_id, customer_id=customer_id)
    ).member


def test_a_customer_buys_joins_a_segment_earns_redeems_and_answers_a_survey(suite: custops.Suite) -> None:
    # Arrange: a program, a survey rewarding 7 points in it, a segment of buyers.
    program_id = create_program(suite)
    survey_id = create_active_survey(suite, reward_program_id=program_id, points=7)
    segment_id = buyers_segment(suite)

    # A new customer: segmentation learns of them from the profiles feed, not in the segment.
    customer_id = create_customer(suite)

    def known() -> bool:
        try:
            suite.segmentation.GetCustomerFacts(sg.GetCustomerFactsRequest(customer_id=customer_id))
            return True
        except custops.NotFound:
            return False

    eventually(known)
    assert not is_member(suite, segment_id, customer_id)

    # A purchase in profiles moves them into the segment (segmentation follows the feed).
    recorded = suite.profiles.RecordActivity(purchase(customer_id, unique("order"), 15_000))
    assert recorded.activity.customer_id == customer_id
    eventually(lambda: is_member(suite, segment_id, customer_id))
    segments = suite.segmentation.ListCustomerSegments(
        sg.ListCustomerSegmentsRequest(customer_id=customer_id)
    )
    assert segment_id in segments.segment_ids

    # Loyalty: enrol, earn from the purchase (1 point per 1.00 CNY), which reaches silver.
    member_id = enrol(suite, program_id, customer_id)
    earned = suite.loyalty.EarnPoints(
        ly.EarnPointsRequest(
            member=member_ref(member_id),
            purchase=ledger_pb2.Purchase(order_id=unique("order"), amount=cny(15_000)),
        )
    )
    assert earned.ledger_entry.kind == ledger_pb2.LEDGER_ENTRY_KIND_EARN
    assert earned.ledger_entry.points == 150
    assert earned.ledger_entry.caller == "pytest"  # the subject of the token minted here
    assert earned.ledger_entry.request_id  # the package gave the call a request id
    assert earned.member.balances.available_points == 150
    assert earned.member.tier.tier_code == "silver"
    assert earned.tier_change.to_tier_code == "silver"

    redeemed = suite.loyalty.RedeemPoints(
        ly.RedeemPointsRequest(member=member_ref(member_id), points=50, reason="coupon")
    )
    assert redeemed.ledger_entry.kind == ledger_pb2.LEDGER_ENTRY_KIND_REDEEM
    assert redeemed.member.balances.available_points == 100
    assert redeemed.member.balances.lifetime_redeemed_points == 50

    # Feedback: invited after the order, they answer 9 (a promoter) and are rewarded 7 points.
    invitation = suite.feedback.CreateInvitation(
        fb.CreateInvitationRequest(
            invitation=invitation_pb2.Invitation(
                survey_id=survey_id,
                customer_id=customer_id,
                touchpoint=touchpoint_pb2.TouchpointRef(
                    kind=touchpoint_pb2.TOUCHPOINT_KIND_ORDER, touchpoint_id=unique("order")
                ),
                channel="email",
            )
        )
    ).invitation
    answered = suite.feedback.SubmitResponse(
        fb.SubmitResponseRequest(
            invitation_id=invitation.invitation_id,
            answers=[response_pb2.Answer(question_id="nps", score=9)],
        )
    ).survey_response
    assert answered.customer_id == customer_id
    assert answered.scores.nps_score == 9
    assert answered.scores.nps_category == response_pb2.NPS_CATEGORY_PROMOTER
    assert segment_id in answered.segment_ids

    def rewarded() -> bool:
        member = suite.loyalty.GetMember(ly.GetMemberRequest(member_id=member_id)).member
        return member.balances.available_points == 107

    eventually(rewarded)
    response = suite.feedback.GetResponse(fb.GetResponseRequest(response_id=answered.response_id))
    assert response.survey_response.reward.status == response_pb2.REWARD_STATUS_DELIVERED
    assert response.survey_response.reward.points == 7


def test_the_token_is_required_and_its_scopes_are_checked(running_suite) -> None:
    customer_id_request = sg.ListCustomerSegmentsRequest(customer_id="c-1")
    with running_suite.connect(token=None) as anonymous:
        with pytest.raises(custops.Unauthenticated):
            anonymous.segmentation.ListCustomerSegments(customer_id_request)
    narrow = custops.TokenMinter("pytest", ["profiles.read"], secret=running_suite.secret)
    with running_suite.connect(token=narrow) as reader:
        with pytest.raises(custops.PermissionDenied):
            reader.segmentation.ListCustomerSegments(customer_id_request)
        reader.profiles.ListCustomers(custops.profiles.v1.profiles_service_pb2.ListCustomersRequest(page_size=1))
