"""Every item of a paged list, across all its pages.

Every custops list takes `page_size` (0 means 50; at most 1000) and an opaque `page_token`,
and answers its items plus `next_page_token`, empty on the last page (never an empty page
after a full one). A token is bound to the filters it was issued for, so the same request is
resent with only the token changed. `pages` yields each response; `iterate` each item:

    for customer in custops.iterate(suite.profiles.ListCustomers,
                                    ListCustomersRequest(page_size=200)):
        ...
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

PAGE_TOKEN = "page_token"
NEXT_PAGE_TOKEN = "next_page_token"


def pages(list_method: Callable[..., Resp], request: Message, **call_options: Any) -> Iterator[Resp]:
    """Each response of `list_method` (e.g. `suite.loyalty.ListMembers`) from `request`'s page
    on, until one has no `next_page_token`. `call_options` (timeout=, metadata=, retry=) go to
    every call; each page is its own call with its own deadline. `request` is not changed."""
    if PAGE_TOKEN not in request.DESCRIPTOR.fields_by_name:
        raise TypeError(f"{request.DESCRIPTOR.full_name} has no {PAGE_TOKEN}: not a paged list")
    current = type(request)()
    current.CopyFrom(request)
    seen = set()
    while True:
        response = list_method(current, **call_options)
        yield response
        token = getattr(response, NEXT_PAGE_TOKEN)
        if not token:
            return
        if token in seen:
            # A service answering a token it already gave would make this loop forever.
            raise RuntimeError(f"{response.DESCRIPTOR.full_name} repeated a page token")
        seen.add(token)
        setattr(current, PAGE_TOKEN, token)


def items_field(response_type: Any) -> str:
    """The name of the one repeated field of a list response other than its token (e.g.
    `customers` in ListCustomersResponse); a TypeError when there is not exactly one."""
    descriptor = response_type.DESCRIPTOR
    repeated = [
        f.name
        for f in descriptor.fields
        if _is_repeated(f) and f.name != NEXT_PAGE_TOKEN
    ]
    if len(repeated) != 1:
        raise TypeError(
            f"{descriptor.full_name} has repeated fields {repeated}: say which with items="
        )
    return repeated[0]


def iterate(
    list_method: Callable[..., Resp],
    request: Message,
    *,
    items: Optional[str] = None,
    **call_options: Any,
) -> Iterator[Any]:
    """Every item of every page of `list_method` from `request` on. `items` names the
    response's repeated field to yield when it has more than one."""
    name = items
    for response in pages(list_method, request, **call_options):
        if name is None:
            name = items_field(type(response))
        yield from getattr(response, name)


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 5.27+ has `is_repeated`; `label` is deprecated there but still works before.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return field.label == FieldDescriptor.LABEL_REPEATED  # type: ignore[attr-defined]
