"""POST /recommend and POST /recommend/batch."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import RuntimeDep
from service.errors import ServiceError
from service.query import build_query
from service.recommender import recommend as run_queries
from service.routes import ERRORS
from service.schemas import BatchRecommendRequest, BatchRecommendResponse, RecommendRequest, RecommendResponse

router = APIRouter(tags=["recommend"], responses=ERRORS)


@router.post("/recommend", response_model=RecommendResponse, summary="Top-k items for one user")
async def recommend(body: RecommendRequest, runtime: RuntimeDep) -> RecommendResponse:
    model = runtime.require_model()
    query = build_query(body, model, runtime.settings, ("body",))
    [result] = await run_queries(runtime, model, [query])
    return result


@router.post("/recommend/batch", response_model=BatchRecommendResponse, summary="Top-k items for several users")
async def recommend_batch(body: BatchRecommendRequest, runtime: RuntimeDep) -> BatchRecommendResponse:
    limit = runtime.settings.max_batch_users
    if len(body.requests) > limit:
        raise ServiceError(422, f"{len(body.requests)} requests; at most {limit} (R2END_MAX_BATCH_USERS)", ("body", "requests"), "batch_too_large")
    model = runtime.require_model()
    queries = [build_query(request, model, runtime.settings, ("body", "requests", n)) for n, request in enumerate(body.requests)]
    return BatchRecommendResponse(results=await run_queries(runtime, model, queries))
