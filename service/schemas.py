"""Every request and response body of the HTTP API (pydantic models with OpenAPI examples).

Limits that depend on settings (``max_k``, ``history_limit``, ``max_batch_users``) are checked
by :mod:`service.query` against :class:`service.settings.ServiceSettings`; the static
checks (types, exclusivity of ``history`` / ``history_text``) live here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.json_schema import JsonValue
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from index.catalog import ItemMeta

MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a date can print
ITEM_ID_MAX = 256
EVENT_SHAPE = "{item_id, timestamp?}"
MAX_NEW_ITEM_BIAS = 10.0  # in score-spread units: far beyond where every new item already ranks first


def _encodable(text: str) -> str:
    """JSON escapes can smuggle lone surrogates (``"\\ud800"``) into a str: not text, refused here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "string_unicode", "invalid Unicode: lone surrogate at position {position}", {"position": exc.start}
        ) from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]
"""A string that is valid Unicode (every str field of a request uses it)."""

HISTORY_EXAMPLE: list[JsonValue] = [{"item_id": "242", "timestamp": 881250949}, {"item_id": "302", "timestamp": 891717742}]


class HistoryEvent(BaseModel):
    """One past interaction of the user."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": HISTORY_EXAMPLE[:1]})

    item_id: Text = Field(min_length=1, max_length=ITEM_ID_MAX, description="catalogue item id")
    timestamp: int | None = Field(None, ge=0, le=MAX_TIMESTAMP, description="unix time in seconds (optional)")


class RecommendRequest(BaseModel):
    """Recommend for one user, from an item history or a free-text history."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"history": HISTORY_EXAMPLE, "k": 10, "exclude_seen": True},
                {"history_text": "1997-12-04: L.A. Confidential (1997); Categories: Crime, Film-Noir, Mystery, Thriller", "k": 5},
            ]
        },
    )

    history: list[HistoryEvent] | None = Field(
        None,
        description="past interactions, oldest first (sorted by timestamp when every event has one), as long as the body "
        "limit allows (R2END_MAX_HISTORY); the model reads the most recent ones (see `history_used`). A repeated item "
        "counts once, at its earliest event, as in training",
    )
    history_text: Text | None = Field(
        None, description="free-text history, used as is instead of `history` (give exactly one of the two)"
    )
    k: int | None = Field(None, ge=1, description="how many items to return (1..R2END_MAX_K; default R2END_DEFAULT_K)")
    exclude_seen: bool = Field(True, description="leave the history's items out of the results")
    include_metadata: bool = Field(
        True, description="each item with its metadata (title, categories, ...); false: only item_id and score (a smaller answer)"
    )
    new_item_bias: float | None = Field(
        None,
        ge=-MAX_NEW_ITEM_BIAS,
        le=MAX_NEW_ITEM_BIAS,
        allow_inf_nan=False,
        description="R2END-Hybrid bundles only (422 for others): how far new items (added by PUT /items, or never seen by "
        "SASRec) are lifted, in units of this user's SASRec score spread; default: the bundle's value, chosen on "
        "validation (GET /readyz: bundle.new_item_bias). Higher shows more new items at some cost to seen ones; it "
        "moves new items only",
    )

    @field_validator("history", mode="after")
    @classmethod
    def _history_items(cls, history: list[HistoryEvent] | None) -> list[HistoryEvent] | None:
        if history is None:
            return None
        if not history:
            raise PydanticCustomError(
                "empty_history", "history is empty: send at least one event {shape} (or use history_text)", {"shape": EVENT_SHAPE}
            )
        return history

    @field_validator("history_text", mode="after")
    @classmethod
    def _exactly_one(cls, text: str | None, info: ValidationInfo) -> str | None:
        if text is not None and info.data.get("history") is not None:
            raise PydanticCustomError("exclusive_fields", "give either history or history_text, not both")
        if text is not None and not text.strip():
            raise PydanticCustomError("empty_history", "history_text is empty")
        return text

    def model_post_init(self, context: Any) -> None:
        # Neither given: reported at `history`, the usual field (kept out of validators so an
        # invalid `history` is not also reported as missing).
        if self.history is None and self.history_text is None:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "missing_history", "give history (a list of {shape}) or history_text", {"shape": EVENT_SHAPE}
                        ),
                        loc=("history",),
                        input=None,
                    )
                ],
            )


class BatchRecommendRequest(BaseModel):
    """Several users in one call (1..R2END_MAX_BATCH_USERS); encoded together."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"requests": [{"history": HISTORY_EXAMPLE, "k": 3}, {"history": HISTORY_EXAMPLE[1:], "k": 3}]}]
        },
    )

    requests: list[RecommendRequest] = Field(min_length=1, description="one entry per user")


class ItemOut(BaseModel):
    """A catalogue item with its metadata (and its score in recommendations).

    In a recommendation asked for with ``include_metadata: false`` only ``item_id`` and ``score`` are sent.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"item_id": "302", "score": 0.83, "title": "L.A. Confidential", "year": 1997, "categories": ["Crime", "Thriller"]}
            ]
        }
    )

    item_id: str
    score: float | None = Field(
        None,
        description="higher = better; the cosine of user and item vectors, or for R2END-Hybrid bundles (variant *-hybrid) their "
        "inner product, which is not bounded by 1 and compares items within one answer only",
    )
    title: str | None = None
    categories: list[str] = []
    brand: str | None = None
    year: int | None = None
    price: float | None = None
    description: str | None = None
    extra: dict[str, str] = {}

    @classmethod
    def from_meta(cls, meta: ItemMeta, score: float | None = None, description: str | None = None) -> ItemOut:
        return cls(
            item_id=meta.item_id,
            score=score,
            title=meta.title,
            categories=list(meta.categories),
            brand=meta.brand,
            year=meta.year,
            price=meta.price,
            description=description if description is not None else meta.description,
            extra={str(k): str(v) for k, v in meta.extra},
        )


class RecommendResponse(BaseModel):
    """Top-k items, best first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [{"item_id": "377", "score": 0.71, "title": "Heavyweights", "year": 1994, "categories": ["Comedy"]}],
                    "unknown_item_ids": [],
                    "history_used": 2,
                    "bundle_version": "ml-100k-r2end-0123456789-20260101T000000Z",
                    "variant": "r2end",
                }
            ]
        }
    )

    items: list[ItemOut]
    unknown_item_ids: list[str] = Field(description="history ids not in the catalogue (ignored), each once")
    history_used: int | None = Field(
        None,
        description="how many history events the model read: the most recent distinct known items (at most the bundle "
        "verbaliser's max_items, within its window; up to the history tower's max_items for R2END+CF); null for history_text",
    )
    bundle_version: str
    variant: str


class BatchRecommendResponse(BaseModel):
    """One result per request, in request order."""

    results: list[RecommendResponse]


class ItemIn(BaseModel):
    """A live item: ItemMeta fields (``item_id`` comes from the path) and an optional description D_i."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Heat",
                    "year": 1995,
                    "categories": ["Action", "Crime", "Thriller"],
                    "description": "A group of professional bank robbers feel the heat from the police.",
                }
            ]
        },
    )

    item_id: Text | None = Field(None, max_length=ITEM_ID_MAX, description="optional; must equal the id in the path")
    title: Text = Field(min_length=1, max_length=2_000)
    categories: list[Text] = Field(default_factory=list, max_length=100)
    brand: Text | None = Field(None, max_length=500)
    year: int | None = Field(None, ge=0, le=9999)
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    description: Text | None = Field(None, max_length=20_000, description="item description D_i, embedded with the metadata")
    extra: dict[Text, Text] = Field(default_factory=dict, max_length=100)

    def to_meta(self, item_id: str) -> ItemMeta:
        return ItemMeta(
            item_id=item_id,
            title=self.title,
            categories=tuple(self.categories),
            brand=self.brand,
            year=self.year,
            description=self.description,
            price=self.price,
            extra=tuple(sorted(self.extra.items())),
        )


class ItemChange(BaseModel):
    """The answer to PUT / DELETE /items/{id}."""

    item_id: str
    created: bool = False
    deleted: bool = False
    item: ItemOut | None = None
    bundle_version: str


class ReloadRequest(BaseModel):
    """Reload the bundle in place, or switch to another bundle directory."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"bundle_path": "/bundles/ml-1m-r2end"}]})

    bundle_path: Text | None = Field(None, min_length=1, description="new bundle directory (default: the one being served)")


class BundleInfo(BaseModel):
    """What is being served."""

    bundle_version: str
    variant: str
    bundle_path: str
    dataset: str
    encoder: str
    n_items: int
    int8: bool
    new_item_bias: float | None = Field(
        None, description="R2END-Hybrid bundles: the new-item bias a request gets unless it sets new_item_bias; else null"
    )


class ReloadResponse(BaseModel):
    """A successful reload."""

    bundle: BundleInfo
    previous_bundle_version: str | None
    load_seconds: float
    replayed_item_changes: int


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready", "loading", "failed"])
    bundle: BundleInfo | None = None
    error: str | None = None


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error answer has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"detail": [{"loc": ["body", "k"], "msg": "k is 500; at most 100", "type": "k_too_large"}]}]
        }
    )

    detail: list[ErrorDetail]
