"""HTTP routes, one module per area."""

from typing import Any

from service.schemas import ErrorResponse

Responses = dict[int | str, dict[str, Any]]
"""FastAPI's ``responses=`` type: status code -> OpenAPI response (model, description)."""

ERRORS: Responses = {
    400: {"model": ErrorResponse, "description": "body not UTF-8"},
    413: {"model": ErrorResponse, "description": "body larger than R2END_MAX_BODY_BYTES"},
    422: {"model": ErrorResponse, "description": "invalid request (field and reason in `detail`)"},
    503: {"model": ErrorResponse, "description": "overloaded or not ready; see Retry-After"},
}
