"""POST /recommend and POST /recommend/batch: one call each into the runtime."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import RuntimeDep
from service.routes import ERRORS
from service.schemas import BatchRecommendRequest, BatchRecommendResponse, RecommendRequest, RecommendResponse

router = APIRouter(tags=["recommend"], responses=ERRORS)


# exclude_unset: items asked for without metadata carry only item_id and score (every other field is always set)
@router.post(
    "/recommend", response_model=RecommendResponse, response_model_exclude_unset=True, summary="Top-k items for one user"
)
async def recommend(body: RecommendRequest, runtime: RuntimeDep) -> RecommendResponse:
    return await runtime.recommend(body)


@router.post(
    "/recommend/batch",
    response_model=BatchRecommendResponse,
    response_model_exclude_unset=True,
    summary="Top-k items for several users",
)
async def recommend_batch(body: BatchRecommendRequest, runtime: RuntimeDep) -> BatchRecommendResponse:
    return BatchRecommendResponse(results=await runtime.recommend_batch(body))
