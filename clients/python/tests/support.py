"""Helpers the client's tests share: waiting on a condition, unique names, and the requests
that set up a customer's world (a loyalty program, an NPS survey, a segment) — all built from
the generated messages of the `custops` package alone."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

import custops
from custops.common.v1 import money_pb2
from custops.feedback.v1 import feedback_service_pb2 as fb
from custops.feedback.v1 import survey_pb2, touchpoint_pb2
from custops.loyalty.v1 import loyalty_service_pb2 as ly
from custops.loyalty.v1 import member_pb2, program_pb2, tier_pb2
from custops.profiles.v1 import activity_pb2, customer_pb2, identity_pb2
from custops.profiles.v1 import profiles_service_pb2 as pf

T = TypeVar("T")


def eventually(check: Callable[[], Optional[T]], timeout: float = 30.0, every: float = 0.1) -> T:
    """The first truthy answer of `check`, asked until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout} s: {check.__doc__ or check}")
        time.sleep(every)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def hours_ago(hours: float) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(timezone.utc) - timedelta(hours=hours))
    return ts


def cny(amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount_minor, currency="CNY")


def create_customer(suite: custops.Suite, *, tags: tuple = ()) -> str:
    """A new customer with a unique e-mail; its id."""
    response = suite.profiles.CreateCustomer(
        pf.CreateCustomerRequest(
            customer=customer_pb2.Customer(
                given_name="Wei",
                family_name="Li",
                identities=[
                    identity_pb2.Identity(
                        identity_type=identity_pb2.IDENTITY_TYPE_EMAIL,
                        value=f"{unique('wei')}@example.com",
                    )
                ],
                tags=list(tags),
            )
        )
    )
    return response.customer.customer_id


def purchase(customer_id: str, order_id: str, amount_minor: int) -> pf.RecordActivityRequest:
    return pf.RecordActivityRequest(
        activity=activity_pb2.Activity(
            customer_id=customer_id,
            source="order_service",
            event_id=order_id,
            occur_time=hours_ago(1),
            channel="web",
            purchase=activity_pb2.Purchase(
                order_id=order_id, amount=cny(amount_minor), categories=["shoes"], item_count=1
            ),
        )
    )


def create_program(suite: custops.Suite) -> str:
    """A CNY program earning 1 point per 1.00 CNY, with a base and a silver tier."""
    program = program_pb2.Program(
        display_name=unique("Acme Rewards"),
        currency="CNY",
        clawback_policy=program_pb2.CLAWBACK_POLICY_WITHIN_BALANCE,
        earning_rules=program_pb2.EarningRules(
            base_rate=program_pb2.EarnRate(points=1, per_amount_minor=100),
            rounding_mode=program_pb2.ROUNDING_MODE_DOWN,
        ),
        tiers=[
            tier_pb2.Tier(tier_code="member", display_name="Member"),
            tier_pb2.Tier(
                tier_code="silver",
                display_name="Silver",
                threshold=tier_pb2.QualifyingAmount(qualifying_points=100),
            ),
        ],
        tier_policy=tier_pb2.TierPolicy(
            qualifying_window_days=365,
            review_schedule=tier_pb2.TIER_REVIEW_SCHEDULE_ANNIVERSARY,
            review_period_months=12,
            grace_period_days=30,
            downgrade_mode=tier_pb2.TIER_DOWNGRADE_MODE_TO_QUALIFIED_TIER,
        ),
    )
    return suite.loyalty.CreateProgram(ly.CreateProgramRequest(program=program)).program.program_id


def enrol(suite: custops.Suite, program_id: str, customer_id: str) -> str:
    response = suite.loyalty.EnrolMember(
        ly.EnrolMemberRequest(program_id=program_id, customer_id=customer_id, enrol_channel="app")
    )
    return response.member.member_id


def member_ref(member_id: str) -> member_pb2.MemberRef:
    return member_pb2.MemberRef(member_id=member_id)


def grant(member_id: str, points: int, **fields: str) -> ly.EarnPointsRequest:
    return ly.EarnPointsRequest(
        member=member_ref(member_id),
        grant=ly.PointsGrant(points=points),
        reason="welcome gift",
        **fields,
    )


def create_active_survey(suite: custops.Suite, reward_program_id: str = "", points: int = 0) -> str:
    """An active one-question NPS survey about orders, rewarding `points` when given."""
    survey = survey_pb2.Survey(
        display_name=unique("After delivery"),
        questions=[
            survey_pb2.Question(
                question_id="nps",
                text="How likely are you to recommend us?",
                kind=survey_pb2.QUESTION_KIND_NPS,
                required=True,
            )
        ],
        target=survey_pb2.SurveyTarget(touchpoint_kind=touchpoint_pb2.TOUCHPOINT_KIND_ORDER),
    )
    if points:
        survey.reward.CopyFrom(survey_pb2.SurveyReward(points=points, program_id=reward_program_id))
    survey_id = suite.feedback.CreateSurvey(fb.CreateSurveyRequest(survey=survey)).survey.survey_id
    suite.feedback.ActivateSurvey(fb.ActivateSurveyRequest(survey_id=survey_id))
    return survey_id
