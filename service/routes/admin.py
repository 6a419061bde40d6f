"""POST /admin/reload: swap to a new (or the same, rebuilt) bundle without downtime."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from index.bundle import BundleError
from service.deps import RuntimeDep, require_admin
from service.errors import ServiceError
from service.routes import ERRORS
from service.runtime import bundle_info
from service.schemas import ErrorResponse, ReloadRequest, ReloadResponse

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={
        **ERRORS,
        401: {"model": ErrorResponse, "description": "no credential (Authorization: Bearer <R2END_ADMIN_TOKEN>)"},
        403: {"model": ErrorResponse, "description": "wrong admin token, or admin routes are off (R2END_ADMIN_TOKEN unset)"},
    },
)


@router.post("/reload", response_model=ReloadResponse, summary="Load a bundle beside the served one and swap")
async def reload(runtime: RuntimeDep, body: ReloadRequest | None = None) -> ReloadResponse:
    path = body.bundle_path if body else None
    try:
        result = await runtime.reload(path)
    except BundleError as exc:
        loc = ("body", "bundle_path") if path else ()
        raise ServiceError(422, f"bundle refused, still serving the old one: {exc}", loc, "bundle_error") from exc
    except Exception as exc:
        raise ServiceError(
            500, f"reload failed, still serving the old bundle: {type(exc).__name__}: {exc}", (), "reload_failed"
        ) from exc
    return ReloadResponse(
        bundle=bundle_info(result.model),
        previous_bundle_version=result.previous_bundle_version,
        load_seconds=round(result.load_seconds, 3),
        replayed_item_changes=result.replayed,
    )
