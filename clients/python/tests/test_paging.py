"""`custops.iterate` / `custops.pages` walk a paged list to its end: every item exactly
once, no empty page after a full one, and the token stays bound to its filters."""

from __future__ import annotations

import pytest

import custops
from custops.loyalty.v1 import loyalty_service_pb2 as ly
from custops.profiles.v1 import customer_pb2
from custops.profiles.v1 import profiles_service_pb2 as pf
from custops.segmentation.v1 import segmentation_service_pb2 as sg

from support import create_customer, unique


def tagged(tag: str, page_size: int) -> pf.ListCustomersRequest:
    return pf.ListCustomersRequest(filter=customer_pb2.CustomerFilter(tags=[tag]), page_size=page_size)


def test_iterate_yields_every_item_of_every_page_once(suite: custops.Suite) -> None:
    tag = unique("paging")
    created = {create_customer(suite, tags=(tag,)) for _ in range(7)}
    request = tagged(tag, page_size=3)

    seen = [c.customer_id for c in custops.iterate(suite.profiles.ListCustomers, request)]

    assert len(seen) == len(created) == 7
    assert set(seen) == created
    sizes = [len(page.customers) for page in custops.pages(suite.profiles.ListCustomers, request)]
    assert sizes == [3, 3, 1]
    assert request.page_token == ""  # the caller's request is left as it was


def test_a_list_of_whole_pages_ends_on_its_last_full_page(suite: custops.Suite) -> None:
    tag = unique("whole")
    for _ in range(6):
        create_customer(suite, tags=(tag,))
    pages = list(custops.pages(suite.profiles.ListCustomers, tagged(tag, page_size=3)))
    assert [len(p.customers) for p in pages] == [3, 3]
    assert pages[-1].next_page_token == ""


def test_a_token_is_refused_with_other_filters(suite: custops.Suite) -> None:
    tag = unique("bound")
    for _ in range(3):
        create_customer(suite, tags=(tag,))
    first = suite.profiles.ListCustomers(tagged(tag, page_size=2))
    assert first.next_page_token
    moved = tagged(unique("other"), page_size=2)
    moved.page_token = first.next_page_token
    with pytest.raises(custops.InvalidArgument) as caught:
        suite.profiles.ListCustomers(moved)
    assert caught.value.fields == ["page_token"]


def test_the_items_field_is_found_or_must_be_named() -> None:
    assert custops.paging.items_field(pf.ListCustomersResponse) == "customers"
    with pytest.raises(TypeError, match="items="):
        custops.paging.items_field(sg.ListCustomerSegmentsResponse)
    with pytest.raises(TypeError, match=r"repeated fields \[\]"):
        custops.paging.items_field(ly.EarnPointsResponse)  # singular fields are not items
    with pytest.raises(TypeError, match="not a paged list"):
        next(custops.pages(lambda r: r, pf.GetCustomerRequest()))
