"""FastAPI dependencies: the runtime, the settings and the credential checks (admin routes, catalogue writes).

Both credentials work the same way (:func:`bearer_token`): a token from the settings, sent as
``Authorization: Bearer <token>``. While the setting is unset the guarded routes answer 403 (they
are off); no ``Authorization`` header answers 401 with ``WWW-Authenticate: Bearer``; a header with
anything but the right token answers 403. Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import ServiceError
from service.runtime import Runtime
from service.settings import ServiceSettings

AUTH_LOC = ("header", "authorization")
TokenSetting = Literal["admin_token", "write_token"]


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def same_token(given: str, expected: str) -> bool:
    """Constant-time equality; hashing first hides the expected token's length too."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def bearer_token(setting: TokenSetting, what: str) -> Callable[..., None]:
    """A dependency that lets a request through only with ``Authorization: Bearer <settings.<setting>>``."""
    variable = f"R2END_{setting.upper()}"
    # HTTPBearer parses the header and documents the scheme in OpenAPI; the answers are ours (auto_error off).
    bearer = HTTPBearer(scheme_name=setting, auto_error=False, description=f"`{variable}`; {what} answer 403 while it is unset")

    # Depends(...) as defaults, not in Annotated: these annotations are strings (postponed) and
    # `bearer` is local to this function, where FastAPI could not resolve it.
    def check(
        request: Request,
        settings: ServiceSettings = Depends(get_settings),  # noqa: B008 (see above)
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        expected = getattr(settings, setting)
        if expected is None:
            raise ServiceError(403, f"{what} are disabled: set {variable}", AUTH_LOC, "forbidden")
        if credentials is None and not request.headers.get("authorization", "").strip():
            raise ServiceError(
                401,
                f"{what} need a credential: Authorization: Bearer <{variable}>",
                AUTH_LOC,
                "unauthorized",
                {"WWW-Authenticate": "Bearer"},
            )
        if credentials is None or not same_token(credentials.credentials, expected):
            raise ServiceError(403, f"wrong credential for {what} (Authorization: Bearer <{variable}>)", AUTH_LOC, "forbidden")

    check.__name__ = f"require_{setting}"
    return check


require_admin = bearer_token("admin_token", "admin routes")
require_writer = bearer_token("write_token", "catalogue writes")

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
