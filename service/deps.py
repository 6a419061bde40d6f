"""FastAPI dependencies: the runtime, the settings and the admin check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from service.errors import ServiceError
from service.runtime import Runtime
from service.settings import ServiceSettings


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def require_admin(
    settings: Annotated[ServiceSettings, Depends(get_settings)],
    authorization: Annotated[str | None, Header(description="Bearer <R2END_ADMIN_TOKEN>")] = None,
) -> None:
    """403 unless ``Authorization: Bearer <token>`` matches ``R2END_ADMIN_TOKEN`` (403 always while it is unset)."""
    if settings.admin_token is None:
        raise ServiceError(403, "admin routes are disabled: set R2END_ADMIN_TOKEN", ("header", "authorization"), "forbidden")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.admin_token.encode()):
        raise ServiceError(403, "missing or wrong admin token (Authorization: Bearer <token>)", ("header", "authorization"), "forbidden")


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
