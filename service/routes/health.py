"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import RuntimeDep
from service.runtime import bundle_info
from service.schemas import Health, Readiness

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health, summary="The process is up (liveness)")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="200 once a bundle is loaded and warmed up (readiness)",
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    model = runtime.model
    body = Readiness(
        status=runtime.state if not runtime.ready else "ready", bundle=bundle_info(model) if model else None, error=runtime.error
    )
    return JSONResponse(body.model_dump(), status_code=200 if runtime.ready else 503)
