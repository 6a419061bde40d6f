"""Live items: GET / PUT / DELETE /items/{item_id} (changes are durable before the answer).

Reads are open; writes need ``Authorization: Bearer <R2END_WRITE_TOKEN>`` (:data:`service.deps.require_writer`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from service.deps import RuntimeDep, require_writer
from service.errors import ServiceError
from service.routes import ERRORS, Responses
from service.schemas import ITEM_ID_MAX, ErrorResponse, ItemChange, ItemIn, ItemOut

router = APIRouter(prefix="/items", tags=["items"], responses=ERRORS)
ItemId = Annotated[str, Path(min_length=1, max_length=ITEM_ID_MAX, description="catalogue item id")]
NOT_FOUND: Responses = {404: {"model": ErrorResponse, "description": "no such item"}}
WRITE: Responses = {
    401: {"model": ErrorResponse, "description": "no credential (Authorization: Bearer <R2END_WRITE_TOKEN>)"},
    403: {"model": ErrorResponse, "description": "wrong write token, or writes are off (R2END_WRITE_TOKEN unset)"},
}


def _not_found(item_id: str) -> ServiceError:
    return ServiceError(404, f"no item {item_id!r} in the catalogue", ("path", "item_id"), "unknown_item")


@router.get("/{item_id}", response_model=ItemOut, responses=NOT_FOUND, summary="An item's metadata")
async def get_item(item_id: ItemId, runtime: RuntimeDep) -> ItemOut:
    item = runtime.require_model().get(item_id)
    if item is None:
        raise _not_found(item_id)
    return ItemOut.from_meta(item)


@router.put(
    "/{item_id}",
    response_model=ItemChange,
    summary="Add or replace an item (searchable at once)",
    dependencies=[Depends(require_writer)],
    responses={201: {"model": ItemChange, "description": "created"}, 409: {"model": ErrorResponse}, **WRITE},
)
async def put_item(item_id: ItemId, body: ItemIn, runtime: RuntimeDep, response: Response) -> ItemChange:
    if body.item_id is not None and body.item_id != item_id:
        raise ServiceError(
            422, f"body item_id {body.item_id!r} differs from the path's {item_id!r}", ("body", "item_id"), "item_id_mismatch"
        )
    model, created = await runtime.put_item(body.to_meta(item_id))
    response.status_code = 201 if created else 200
    item = model.get(item_id)
    return ItemChange(
        item_id=item_id,
        created=created,
        item=ItemOut.from_meta(item) if item else None,
        bundle_version=model.manifest.bundle_version,
    )


@router.delete(
    "/{item_id}",
    response_model=ItemChange,
    responses={**NOT_FOUND, **WRITE},
    summary="Remove an item",
    dependencies=[Depends(require_writer)],
)
async def delete_item(item_id: ItemId, runtime: RuntimeDep) -> ItemChange:
    model, existed = await runtime.delete_item(item_id)
    if not existed:
        raise _not_found(item_id)
    return ItemChange(item_id=item_id, deleted=True, bundle_version=model.manifest.bundle_version)
