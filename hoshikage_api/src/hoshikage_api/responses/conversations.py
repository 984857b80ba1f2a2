"""OpenAI's Conversations API (each route also without ``/v1``): a conversation is an id, its
metadata and its items, kept in the :class:`~.conversation_store.ConversationStore`.

* ``POST /v1/conversations`` creates one (with up to 20 first items);
* ``GET``, ``POST`` (its metadata) and ``DELETE /v1/conversations/{id}``;
* ``GET`` and ``POST /v1/conversations/{id}/items`` list and add items (20 at a time);
* ``GET`` and ``DELETE /v1/conversations/{id}/items/{item_id}``.

Items are the Responses API's input items, checked as a response's ``input`` is, each given
an ``id`` when it has none. A response created with ``conversation`` reads them before its
``input`` and adds its input and output items (see :mod:`.routes`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Request, delete, get, post
from litestar.params import Body, Parameter

from ..kernel.errors import ApiError
from . import schemas as s
from .conversation_store import conversations_of
from .format import listed, page_of
from .sealing import sealer_of
from .store import store_of
from .translate import References, check_unique_ids, conversation_not_found, parsed_items

ConversationPath = Annotated[
    str, Parameter(description="a conversation id (`conv_...`)", max_length=256)
]
ItemPath = Annotated[str, Parameter(description="an item id", max_length=256)]
#: OpenAI's ``include`` on these routes names extra output to add; the items here carry
#: all they have, so it changes nothing.
Include = Annotated[
    list[Annotated[str, Parameter(max_length=128)]] | None,
    Parameter(description="accepted; the items carry all they have"),
]


def references_of(request: Request) -> References:
    """What an ``item_reference`` in this request's items names: an item of the app's stored
    responses, else of its conversations (each store opened only when it is needed)."""
    return References(
        lambda item_id: store_of(request).item(item_id),
        lambda item_id: conversations_of(request).item(item_id),
    )


def _not_found(conversation: str) -> ApiError:
    return conversation_not_found(conversation, param=None)


def _item_not_found(conversation: str, item_id: str) -> ApiError:
    return ApiError(
        404,
        f"Item with id '{item_id}' not found in conversation '{conversation}'.",
        code="item_not_found",
    )


@post(
    ["/v1/conversations", "/conversations"],
    status_code=200,
    summary="Create a conversation",
    description="`items` (at most 20) are input items, as in a response's `input`; each gets an "
    "`id` if it has none. A response created with `conversation` set to the new id reads them first.",
)
async def create_conversation(
    request: Request, data: Annotated[s.CreateConversation, Body()]
) -> s.Conversation:
    items = parsed_items(data.items or (), "items", sealer_of(request), references_of(request))
    check_unique_ids((), items, "items")
    return conversations_of(request).create(items, data.metadata)


@get(["/v1/conversations/{conversation_id:str}", "/conversations/{conversation_id:str}"])
async def retrieve_conversation(
    request: Request, conversation_id: ConversationPath
) -> s.Conversation:
    """Retrieve a conversation."""
    conversation = conversations_of(request).get(conversation_id)
    if conversation is None:
        raise _not_found(conversation_id)
    return conversation


@post(
    ["/v1/conversations/{conversation_id:str}", "/conversations/{conversation_id:str}"],
    status_code=200,
    summary="Update a conversation's metadata",
)
async def update_conversation(
    request: Request,
    conversation_id: ConversationPath,
    data: Annotated[s.UpdateConversation, Body()],
) -> s.Conversation:
    conversation = conversations_of(request).update(conversation_id, data.metadata)
    if conversation is None:
        raise _not_found(conversation_id)
    return conversation


@delete(
    ["/v1/conversations/{conversation_id:str}", "/conversations/{conversation_id:str}"],
    status_code=200,
    summary="Delete a conversation and its items",
)
async def delete_conversation(
    request: Request, conversation_id: ConversationPath
) -> s.DeletedConversation:
    if not conversations_of(request).delete(conversation_id):
        raise _not_found(conversation_id)
    return s.DeletedConversation(id=conversation_id)


@post(
    [
        "/v1/conversations/{conversation_id:str}/items",
        "/conversations/{conversation_id:str}/items",
    ],
    status_code=200,
    summary="Add items to a conversation",
    description="At most 20 input items at once, added after the conversation's last item; the "
    "answer lists them with their ids.",
)
async def create_items(
    request: Request,
    conversation_id: ConversationPath,
    data: Annotated[s.CreateConversationItems, Body()],
    include: Include = None,
) -> s.InputItemList:
    items = parsed_items(data.items, "items", sealer_of(request), references_of(request))
    conversations = conversations_of(request)
    earlier = conversations.items(conversation_id)
    if earlier is None:
        raise _not_found(conversation_id)
    check_unique_ids(earlier, items, "items")
    conversations.add(conversation_id, items)
    data_ = [listed(item) for item in items]
    return s.InputItemList(
        data=data_,
        first_id=data_[0]["id"] if data_ else None,
        last_id=data_[-1]["id"] if data_ else None,
        has_more=False,
    )


@get(
    [
        "/v1/conversations/{conversation_id:str}/items",
        "/conversations/{conversation_id:str}/items",
    ],
    summary="List a conversation's items",
    description="`order` is `desc` (newest first) by default; `after` an item id to list after.",
)
async def list_items(
    request: Request,
    conversation_id: ConversationPath,
    limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    order: Annotated[
        Literal["asc", "desc"], Parameter(description="`desc` (newest first) or `asc`")
    ] = "desc",
    after: Annotated[str | None, Parameter(description="list the items after this item id")] = None,
    include: Include = None,
) -> s.InputItemList:
    stored = conversations_of(request).items(conversation_id)
    if stored is None:
        raise _not_found(conversation_id)
    return page_of([listed(item) for item in stored], limit, order, after, conversation_id)


@get(
    [
        "/v1/conversations/{conversation_id:str}/items/{item_id:str}",
        "/conversations/{conversation_id:str}/items/{item_id:str}",
    ],
    summary="Retrieve an item of a conversation",
)
async def retrieve_item(
    request: Request,
    conversation_id: ConversationPath,
    item_id: ItemPath,
    include: Include = None,
) -> dict:
    stored = conversations_of(request).items(conversation_id)
    if stored is None:
        raise _not_found(conversation_id)
    for item in stored:
        if item.id == item_id:
            return listed(item)
    raise _item_not_found(conversation_id, item_id)


@delete(
    [
        "/v1/conversations/{conversation_id:str}/items/{item_id:str}",
        "/conversations/{conversation_id:str}/items/{item_id:str}",
    ],
    status_code=200,
    summary="Delete an item from a conversation",
    description="The answer is the conversation.",
)
async def delete_item(
    request: Request, conversation_id: ConversationPath, item_id: ItemPath
) -> s.Conversation:
    conversation = conversations_of(request).delete_item(conversation_id, item_id)
    if conversation is None:
        raise _not_found(conversation_id)
    if conversation is False:
        raise _item_not_found(conversation_id, item_id)
    return conversation


HANDLERS = [
    create_conversation,
    retrieve_conversation,
    update_conversation,
    delete_conversation,
    create_items,
    list_items,
    retrieve_item,
    delete_item,
]
